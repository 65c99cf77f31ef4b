// node --test: every npm package the dashboard installs (clients/dashboard/package-lock.json)
// must run on the Node.js that a fresh Debian 12 installs (18.x), not only on newer ones: the
// README's test command runs the browser test with whatever `apt-get install nodejs` gives.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {test} from 'node:test';
import {fileURLToPath} from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const LOCK = path.join(ROOT, 'clients/dashboard/package-lock.json');
// Debian 12's nodejs package (bookworm and bookworm-security).
const DEBIAN_12_NODE = [18, 19, 0];

const parse = (v) => v.replace(/^v/, '').split('.').map((p) => Number.parseInt(p, 10) || 0);
const compare = (a, b) => {
  for (let i = 0; i < 3; ++i) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
  return 0;
};

// Whether `version` satisfies an npm engines range made of space-separated comparators
// (">=18", ">=18.12 <23", "^18.0.0 || >=20"); a form it cannot read fails loudly.
export function satisfies(version, range) {
  return range.split('||').some((alternative) => alternative.trim().split(/\s+/).every((c) => {
    const m = /^(>=|<=|>|<|=|\^|~)?v?(\d+(?:\.\d+){0,2})(?:\.x)?$/.exec(c);
    assert.ok(m, `cannot read the engines comparator "${c}" of "${range}"`);
    const [, op = '=', bound] = m;
    const b = parse(bound), cmp = compare(version, b);
    switch (op) {
      case '>=': return cmp >= 0;
      case '>': return cmp > 0;
      case '<=': return cmp <= 0;
      case '<': return cmp < 0;
      case '^': return cmp >= 0 && version[0] === b[0];
      case '~': return cmp >= 0 && version[0] === b[0] && version[1] === b[1];
      default: return bound.split('.').every((p, i) => Number(p) === version[i]);
    }
  }));
}

test('the engines-range reader', () => {
  assert.ok(satisfies([18, 19, 0], '>=18'));
  assert.ok(!satisfies([18, 19, 0], '>=20'));
  assert.ok(satisfies([18, 19, 0], '^16.0.0 || >=18.12'));
  assert.ok(!satisfies([18, 19, 0], '>=18.12 <18.19'));
  assert.throws(() => satisfies([18, 0, 0], 'node18'));
});

test('every locked package allows the Node.js of a fresh Debian 12', () => {
  const lock = JSON.parse(fs.readFileSync(LOCK, 'utf8'));
  const checked = [];
  for (const [where, entry] of Object.entries(lock.packages)) {
    const range = entry.engines?.node;
    if (where === '' || range === undefined) continue;
    checked.push(where);
    assert.ok(satisfies(DEBIAN_12_NODE, range),
              `${where}@${entry.version} requires Node.js ${range}, but Debian 12 ships ` +
              `${DEBIAN_12_NODE.join('.')}: pin a version whose engines allow it`);
  }
  assert.ok(checked.includes('node_modules/playwright-core'), 'playwright-core is not locked');
});

test('this Node.js satisfies every locked package', () => {
  const lock = JSON.parse(fs.readFileSync(LOCK, 'utf8'));
  const here = parse(process.versions.node);
  for (const [where, entry] of Object.entries(lock.packages)) {
    const range = entry.engines?.node;
    if (where === '' || range === undefined) continue;
    assert.ok(satisfies(here, range), `${where} requires Node.js ${range}; this is ${here}`);
  }
});
