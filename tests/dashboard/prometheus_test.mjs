// node --test: the dashboard's Prometheus text parser, histogram quantiles and rates
// (clients/dashboard/prometheus.js) and the figures it derives from two scrapes (derive.js).
import assert from 'node:assert/strict';
import {test} from 'node:test';

import {deriveFigures, windowStart} from '../../clients/dashboard/derive.js';
import {
  bucketDelta, counterRate, histogramBuckets, histogramQuantile, parseExposition, sumOf,
} from '../../clients/dashboard/prometheus.js';

test('parses names, labels with escapes, special values and timestamps', () => {
  const samples = parseExposition([
    '# HELP ssm_x Help with "quotes"',
    '# TYPE ssm_x counter',
    'ssm_x{model="a",code="NOT_FOUND"} 3',
    '  ',
    'ssm_x{model="b\\"q\\\\\\n",} 4.5e1 1700000000000',
    'plain 7',
    'empty{} -2',
    'spaced{ a="1"} 1',
    'inf{le="+Inf"} +Inf',
    'neg -Inf',
    'nan NaN',
  ].join('\n'));
  assert.equal(samples.length, 8);
  assert.deepEqual(samples[0], {name: 'ssm_x', labels: {model: 'a', code: 'NOT_FOUND'}, value: 3});
  assert.deepEqual(samples[1].labels, {model: 'b"q\\\n'});
  assert.equal(samples[1].value, 45);
  assert.deepEqual(samples[2], {name: 'plain', labels: {}, value: 7});
  assert.deepEqual(samples[3], {name: 'empty', labels: {}, value: -2});
  assert.deepEqual(samples[4], {name: 'spaced', labels: {a: '1'}, value: 1});
  assert.equal(samples[5].value, Infinity);
  assert.equal(samples[6].value, -Infinity);
  assert.ok(Number.isNaN(samples[7].value));
});

test('malformed lines are errors that name the line', () => {
  assert.throws(() => parseExposition('ok 1\n{a="1"} 2'), /line 2: expected a metric name/);
  assert.throws(() => parseExposition('x{a="1} 2'), /line 1: unterminated value of label a/);
  assert.throws(() => parseExposition('x{a=1} 2'), /expected =".*" after label a/);
  assert.throws(() => parseExposition('x{a="1" b="2"} 2'), /expected , or }/);
  assert.throws(() => parseExposition('x twelve'), /bad value "twelve"/);
  assert.throws(() => parseExposition('x'), /expected a value/);
  assert.throws(() => parseExposition('x 1 2 3'), /expected a value/);
});

test('sums match label filters', () => {
  const s = parseExposition('m{model="a",state="used"} 2\nm{model="b",state="used"} 3\n' +
                            'm{model="b",state="free"} 5\nother 100');
  assert.equal(sumOf(s, 'm'), 10);
  assert.equal(sumOf(s, 'm', {state: 'used'}), 5);
  assert.equal(sumOf(s, 'm', {model: 'b', state: 'free'}), 5);
  assert.equal(sumOf(s, 'missing'), 0);
});

// Cumulative buckets for bounds 1, 2, 4, +Inf.
const buckets = (c1, c2, c4, inf) =>
  [{le: 1, count: c1}, {le: 2, count: c2}, {le: 4, count: c4}, {le: Infinity, count: inf}];

test('histogram buckets are summed over series and sorted, +Inf last', () => {
  const s = parseExposition([
    'h_bucket{model="a",le="2"} 3', 'h_bucket{model="a",le="+Inf"} 4',
    'h_bucket{model="a",le="1"} 1', 'h_bucket{model="b",le="1"} 10',
    'h_bucket{model="b",le="2"} 10', 'h_bucket{model="b",le="+Inf"} 10', 'h_count 99',
  ].join('\n'));
  assert.deepEqual(histogramBuckets(s, 'h'),
                   [{le: 1, count: 11}, {le: 2, count: 13}, {le: Infinity, count: 14}]);
  assert.deepEqual(histogramBuckets(s, 'h', {model: 'a'}),
                   [{le: 1, count: 1}, {le: 2, count: 3}, {le: Infinity, count: 4}]);
});

test('quantiles interpolate inside the bucket as histogram_quantile does', () => {
  // 10 observations: 4 in (0,1], 4 in (1,2], 2 in (2,4].
  const b = buckets(4, 8, 10, 10);
  assert.equal(histogramQuantile(0.5, b), 1.25);  // rank 5: 1 + (2-1)·(5-4)/4
  assert.equal(histogramQuantile(0.2, b), 0.5);   // rank 2 in the first bucket, from 0
  assert.equal(histogramQuantile(0.9, b), 3);     // rank 9: 2 + 2·(9-8)/2
  assert.equal(histogramQuantile(1, b), 4);
  assert.equal(histogramQuantile(0.99, buckets(0, 0, 1, 3)), 4);  // in +Inf: the largest bound
  assert.ok(Number.isNaN(histogramQuantile(0.5, buckets(0, 0, 0, 0))));
  assert.ok(Number.isNaN(histogramQuantile(0.5, [])));
});

test('bucket deltas give the observations between scrapes; a reset restarts from zero', () => {
  assert.deepEqual(bucketDelta(buckets(5, 9, 12, 12), buckets(4, 8, 10, 10)), buckets(1, 1, 2, 2));
  assert.equal(histogramQuantile(0.5, bucketDelta(buckets(4, 8, 20, 20), buckets(4, 8, 10, 10))),
               3);  // the 10 new observations all fell in (2,4]: rank 5 of 10
  assert.deepEqual(bucketDelta(buckets(1, 1, 1, 1), buckets(4, 8, 10, 10)), buckets(1, 1, 1, 1));
});

test('counter rates are per second and survive a restart', () => {
  assert.equal(counterRate(100, 150, 2), 25);
  assert.equal(counterRate(100, 30, 2), 15);  // restarted: counted from 0
  assert.ok(Number.isNaN(counterRate(1, 2, 0)));
});

test('the rate window starts at the oldest scrape within it, never the newest', () => {
  const at = (t) => ({t, samples: []});
  assert.equal(windowStart([at(0)], 5), null);
  assert.equal(windowStart([at(0), at(1)], 5).t, 0);
  assert.equal(windowStart([at(0), at(1), at(2), at(6), at(7)], 5).t, 2);
  assert.equal(windowStart([at(0), at(100)], 5).t, 0);  // a long gap: the previous scrape
});

// A scrape of two models at time t (seconds); `n` scales the counters.
function scrape(t, n, errors = 0) {
  const text = `
ssm_build_info{backend="cpu",device="cpu",version="0.1.0"} 1
ssm_streams_active{model="a"} 5
ssm_streams_active{model="b"} 3
ssm_state_slots{model="a",state="used"} 5
ssm_state_slots{model="a",state="free"} 11
ssm_state_slots{model="b",state="used"} 3
ssm_state_slots{model="b",state="free"} 13
ssm_state_bytes_per_stream{model="a"} 2048
ssm_state_bytes_per_stream{model="b"} 4096
ssm_chunks_total{model="a"} ${10 * n}
ssm_chunks_total{model="b"} ${10 * n}
ssm_frames_total{model="a"} ${100 * n}
ssm_frames_total{model="b"} ${100 * n}
ssm_chunk_latency_seconds_bucket{model="a",le="0.001"} ${5 * n}
ssm_chunk_latency_seconds_bucket{model="a",le="0.002"} ${10 * n}
ssm_chunk_latency_seconds_bucket{model="a",le="+Inf"} ${10 * n}
ssm_chunk_latency_seconds_bucket{model="b",le="0.001"} ${5 * n}
ssm_chunk_latency_seconds_bucket{model="b",le="0.002"} ${10 * n}
ssm_chunk_latency_seconds_bucket{model="b",le="+Inf"} ${10 * n}
ssm_batch_streams_sum{model="a"} ${40 * n}
ssm_batch_streams_count{model="a"} ${10 * n}
ssm_batch_frames_sum{model="a"} ${400 * n}
ssm_batch_frames_count{model="a"} ${10 * n}
ssm_realtime_factor{model="a"} 50
ssm_realtime_factor{model="b"} 20
ssm_errors_total{code="NOT_FOUND"} ${errors}
ssm_errors_total{code="INTERNAL"} 0
`;
  return {t, samples: parseExposition(text)};
}

test('figures: gauges summed over models, rates and quantiles over the window', () => {
  const f = deriveFigures(scrape(10, 1), scrape(12, 3, 4));
  assert.equal(f.streamsActive, 8);
  assert.equal(f.slotsUsed, 8);
  assert.equal(f.slotsTotal, 32);
  assert.equal(f.chunksPerS, 20);  // (60 - 20) / 2 s
  assert.equal(f.framesPerS, 200);
  assert.equal(f.latencyP50Ms, 1);  // 40 new: 20 in (0,1 ms], 20 in (1,2 ms]; rank 20
  assert.equal(f.latencyP99Ms, 1.98);  // rank 39.6: 1 + (39.6 - 20) / 20
  assert.equal(f.batchStreams, 4);
  assert.equal(f.batchFrames, 40);
  assert.equal(f.realtimeFactor, 20);  // the slowest model
  assert.deepEqual(f.errorTotals, {NOT_FOUND: 4});
  assert.deepEqual(f.errorsPerS, {NOT_FOUND: 2});
  assert.equal(f.errorsPerSAll, 2);
  assert.deepEqual(f.build, {backend: 'cpu', device: 'cpu', version: '0.1.0'});
  assert.deepEqual(f.models, [{model: 'a', stateBytes: 2048}, {model: 'b', stateBytes: 4096}]);
  assert.ok(Number.isNaN(f.lagP99Ms));  // no lag histogram in these scrapes
});

test('figures of the first scrape have gauges but no rates', () => {
  const f = deriveFigures(null, scrape(0, 1));
  assert.equal(f.streamsActive, 8);
  assert.ok(Number.isNaN(f.chunksPerS));
  assert.ok(Number.isNaN(f.latencyP50Ms));
  assert.ok(Number.isNaN(f.batchStreams));
});

// The resume series of one server at time t; `n` scales the counters.
function resumeScrape(t, n) {
  const text = `
ssm_streams_parked 3
ssm_parked_state_bytes 6144
ssm_stream_resumes_total{source="memory"} ${4 * n}
ssm_stream_resumes_total{source="store"} ${2 * n}
ssm_resume_failures_total{reason="unknown_token"} ${n}
ssm_resume_failures_total{reason="expired"} 0
ssm_resume_failures_total{reason="store_unavailable"} ${3 * n}
ssm_checkpoints_total{outcome="written"} ${10 * n}
ssm_checkpoints_total{outcome="failed"} ${n}
ssm_store_operations_total{op="put",result="ok"} ${10 * n}
ssm_store_operations_total{op="put",result="error"} ${n}
ssm_store_operations_total{op="take",result="ok"} ${2 * n}
ssm_store_operations_total{op="take",result="error"} ${3 * n}
ssm_store_operations_total{op="delete",result="error"} 0
`;
  return {t, samples: parseExposition(text)};
}

test('resume figures: parked gauges, resumes by source, refusals by reason, the store', () => {
  const f = deriveFigures(resumeScrape(10, 1), resumeScrape(12, 3));
  assert.equal(f.parked, 3);
  assert.equal(f.parkedBytes, 6144);
  assert.equal(f.resumesTotal, 18);
  assert.deepEqual(f.resumesPerS, {memory: 4, store: 2});  // (12 - 4) / 2 s, (6 - 2) / 2 s
  // Only the reasons seen: expired stays out until it happens.
  assert.deepEqual(f.resumeFailureTotals, {unknown_token: 3, store_unavailable: 9});
  assert.deepEqual(f.resumeFailuresPerS, {unknown_token: 1, store_unavailable: 3});
  assert.deepEqual(f.checkpointsPerS, {written: 10, failed: 1});
  assert.equal(f.storeErrorsPerS, 4);  // put 1/s + take 3/s; the ok ones are not errors
});

test('resume figures without resume series (metrics of an older server) are 0 and NaN', () => {
  const first = deriveFigures(null, resumeScrape(0, 1));
  assert.equal(first.parked, 3);
  assert.ok(Number.isNaN(first.resumesPerS.memory));
  assert.ok(Number.isNaN(first.storeErrorsPerS));
  const none = deriveFigures(scrape(0, 1), scrape(1, 2));
  assert.equal(none.parked, 0);
  assert.deepEqual(none.resumesPerS, {memory: 0, store: 0});
  assert.deepEqual(none.resumeFailuresPerS, {});
});
