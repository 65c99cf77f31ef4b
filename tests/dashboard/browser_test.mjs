// The dashboard in headless Chromium against the real ssm-server (with a real redis-server as
// its state store): ssm-loadgen holds STREAMS real-time streams for LOAD_S seconds while the
// page is open; the page must show them all live, with latency percentiles, checkpoints and
// charts that fill up. Then a stream is broken (its connection dropped), parked and resumed,
// and a second resume with the used token is refused: the Resumes panel must show each step.
// Saves a screenshot.
//   node browser_test.mjs [BIN_DIR [ARTIFACTS_DIR]]   (defaults: build/bin, build/test-artifacts)
import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import {createRequire} from 'node:module';
import net from 'node:net';
import path from 'node:path';
import {test} from 'node:test';
import {fileURLToPath} from 'node:url';

import {StreamCall} from './grpc_stream.mjs';
import {CHROMIUM, launchChromium, start} from './harness.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN_DIR = path.resolve(process.argv[2] ?? path.join(ROOT, 'build/bin'));
const ARTIFACTS = path.resolve(process.argv[3] ?? path.join(ROOT, 'build/test-artifacts'));
const REDIS = '/usr/bin/redis-server';
const STREAMS = 8;
const LOAD_S = 10;
const CHUNK_MS = 100;

const require = createRequire(path.join(ROOT, 'clients/dashboard/package.json'));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A loopback port that was free a moment ago.
async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const {port} = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// Whether a Redis on `port` answers PING.
const redisAnswers = (port) => new Promise((resolve) => {
  const socket = net.connect(port, '127.0.0.1', () => socket.write('PING\r\n'));
  socket.setTimeout(1000, () => { socket.destroy(); resolve(false); });
  socket.on('data', (d) => { socket.destroy(); resolve(String(d).startsWith('+PONG')); });
  socket.on('error', () => resolve(false));
});

// Starts redis-server in memory only on a free port; resolves with {child, port} once it
// answers.
async function startRedis() {
  const port = await freePort();
  const child = spawn(REDIS, ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
                              '--appendonly', 'no'], {stdio: 'ignore'});
  child.exited = new Promise((resolve) => child.on('exit', resolve));
  for (let i = 0; i < 50; ++i) {
    if (await redisAnswers(port)) return {child, port};
    if (child.exitCode !== null) break;
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error(`redis-server on port ${port} did not answer PING`);
}

// What the test reads from the page: its state (app.js) and what the tiles say.
const readPage = () => {
  const d = window.ssmDashboard;
  const f = d.latest ?? {};
  const text = (id) => document.getElementById(id).textContent;
  return {
    scrapes: d.scrapes, failures: d.failures, lastError: d.lastError,
    streamsActive: f.streamsActive, chunksPerS: f.chunksPerS,
    p50: f.latencyP50Ms, p99: f.latencyP99Ms, lagP99: f.lagP99Ms,
    checkpointsPerS: f.checkpointsPerS, storeErrorsPerS: f.storeErrorsPerS,
    tiles: {streams: text('streams-active'), p50: text('latency-p50'), p99: text('latency-p99')},
    points: {
      active: d.charts.streams.valuesIn('active'),
      chunks: d.charts.throughput.valuesIn('chunks/s'),
      p50: d.charts.latency.valuesIn('p50'),
      p99: d.charts.latency.valuesIn('p99'),
      batch: d.charts.batch.valuesIn('streams'),
      lag: d.charts.lag.valuesIn('p99'),
      checkpoints: d.charts.store.valuesIn('checkpoints written'),
      storeErrors: d.charts.store.valuesIn('store errors'),
    },
  };
};

// What the Resumes panel shows.
const readResumes = () => {
  const d = window.ssmDashboard;
  const f = d.latest ?? {};
  const text = (id) => document.getElementById(id).textContent;
  return {
    parked: f.parked, parkedBytes: f.parkedBytes, resumesTotal: f.resumesTotal,
    resumesPerS: f.resumesPerS, refusedTotals: f.resumeFailureTotals,
    tiles: {parked: text('parked'), parkedKiB: text('parked-bytes'),
      resumes: text('resumes-total'), refused: text('resume-failures-total')},
    points: {
      parked: d.charts.parked.valuesIn('parked'),
      fromMemory: d.charts.resumes.valuesIn('from memory'),
      usedToken: d.charts.resumes.valuesIn('refused: used_token'),
    },
  };
};

test('the dashboard shows live streams, latency percentiles, filled charts and resumes',
     {timeout: 90000}, async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: run deploy/install.sh`);
  assert.ok(fs.existsSync(REDIS), `${REDIS} is missing: run deploy/install.sh`);
  const {chromium} = require('playwright-core');

  const redis = await startRedis();
  t.after(async () => {
    if (redis.child.exitCode === null) redis.child.kill('SIGTERM');
    await redis.child.exited;
  });
  // A checkpoint per second of signal: STREAMS a second while the load runs.
  const {child: server, lines} = await start(path.join(BIN_DIR, 'ssm-server'), [
    '--model', path.join(ROOT, 'models/random-demo'), '--listen', '127.0.0.1:0',
    '--metrics-listen', '127.0.0.1:0', '--threads', '1',
    '--state-store', `redis://127.0.0.1:${redis.port}/0`, '--checkpoint-interval', '1'], 2);
  t.after(async () => {
    if (server.exitCode === null) server.kill('SIGTERM');
    await server.exited;
  });
  const grpcAddress = lines[0].replace(/^listening on /, '');
  assert.match(lines[1], /^metrics on 127\.0\.0\.1:\d+$/);
  const url = `http://${lines[1].replace(/^metrics on /, '')}/`;

  const browser = await launchChromium(t, chromium, {viewport: {width: 1400, height: 1100}});
  const page = browser.pages()[0] ?? await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
  page.on('response', (r) => {
    if (r.status() >= 400) pageErrors.push(`${r.status()} ${r.url()}`);
  });
  await page.goto(url);
  await page.waitForFunction(() => window.ssmDashboard && window.ssmDashboard.scrapes >= 1,
                             null, {timeout: 10000});
  assert.equal((await page.evaluate(readPage)).streamsActive, 0);

  const loadgen = spawn(path.join(BIN_DIR, 'ssm-loadgen'), [
    '--server', grpcAddress, '--streams', String(STREAMS), '--duration', String(LOAD_S),
    '--chunk-ms', String(CHUNK_MS), '--json'], {stdio: ['ignore', 'pipe', 'inherit']});
  let report = '';
  loadgen.stdout.on('data', (d) => { report += d; });
  const loadgenDone = new Promise((resolve) => loadgen.on('exit', resolve));
  let finished = false;
  loadgenDone.then(() => { finished = true; });

  // While the load runs: every 250 ms, what the page shows.
  const started = Date.now();
  let sawAllStreams = null;  // the page's reading when it showed all STREAMS streams
  let screenshot = null;
  let last = null;
  while (!finished) {
    last = await page.evaluate(readPage);
    if (last.streamsActive === STREAMS && last.tiles.streams === String(STREAMS) &&
        last.p99 > 0) {
      sawAllStreams ??= last;
      // Once the charts have a few seconds of the full load, keep a picture of it.
      if (screenshot === null && Date.now() - started > (LOAD_S - 3) * 1000) {
        fs.mkdirSync(ARTIFACTS, {recursive: true});
        screenshot = path.join(ARTIFACTS, 'dashboard.png');
        await page.screenshot({path: screenshot, fullPage: true});
        sawAllStreams = last;
      }
    }
    await sleep(250);
  }
  const code = await loadgenDone;
  assert.equal(code, 0, 'ssm-loadgen failed');
  const result = JSON.parse(report);
  assert.equal(result.streams_held, STREAMS, `ssm-loadgen held ${result.streams_held} streams`);
  assert.ok(result.chunks_answered > 0);

  assert.deepEqual(pageErrors, [], 'errors in the page');
  assert.equal(last.failures, 0, `scrapes failed: ${last.lastError}`);
  assert.ok(sawAllStreams !== null,
            `the page never showed ${STREAMS} streams active; last: ${JSON.stringify(last)}`);
  const seen = sawAllStreams;
  assert.ok(seen.p50 > 0 && seen.p99 >= seen.p50, `latency p50 ${seen.p50} p99 ${seen.p99} ms`);
  assert.notEqual(seen.tiles.p50, '–');
  assert.ok(Number(seen.tiles.p99) > 0, `latency p99 tile "${seen.tiles.p99}"`);
  // STREAMS streams of one chunk per CHUNK_MS: 80 chunks/s, the rate over the page's window.
  const expected = STREAMS * 1000 / CHUNK_MS;
  assert.ok(Math.abs(seen.chunksPerS - expected) <= 0.25 * expected,
            `chunks/s ${seen.chunksPerS}, expected about ${expected}`);
  for (const [series, n] of Object.entries(seen.points)) {
    assert.ok(n >= 3, `chart series ${series} holds ${n} values`);
  }
  // Every stream checkpointed to the real Redis once a second of signal, none failed.
  const checkpoints = seen.checkpointsPerS;
  assert.ok(Math.abs(checkpoints.written - STREAMS) <= 0.5 * STREAMS,
            `checkpoints written/s ${checkpoints.written}, expected about ${STREAMS}`);
  assert.equal(checkpoints.failed, 0);
  assert.equal(seen.storeErrorsPerS, 0);
  assert.ok(screenshot !== null, 'no moment with all streams live late enough for a screenshot');

  // After the load the page follows the streams going away.
  await page.waitForFunction(() => window.ssmDashboard.latest.streamsActive === 0, null,
                             {timeout: 5000});
  let resumes = await page.evaluate(readResumes);
  assert.equal(resumes.parked, 0);
  assert.equal(resumes.tiles.parked, '0');
  assert.equal(resumes.tiles.resumes, '0');

  // A stream whose connection drops is parked: the panel shows it and its snapshot's bytes.
  const pcm = Buffer.alloc(2 * 16000 * CHUNK_MS / 1000);  // one chunk of s16 silence
  const broken = new StreamCall(grpcAddress, {label: 'dashboard-resume'});
  broken.sendChunk(0, pcm);
  const answered = await broken.until((r) => r.some((m) => m.output), 'the first output');
  const token = answered[0].opened.resumeToken;
  const framesHeld = answered.filter((m) => m.output).reduce((n, m) => n + m.output.frames, 0);
  assert.ok(token.length > 0, 'no resume token');
  broken.disconnect();
  await page.waitForFunction(() => window.ssmDashboard.latest.parked === 1, null,
                             {timeout: 5000});
  resumes = await page.evaluate(readResumes);
  assert.ok(resumes.parkedBytes > 0, `parked bytes ${resumes.parkedBytes}`);
  assert.equal(resumes.tiles.parked, '1');
  assert.equal(resumes.tiles.parkedKiB, (resumes.parkedBytes / 1024).toFixed(1));

  // Its token resumes it on a new call (from this server's memory), which then completes.
  const resumed = new StreamCall(grpcAddress, {resumeToken: token, resumeFromFrame: framesHeld});
  const [{opened}] = await resumed.until((r) => r.some((m) => m.opened), 'opened');
  assert.ok(opened.resumed, 'the call did not resume the stream');
  assert.equal(opened.nextSequence, 1);
  resumed.sendChunk(opened.nextSequence, pcm);
  await resumed.until((r) => r.some((m) => m.output && m.output.sequence === 1), 'an output');
  resumed.halfClose();
  assert.equal((await resumed.status).code, 0);
  resumed.close();
  // The token is single use: a second resume is refused (NOT_FOUND, reason used_token).
  const again = new StreamCall(grpcAddress, {resumeToken: token});
  assert.equal((await again.status).code, 5);
  again.close();

  await page.waitForFunction(() => {
    const f = window.ssmDashboard.latest;
    return f.parked === 0 && f.resumesTotal === 1 && f.resumeFailureTotals.used_token === 1;
  }, null, {timeout: 5000});
  resumes = await page.evaluate(readResumes);
  assert.equal(resumes.tiles.parked, '0');
  assert.equal(resumes.tiles.resumes, '1');
  assert.equal(resumes.tiles.refused, '1');
  assert.deepEqual(resumes.refusedTotals, {used_token: 1});
  // One resume in the page's 5 s window: 0.2/s from memory, none from the store.
  await page.waitForFunction(() => window.ssmDashboard.latest.resumesPerS.memory > 0, null,
                             {timeout: 5000});
  resumes = await page.evaluate(readResumes);
  assert.ok(resumes.resumesPerS.memory > 0 && resumes.resumesPerS.memory <= 1,
            `resumes/s from memory ${resumes.resumesPerS.memory}`);
  assert.equal(resumes.resumesPerS.store, 0);
  for (const [series, n] of Object.entries(resumes.points)) {
    assert.ok(n >= 1, `resume chart series ${series} holds no value`);
  }
  fs.mkdirSync(ARTIFACTS, {recursive: true});
  const resumeShot = path.join(ARTIFACTS, 'dashboard-resumes.png');
  await page.screenshot({path: resumeShot, fullPage: true});
  assert.deepEqual(pageErrors, [], 'errors in the page');
  console.log(`dashboard screenshots: ${screenshot}, ${resumeShot}`);
});
