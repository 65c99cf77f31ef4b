// What the dashboard shows, from two scrapes of ssm-server's /metrics (the ssm_* families of
// server/service/metrics.h), summed over all models. A scrape is {t: seconds (monotonic),
// samples}; rates and quantiles cover the interval between the two scrapes.
import {
  bucketDelta, counterRate, histogramBuckets, histogramQuantile, sumOf,
} from './prometheus.js';

/** The scrape to measure rates from: the oldest of `scrapes` (oldest first) that is at most
 * `windowSeconds` older than the last one, and never the last one itself; null with < 2. */
export function windowStart(scrapes, windowSeconds) {
  if (scrapes.length < 2) return null;
  const last = scrapes[scrapes.length - 1];
  const start = scrapes.findIndex((s) => last.t - s.t <= windowSeconds);
  return scrapes[Math.min(start, scrapes.length - 2)];
}

/** The dashboard's figures at scrape `newer`, with rates and quantiles since scrape `older`
 * (null: the first scrape, when they are NaN). Durations in milliseconds. */
export function deriveFigures(older, newer) {
  const now = newer.samples;
  const before = older === null ? null : older.samples;
  const seconds = older === null ? 0 : newer.t - older.t;
  const rate = (name, filter = {}) => (before === null ? NaN :
    counterRate(sumOf(before, name, filter), sumOf(now, name, filter), seconds));
  const observed = (name) =>
    before === null ? [] : bucketDelta(histogramBuckets(now, name), histogramBuckets(before, name));
  const quantileMs = (buckets, q) => 1000 * histogramQuantile(q, buckets);
  // Mean observation since `older`: increase of _sum over increase of _count.
  const mean = (name) => {
    if (before === null) return NaN;
    const count = sumOf(now, name + '_count') - sumOf(before, name + '_count');
    return count > 0 ? (sumOf(now, name + '_sum') - sumOf(before, name + '_sum')) / count : NaN;
  };

  const latency = observed('ssm_chunk_latency_seconds');
  const lag = observed('ssm_stream_lag_seconds');
  const step = observed('ssm_engine_step_seconds');
  const errorsPerS = {};
  const errorTotals = {};
  for (const s of now) {
    if (s.name !== 'ssm_errors_total' || !(s.value > 0)) continue;
    errorTotals[s.labels.code] = s.value;
    errorsPerS[s.labels.code] = rate('ssm_errors_total', {code: s.labels.code});
  }
  // Resumes refused, by the reasons seen so far (docs/design.md §7).
  const resumeFailuresPerS = {};
  const resumeFailureTotals = {};
  for (const s of now) {
    if (s.name !== 'ssm_resume_failures_total' || !(s.value > 0)) continue;
    resumeFailureTotals[s.labels.reason] = s.value;
    resumeFailuresPerS[s.labels.reason] =
        rate('ssm_resume_failures_total', {reason: s.labels.reason});
  }
  const build = now.find((s) => s.name === 'ssm_build_info');
  const rtf = now.filter((s) => s.name === 'ssm_realtime_factor').map((s) => s.value);
  return {
    t: newer.t,
    streamsActive: sumOf(now, 'ssm_streams_active'),
    slotsUsed: sumOf(now, 'ssm_state_slots', {state: 'used'}),
    slotsTotal: sumOf(now, 'ssm_state_slots'),
    queueDepth: sumOf(now, 'ssm_queue_depth'),
    realtimeFactor: rtf.length > 0 ? Math.min(...rtf) : NaN,  // the slowest model's
    chunksPerS: rate('ssm_chunks_total'),
    framesPerS: rate('ssm_frames_total'),
    offlineFramesPerS: rate('ssm_offline_frames_total'),
    stepsPerS: rate('ssm_engine_step_seconds_count'),
    latencyP50Ms: quantileMs(latency, 0.5),
    latencyP99Ms: quantileMs(latency, 0.99),
    stepP99Ms: quantileMs(step, 0.99),
    lagP50Ms: quantileMs(lag, 0.5),
    lagP99Ms: quantileMs(lag, 0.99),
    batchStreams: mean('ssm_batch_streams'),
    batchFrames: mean('ssm_batch_frames'),
    errorsPerSAll: rate('ssm_errors_total'),
    errorsPerS,  // by code, for the codes seen so far
    errorTotals,
    // Streams that survive faults: parked (broken calls waiting for a resume), resumed, and
    // their snapshots in the state store (checkpoints, drain hand-offs).
    parked: sumOf(now, 'ssm_streams_parked'),
    parkedBytes: sumOf(now, 'ssm_parked_state_bytes'),
    resumesTotal: sumOf(now, 'ssm_stream_resumes_total'),
    resumesPerS: {
      memory: rate('ssm_stream_resumes_total', {source: 'memory'}),
      store: rate('ssm_stream_resumes_total', {source: 'store'}),
    },
    resumeFailuresPerS,  // by reason, for the reasons seen so far
    resumeFailureTotals,
    checkpointsPerS: {
      written: rate('ssm_checkpoints_total', {outcome: 'written'}),
      failed: rate('ssm_checkpoints_total', {outcome: 'failed'}),
    },
    storeErrorsPerS: rate('ssm_store_operations_total', {result: 'error'}),
    build: build === undefined ? null : build.labels,
    models: now.filter((s) => s.name === 'ssm_state_bytes_per_stream')
        .map((s) => ({model: s.labels.model, stateBytes: s.value})),
  };
}
