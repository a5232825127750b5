/**
 * Runs every benchmark in turn and prints each figure with its same-run reference.
 * Run: npm run bench            (one: npm run bench -- router)
 * Results: .bench-out/<name>.json; recorded figures and the machine: docs/benchmarks.md.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './lib.ts';

const all = ['sandbox-start', 'router', 'tls', 'deploy', 'zero-downtime', 'git-push', 'memory', 'scheduler', 'failover', 'scale'];
const wanted = process.argv.slice(2).length ? process.argv.slice(2) : all;
let failed = 0;
for (const name of wanted) {
  if (!all.includes(name)) {
    console.error(`unknown benchmark '${name}'; benchmarks: ${all.join(', ')}`);
    process.exit(2);
  }
  console.log(`\n=== ${name} ===`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', `${name}.ts`)], { stdio: 'inherit', cwd: ROOT });
  if (r.status !== 0) {
    failed++;
    console.error(`${name} failed (exit ${r.status})`);
  }
}
process.exit(failed ? 1 : 0);
