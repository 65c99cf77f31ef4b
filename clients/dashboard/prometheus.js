// The Prometheus text exposition format (version 0.0.4), and the arithmetic the dashboard does
// on it: sums over series, counter rates, and histogram quantiles from bucket counts.
// A sample is {name, labels: {label: value}, value}.

const NAME = /[a-zA-Z_:][a-zA-Z0-9_:]*/y;
const LABEL_NAME = /[a-zA-Z_][a-zA-Z0-9_]*/y;

/** Parses an exposition into samples; comments and blank lines are skipped. Throws an Error
 * naming the line on malformed input. */
export function parseExposition(text) {
  const samples = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; ++i) {
    const line = lines[i].trim();
    if (line === '' || line.startsWith('#')) continue;
    try {
      samples.push(parseSample(line));
    } catch (e) {
      throw new Error(`line ${i + 1}: ${e.message}: ${line}`);
    }
  }
  return samples;
}

/** A sample value: a decimal or one of +Inf, -Inf, NaN. */
export function parseValue(text) {
  if (text === '+Inf' || text === 'Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  const value = Number(text);
  if (text === '' || Number.isNaN(value)) throw new Error(`bad value "${text}"`);
  return value;
}

function parseSample(line) {
  NAME.lastIndex = 0;
  const name = NAME.exec(line);
  if (name === null) throw new Error('expected a metric name');
  let pos = name[0].length;
  const labels = {};
  if (line[pos] === '{') {
    ++pos;
    for (;;) {
      while (line[pos] === ' ') ++pos;
      if (line[pos] === '}') {
        ++pos;
        break;
      }
      LABEL_NAME.lastIndex = pos;
      const label = LABEL_NAME.exec(line);
      if (label === null) throw new Error(`expected a label name at column ${pos + 1}`);
      pos += label[0].length;
      if (line[pos] !== '=' || line[pos + 1] !== '"') {
        throw new Error(`expected ="..." after label ${label[0]}`);
      }
      pos += 2;
      let value = '';
      for (;;) {
        if (pos >= line.length) throw new Error(`unterminated value of label ${label[0]}`);
        const c = line[pos++];
        if (c === '"') break;
        if (c === '\\') {
          const escaped = line[pos++];
          value += escaped === 'n' ? '\n' : escaped;  // \\ \" \n
        } else {
          value += c;
        }
      }
      labels[label[0]] = value;
      while (line[pos] === ' ') ++pos;
      if (line[pos] === ',') ++pos;
      else if (line[pos] !== '}') throw new Error(`expected , or } at column ${pos + 1}`);
    }
  }
  const fields = line.slice(pos).trim().split(/\s+/);  // value [timestamp]
  if (fields.length < 1 || fields.length > 2 || fields[0] === '') {
    throw new Error('expected a value (and an optional timestamp)');
  }
  return {name: name[0], labels, value: parseValue(fields[0])};
}

/** True when `labels` has every label of `filter` with the same value. */
export function matches(labels, filter) {
  return Object.entries(filter).every(([k, v]) => labels[k] === v);
}

/** Sum of the samples named `name` whose labels match `filter`; 0 when none does. */
export function sumOf(samples, name, filter = {}) {
  let sum = 0;
  for (const s of samples) {
    if (s.name === name && matches(s.labels, filter)) sum += s.value;
  }
  return sum;
}

/** The cumulative buckets of histogram `name` (the `name_bucket` samples), summed over the
 * series that match `filter` bucket by bucket: [{le, count}] sorted by le, +Inf last. */
export function histogramBuckets(samples, name, filter = {}) {
  const counts = new Map();
  for (const s of samples) {
    if (s.name !== name + '_bucket' || !matches(s.labels, filter)) continue;
    const le = parseValue(s.labels.le ?? '');
    counts.set(le, (counts.get(le) ?? 0) + s.value);
  }
  return [...counts.entries()].map(([le, count]) => ({le, count})).sort((a, b) => a.le - b.le);
}

/** The observations between two scrapes: `newer` minus `older`, bucket by bucket. When a count
 * went down (the server restarted in between) `newer` is returned whole. */
export function bucketDelta(newer, older) {
  const before = new Map(older.map((b) => [b.le, b.count]));
  const delta = newer.map((b) => ({le: b.le, count: b.count - (before.get(b.le) ?? 0)}));
  return delta.some((b) => b.count < 0) ? newer : delta;
}

/** The q-quantile (0 <= q <= 1) of cumulative buckets, as Prometheus' histogram_quantile()
 * computes it: linear interpolation inside the bucket that holds rank q * total, from 0 for the
 * first bucket; in the +Inf bucket, the largest finite bound. NaN without observations. */
export function histogramQuantile(q, buckets) {
  if (buckets.length === 0) return NaN;
  const total = buckets[buckets.length - 1].count;
  if (!(total > 0)) return NaN;
  const rank = q * total;
  let i = buckets.findIndex((b) => b.count >= rank);
  if (i < 0) i = buckets.length - 1;
  if (buckets[i].le === Infinity) return i > 0 ? buckets[i - 1].le : NaN;
  const lower = i > 0 ? buckets[i - 1].le : 0;
  const countBelow = i > 0 ? buckets[i - 1].count : 0;
  const inBucket = buckets[i].count - countBelow;
  if (inBucket <= 0) return buckets[i].le;
  return lower + (buckets[i].le - lower) * ((rank - countBelow) / inBucket);
}

/** Per-second increase of a counter that went from `before` to `after` in `seconds`; a
 * decrease (a restart) counts from 0. NaN when no time passed. */
export function counterRate(before, after, seconds) {
  if (!(seconds > 0)) return NaN;
  return (after >= before ? after - before : after) / seconds;
}
