// What the dashboard's browser tests share: starting a tool and reading its first stdout lines,
// and a headless Chromium with a throw-away profile.
import {spawn} from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

export const CHROMIUM = '/usr/bin/chromium';

// Starts `binary args`; resolves with {child, lines} once it has printed `count` stdout lines
// (rejects if it exits first). Its stderr is kept in child.errorLog.
export function start(binary, args, count) {
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

// Headless Chromium (playwright-core's `chromium`) with a new profile, closed and removed when
// the test `t` ends; `options` add to the launch options (e.g. a viewport).
export async function launchChromium(t, chromium, options = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ssm-dashboard-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    ...options,
  });
  t.after(async () => {
    await browser.close();
    fs.rmSync(profile, {recursive: true, force: true});
  });
  return browser;
}
