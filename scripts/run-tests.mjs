#!/usr/bin/env node
// Finds *.test.ts under the given directories and runs them with Node's test runner through tsx
// (Node 20's `node --test` does not expand glob patterns itself). Groups run one after another,
// each with its own concurrency, and one combined count closes the run.
// Usage: node scripts/run-tests.mjs DIR[:CONCURRENCY] ...     e.g. packages:2 test:1
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function find(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name === 'fixtures') continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...find(p));
    else if (e.name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const groups = process.argv.slice(2).map((g) => {
  const [dir, n = '1'] = g.split(':');
  return { dir, concurrency: n };
});
if (groups.length === 0) {
  console.error('usage: node scripts/run-tests.mjs DIR[:CONCURRENCY] ...');
  process.exit(2);
}

const tmp = mkdtempSync(join(tmpdir(), 'swg-tests-'));
let passed = 0;
let failed = 0;
let status = 0;
for (const [i, { dir, concurrency }] of groups.entries()) {
  const files = find(dir).sort();
  if (files.length === 0) {
    console.error(`no *.test.ts files under ${dir}`);
    status = 1;
    continue;
  }
  const tap = join(tmp, `${i}.tap`);
  const r = spawnSync(process.execPath, [
    '--import', 'tsx', '--test', `--test-concurrency=${concurrency}`,
    '--test-reporter=spec', '--test-reporter-destination=stdout',
    '--test-reporter=tap', `--test-reporter-destination=${tap}`,
    ...files,
  ], { stdio: 'inherit' });
  if (r.status !== 0) status = r.status ?? 1;
  const text = readFileSync(tap, 'utf8');
  passed += Number(/^# pass (\d+)$/m.exec(text)?.[1] ?? 0);
  // A test cancelled because its suite's hook failed did not pass either.
  failed += Number(/^# fail (\d+)$/m.exec(text)?.[1] ?? 0) + Number(/^# cancelled (\d+)$/m.exec(text)?.[1] ?? 0);
}
rmSync(tmp, { recursive: true, force: true });
console.log(`\nTotal: ${passed} passed, ${failed} failed`);
process.exit(status || (failed ? 1 : 0));
