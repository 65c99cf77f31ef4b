// A time-series chart on uPlot (the global `uPlot`, /static/uPlot.iife.min.js) that keeps its
// last `maxPoints` points and can gain series while it runs (errors by code).

const COLORS = ['#2f7ed8', '#e4572e', '#17a589', '#a05195', '#f5a623', '#6c757d', '#c0392b'];
const HEIGHT = 190;

export class TimeChart {
  /** A chart titled `title` in `container`, y values in `unit`, with series `labels`. */
  constructor(container, {title, unit, labels = [], maxPoints}) {
    this.container = container;
    this.maxPoints = maxPoints;
    this.times = [];  // x: wall-clock seconds
    this.columns = new Map();  // label -> values (null: no value at that time)
    this.plot = new uPlot({
      title,
      width: this.width(),
      height: HEIGHT,
      series: [{}],
      axes: [{}, {label: unit, size: 60}],
      scales: {x: {time: true}},
      legend: {live: true},
    }, [[]], container);
    for (const label of labels) this.ensureSeries(label);
  }

  width() {
    return Math.max(280, this.container.clientWidth - 8);
  }

  /** Adds series `label` (its past values null) unless it is there. */
  ensureSeries(label) {
    if (this.columns.has(label)) return;
    this.columns.set(label, this.times.map(() => null));
    const color = COLORS[(this.columns.size - 1) % COLORS.length];
    this.plot.addSeries({label, stroke: color, width: 2, spanGaps: false}, this.columns.size);
  }

  /** Appends a point at `time`: `values` by series label; a missing or NaN value is a gap. */
  push(time, values) {
    for (const label of Object.keys(values)) this.ensureSeries(label);
    this.times.push(time);
    for (const [label, column] of this.columns) {
      const v = values[label];
      column.push(Number.isFinite(v) ? v : null);
    }
    if (this.times.length > this.maxPoints) {
      this.times.shift();
      for (const column of this.columns.values()) column.shift();
    }
    this.plot.setData([this.times, ...this.columns.values()]);
  }

  /** Points in series `label` that hold a value. */
  valuesIn(label) {
    return (this.columns.get(label) ?? []).filter((v) => v !== null).length;
  }

  resize() {
    this.plot.setSize({width: this.width(), height: HEIGHT});
  }
}
