// The dashboard in headless Chromium against the real ssm-server: ssm-loadgen holds STREAMS
// real-time streams for LOAD_S seconds while the page is open; the page must show them all
// live, with latency percentiles and charts that fill up. Saves a screenshot.
//   node browser_test.mjs [BIN_DIR [ARTIFACTS_DIR]]   (defaults: build/bin, build/test-artifacts)
import assert from 'node:assert/strict';
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import {createRequire} from 'node:module';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import {test} from 'node:test';
import {fileURLToPath} from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN_DIR = path.resolve(process.argv[2] ?? path.join(ROOT, 'build/bin'));
const ARTIFACTS = path.resolve(process.argv[3] ?? path.join(ROOT, 'build/test-artifacts'));
const CHROMIUM = '/usr/bin/chromium';
const STREAMS = 8;
const LOAD_S = 10;
const CHUNK_MS = 100;

const require = createRequire(path.join(ROOT, 'clients/dashboard/package.json'));

// Starts `binary args`; resolves with {child, lines} once it has printed `count` stdout lines
// (rejects if it exits first). Its stderr is kept in child.errorLog.
function start(binary, args, count) {
  const child = spawn(binary, args, {stdio: ['ignore', 'pipe', 'pipe']});
  child.errorLog = '';
  child.stderr.on('data', (d) => { child.errorLog = (child.errorLog + d).slice(-4000); });
  child.exited =
      new Promise((resolve) => child.on('exit', (code, signal) => resolve({code, signal})));
  const lines = [];
  return new Promise((resolve, reject) => {
    readline.createInterface({input: child.stdout}).on('line', (line) => {
      lines.push(line);
      if (lines.length === count) resolve({child, lines});
    });
    child.exited.then(({code, signal}) => {
      if (lines.length < count) {
        reject(new Error(`${binary} exited (${code ?? signal}) after printing ` +
                         `${JSON.stringify(lines)}; its stderr:\n${child.errorLog}`));
      }
    });
    child.on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// What the test reads from the page: its state (app.js) and what the tiles say.
const readPage = () => {
  const d = window.ssmDashboard;
  const f = d.latest ?? {};
  const text = (id) => document.getElementById(id).textContent;
  return {
    scrapes: d.scrapes, failures: d.failures, lastError: d.lastError,
    streamsActive: f.streamsActive, chunksPerS: f.chunksPerS,
    p50: f.latencyP50Ms, p99: f.latencyP99Ms, lagP99: f.lagP99Ms,
    tiles: {streams: text('streams-active'), p50: text('latency-p50'), p99: text('latency-p99')},
    points: {
      active: d.charts.streams.valuesIn('active'),
      chunks: d.charts.throughput.valuesIn('chunks/s'),
      p50: d.charts.latency.valuesIn('p50'),
      p99: d.charts.latency.valuesIn('p99'),
      batch: d.charts.batch.valuesIn('streams'),
      lag: d.charts.lag.valuesIn('p99'),
    },
  };
};

test('the dashboard shows live streams, latency percentiles and filled charts', {timeout: 90000},
     async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: run deploy/install.sh`);
  const {chromium} = require('playwright-core');

  const {child: server, lines} = await start(path.join(BIN_DIR, 'ssm-server'), [
    '--model', path.join(ROOT, 'models/random-demo'), '--listen', '127.0.0.1:0',
    '--metrics-listen', '127.0.0.1:0', '--threads', '1'], 2);
  t.after(async () => {
    if (server.exitCode === null) server.kill('SIGTERM');
    await server.exited;
  });
  const grpcAddress = lines[0].replace(/^listening on /, '');
  assert.match(lines[1], /^metrics on 127\.0\.0\.1:\d+$/);
  const url = `http://${lines[1].replace(/^metrics on /, '')}/`;

  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ssm-dashboard-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: {width: 1400, height: 1100},
  });
  t.after(async () => {
    await browser.close();
    fs.rmSync(profile, {recursive: true, force: true});
  });
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
  assert.ok(screenshot !== null, 'no moment with all streams live late enough for a screenshot');

  // After the load the page follows the streams going away.
  await page.waitForFunction(() => window.ssmDashboard.latest.streamsActive === 0, null,
                             {timeout: 5000});
  console.log(`dashboard screenshot: ${screenshot}`);
});
