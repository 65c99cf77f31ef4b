// The dashboard page: scrapes /metrics every second, derives the figures (derive.js) over the
// last few seconds, and shows them as tiles and charts. Its state is window.ssmDashboard.
import {TimeChart} from './charts.js';
import {deriveFigures, windowStart} from './derive.js';
import {parseExposition} from './prometheus.js';

const POLL_INTERVAL_MS = 1000;
const WINDOW_S = 5;  // rates and quantiles cover the last 5 s
const HISTORY_POINTS = 600;  // 10 minutes at one scrape a second

const state = {
  scrapes: 0,  // successful
  failures: 0,
  lastError: null,
  latest: null,  // deriveFigures() of the last scrape
  charts: {},  // TimeChart by name
};
window.ssmDashboard = state;

const recent = [];  // the scrapes of the last WINDOW_S seconds, oldest first

// [name, title, unit, series labels, the element that holds the chart]
const charts = [
  ['streams', 'Streams and state slots used', 'streams', ['active', 'slots used'], 'charts'],
  ['throughput', 'Throughput', 'per second', ['chunks/s', 'frames/s', 'file frames/s'],
    'charts'],
  ['latency', 'Chunk latency (arrival → response)', 'ms', ['p50', 'p99', 'engine step p99'],
    'charts'],
  ['batch', 'Batch size (mean per engine step)', 'per step', ['streams', 'frames'], 'charts'],
  ['lag', 'Lag behind real time', 'ms', ['p50', 'p99'], 'charts'],
  ['errors', 'Errors by code', 'calls/s', ['all codes'], 'charts'],
  ['parked', 'Parked streams (broken calls waiting for a resume)', 'streams', ['parked'],
    'resume-charts'],
  ['resumes', 'Resumes by source, refusals by reason', 'per second',
    ['from memory', 'from store'], 'resume-charts'],
  ['store', 'State store', 'per second',
    ['checkpoints written', 'checkpoints failed', 'store errors'], 'resume-charts'],
];

const format = (v, digits = 0) => (Number.isFinite(v) ? v.toFixed(digits) : '–');

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

function showBuild(f) {
  const b = f.build;
  const models = f.models.map(
      (m) => `${m.model} (${format(m.stateBytes / 1024, 1)} KiB state per stream)`);
  setText('build', b === null ? '' :
      `ssm-server ${b.version} · backend ${b.backend} · device ${b.device} · ` +
      `model${models.length === 1 ? '' : 's'} ${models.join(', ')}`);
}

function showTiles(f) {
  setText('streams-active', format(f.streamsActive));
  setText('chunks-per-s', format(f.chunksPerS, 1));
  setText('frames-per-s', format(f.framesPerS, 0));
  setText('latency-p50', format(f.latencyP50Ms, 2));
  setText('latency-p99', format(f.latencyP99Ms, 2));
  setText('lag-p99', format(f.lagP99Ms, 1));
  setText('batch-streams', format(f.batchStreams, 1));
  setText('slots', `${format(f.slotsUsed)} / ${format(f.slotsTotal)}`);
  setText('queue-depth', format(f.queueDepth));
  setText('realtime-factor', Number.isFinite(f.realtimeFactor) && f.realtimeFactor > 0 ?
      `${format(f.realtimeFactor, 1)}×` : '–');
  const total = Object.values(f.errorTotals).reduce((a, b) => a + b, 0);
  setText('errors-total', format(total));
  const rows = Object.entries(f.errorTotals).sort((a, b) => b[1] - a[1])
      .map(([code, n]) =>
        `<tr><td>${code}</td><td>${n}</td><td>${format(f.errorsPerS[code], 2)}</td></tr>`);
  document.getElementById('error-rows').innerHTML =
      rows.length > 0 ? rows.join('') : '<tr><td colspan="3">none</td></tr>';
  setText('parked', format(f.parked));
  setText('parked-bytes', format(f.parkedBytes / 1024, 1));
  setText('resumes-total', format(f.resumesTotal));
  setText('resume-failures-total',
      format(Object.values(f.resumeFailureTotals).reduce((a, b) => a + b, 0)));
}

/** Series labels of resume refusals by reason: 'refused: <reason>'. */
const refusals = (byReason) =>
  Object.fromEntries(Object.entries(byReason).map(([r, v]) => [`refused: ${r}`, v]));

function plot(f, wallSeconds) {
  const c = state.charts;
  c.streams.push(wallSeconds, {'active': f.streamsActive, 'slots used': f.slotsUsed});
  c.throughput.push(wallSeconds, {'chunks/s': f.chunksPerS, 'frames/s': f.framesPerS,
    'file frames/s': f.offlineFramesPerS});
  c.latency.push(wallSeconds, {'p50': f.latencyP50Ms, 'p99': f.latencyP99Ms,
    'engine step p99': f.stepP99Ms});
  c.batch.push(wallSeconds, {'streams': f.batchStreams, 'frames': f.batchFrames});
  c.lag.push(wallSeconds, {'p50': f.lagP50Ms, 'p99': f.lagP99Ms});
  c.errors.push(wallSeconds, {'all codes': f.errorsPerSAll, ...f.errorsPerS});
  c.parked.push(wallSeconds, {'parked': f.parked});
  c.resumes.push(wallSeconds, {'from memory': f.resumesPerS.memory,
    'from store': f.resumesPerS.store, ...refusals(f.resumeFailuresPerS)});
  c.store.push(wallSeconds, {'checkpoints written': f.checkpointsPerS.written,
    'checkpoints failed': f.checkpointsPerS.failed, 'store errors': f.storeErrorsPerS});
}

const API_KEY_ITEM = 'ssm-api-key';

async function scrape() {
  try {
    const key = sessionStorage.getItem(API_KEY_ITEM);
    const headers = key ? {Authorization: `Bearer ${key}`} : {};
    const response = await fetch('/metrics', {cache: 'no-store', headers});
    if (response.status === 401) {
      // ssm-server --metrics-auth: the metrics need an API key, kept for this tab only.
      const given = window.prompt('This server needs an API key to show its metrics:');
      if (given) sessionStorage.setItem(API_KEY_ITEM, given.trim());
      throw new Error('HTTP 401: the metrics need an API key (--metrics-auth)');
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const samples = parseExposition(await response.text());
    recent.push({t: performance.now() / 1000, samples});
    while (recent.length > 2 && recent[recent.length - 1].t - recent[1].t >= WINDOW_S) {
      recent.shift();
    }
    const f = deriveFigures(windowStart(recent, WINDOW_S), recent[recent.length - 1]);
    state.latest = f;
    state.scrapes += 1;
    showBuild(f);
    showTiles(f);
    plot(f, Date.now() / 1000);
    setText('status', `live · scraped every ${POLL_INTERVAL_MS / 1000} s · rates and ` +
        `percentiles over the last ${WINDOW_S} s`);
    document.body.classList.remove('offline');
  } catch (e) {
    state.failures += 1;
    state.lastError = String(e);
    setText('status', `cannot read /metrics (${e.message}); retrying`);
    document.body.classList.add('offline');
  }
  setTimeout(scrape, POLL_INTERVAL_MS);
}

for (const [name, title, unit, labels, parent] of charts) {
  const box = document.createElement('section');
  box.className = 'chart';
  box.id = `chart-${name}`;
  document.getElementById(parent).appendChild(box);
  state.charts[name] = new TimeChart(box, {title, unit, labels, maxPoints: HISTORY_POINTS});
}
window.addEventListener('resize', () => Object.values(state.charts).forEach((c) => c.resize()));
scrape();
