#!/usr/bin/env node
// Finds *.test.ts under the given directories and runs them with Node's test runner through tsx.
// (Node 20's `node --test` does not expand glob patterns itself.)
// Usage: node scripts/run-tests.mjs [--concurrency N] DIR...
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const args = process.argv.slice(2);
let concurrency = '1';
const i = args.indexOf('--concurrency');
if (i >= 0) concurrency = args.splice(i, 2)[1];

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

const files = args.flatMap(find).sort();
if (files.length === 0) {
  console.error(`no *.test.ts files under ${args.join(', ')}`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
