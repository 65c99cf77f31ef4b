// The dashboard in headless Chromium against a real ssm-server run with --auth-keys and
// --metrics-auth: /metrics answers 401 without a key, so the page asks for one. A wrong key is
// refused and asked for again; the key made by ssm-keys is sent as "Authorization: Bearer ..."
// from then on, kept in the tab's sessionStorage only (never localStorage), and the page goes
// live. The page and its scripts load without a key.
//   node key_prompt_test.mjs [BIN_DIR]   (default: build/bin)
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import fs from 'node:fs';
import {createRequire} from 'node:module';
import os from 'node:os';
import path from 'node:path';
import {test} from 'node:test';
import {fileURLToPath} from 'node:url';

import {CHROMIUM, launchChromium, start} from './harness.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN_DIR = path.resolve(process.argv[2] ?? path.join(ROOT, 'build/bin'));

const require = createRequire(path.join(ROOT, 'clients/dashboard/package.json'));

test('the dashboard asks for the metrics key, sends it and keeps it for the tab only',
     {timeout: 60000}, async (t) => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: run deploy/install.sh`);
  const {chromium} = require('playwright-core');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ssm-key-prompt-'));
  t.after(() => fs.rmSync(dir, {recursive: true, force: true}));
  const made = execFileSync(path.join(BIN_DIR, 'ssm-keys'), ['new', 'ops'],
                            {encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore']});
  const secret = made.match(/^secret: (\S+)$/m)[1];
  const line = made.match(/^line: +(.+)$/m)[1];
  assert.ok(!line.includes(secret), 'the keys-file line holds the secret');
  fs.writeFileSync(path.join(dir, 'keys.txt'), `${line}\n`);

  const {child: server, lines} = await start(path.join(BIN_DIR, 'ssm-server'), [
    '--model', path.join(ROOT, 'models/random-demo'), '--listen', '127.0.0.1:0',
    '--metrics-listen', '127.0.0.1:0', '--threads', '1',
    '--auth-keys', path.join(dir, 'keys.txt'), '--metrics-auth'], 2);
  t.after(async () => {
    if (server.exitCode === null) server.kill('SIGTERM');
    await server.exited;
  });
  const origin = `http://${lines[1].replace(/^metrics on /, '')}`;

  const browser = await launchChromium(t, chromium);
  const page = browser.pages()[0] ?? await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // Every /metrics response, in order: its status and request.
  const responses = [];
  page.on('response', (r) => {
    if (new URL(r.url()).pathname === '/metrics') {
      responses.push(r);
    } else if (r.status() >= 400) {
      pageErrors.push(`${r.status()} ${r.url()}`);
    }
  });
  // The first prompt gets a wrong key, the second the right one.
  const prompts = [];
  page.on('dialog', async (dialog) => {
    prompts.push({type: dialog.type(), message: dialog.message()});
    await dialog.accept(prompts.length === 1 ? 'ssk_not_a_key_of_this_server' : secret);
  });

  await page.goto(`${origin}/`);
  await page.waitForFunction(() => window.ssmDashboard && window.ssmDashboard.scrapes >= 2,
                             null, {timeout: 20000});

  const scrapes = await Promise.all(responses.map(async (r) => (
    {status: r.status(), authorization: (await r.request().allHeaders()).authorization})));
  assert.equal(prompts.length, 2, `prompts: ${JSON.stringify(prompts)}`);
  for (const p of prompts) {
    assert.equal(p.type, 'prompt');
    assert.match(p.message, /API key/);
  }
  // No key, then the wrong one: both refused; then the right one, accepted from then on.
  assert.deepEqual(scrapes.slice(0, 2).map((s) => s.status), [401, 401]);
  assert.equal(scrapes[0].authorization, undefined);
  assert.equal(scrapes[1].authorization, 'Bearer ssk_not_a_key_of_this_server');
  const accepted = scrapes.slice(2);
  assert.ok(accepted.length >= 2, `scrapes: ${JSON.stringify(scrapes)}`);
  for (const s of accepted) {
    assert.equal(s.status, 200);
    assert.equal(s.authorization, `Bearer ${secret}`);
  }
  const state = await page.evaluate(() => ({
    failures: window.ssmDashboard.failures,
    streamsActive: window.ssmDashboard.latest.streamsActive,
    session: sessionStorage.getItem('ssm-api-key'),
    local: localStorage.length,
    status: document.getElementById('status').textContent,
  }));
  assert.equal(state.failures, 2);  // the two refused scrapes
  assert.equal(state.streamsActive, 0);
  assert.equal(state.session, secret);
  assert.equal(state.local, 0, 'something was kept in localStorage');
  assert.match(state.status, /^live/);

  // Without the key, /metrics stays closed to anyone else; the page itself is open.
  const outside = await fetch(`${origin}/metrics`);
  assert.equal(outside.status, 401);
  assert.equal((await fetch(`${origin}/`)).status, 200);
  assert.deepEqual(pageErrors, [], 'errors in the page');
});
