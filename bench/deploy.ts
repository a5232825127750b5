/**
 * Deploy time of examples/node-express through the real platform (sandbox isolation), until the
 * first 200 through the router: cold, with dependencies cached (source changed), unchanged
 * redeploy, and rollback. Reference, same run: the built app started as a plain process until
 * its first 200 — the floor under any deploy.
 * Run: node --import tsx bench/deploy.ts
 */
import { spawn } from 'node:child_process';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestPlatform, freePort } from '../test/helpers/platform.ts';
import { ROOT, median, saveResult } from './lib.ts';

const RUNS = Number(process.env.BENCH_RUNS || 3);
const p = await TestPlatform.start({ isolation: 'sandbox', env: { SHELLWEGO_LOG_LEVEL: 'error' } });
const token = await p.token();
const work = await mkdtemp(join(tmpdir(), 'swg-bench-deploy-'));
const src = join(work, 'node-express');
await cp(join(ROOT, 'examples/node-express'), src, { recursive: true });

async function cli(args: string[]) {
  const r = await p.cli(args, token, { cwd: work });
  if (r.code !== 0) throw new Error(`shellwego ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** Polls the router until the app answers 200 and `accept(body, headers)` holds. */
async function until200(app: string, accept: (r: Response) => boolean = () => true): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    try {
      const r = await p.viaRouter(app);
      await r.arrayBuffer();
      if (r.status === 200 && accept(r)) return;
    } catch {}
    await new Promise((res) => setTimeout(res, 10));
  }
  throw new Error('no 200 within 60 s');
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** The example sets X-Release from SHELLWEGO_RELEASE: tells which release answered. */
const release = (v: number) => (r: Response) => r.headers.get('x-release') === `v${v}`;

try {
  await cli(['apps', 'create', 'bench', '--no-link']);
  const cold = await timed(async () => { await cli(['deploy', src, '--app', 'bench']); await until200('bench'); });

  const cached: number[] = [];
  const unchanged: number[] = [];
  const rollback: number[] = [];
  let version = 1;
  for (let i = 0; i < RUNS; i++) {
    await writeFile(join(src, 'CHANGELOG.txt'), `change ${i} ${Date.now()}\n`); // new source, same lockfile
    version++;
    const v1 = version;
    cached.push(await timed(async () => { await cli(['deploy', src, '--app', 'bench']); await until200('bench', release(v1)); }));
    version++;
    const v2 = version;
    unchanged.push(await timed(async () => { await cli(['deploy', src, '--app', 'bench']); await until200('bench', release(v2)); }));
    const target = version - 1;
    version++; // the rollback creates a new release, which must be the one answering
    const expected = version;
    rollback.push(await timed(async () => { await cli(['rollback', `v${target}`, '--app', 'bench']); await until200('bench', release(expected)); }));
  }

  // Reference: the same built app as a plain process, start → first 200.
  const plain: number[] = [];
  const built = join(work, 'built');
  await cp(src, built, { recursive: true });
  await new Promise<void>((res, rej) => spawn('npm', ['install', '--omit=dev', '--no-audit', '--no-fund'], { cwd: built, stdio: 'ignore' }).on('exit', (c) => (c === 0 ? res() : rej(new Error('npm install failed')))));
  for (let i = 0; i < RUNS + 2; i++) {
    const port = await freePort();
    const t0 = performance.now();
    const child = spawn('/usr/bin/node', ['.'], { cwd: built, env: { ...process.env, PORT: String(port) }, stdio: 'ignore' });
    for (;;) {
      const ok = await fetch(`http://127.0.0.1:${port}/`).then((r) => r.status === 200, () => false);
      if (ok) break;
      await new Promise((res) => setTimeout(res, 5));
    }
    plain.push(performance.now() - t0);
    child.kill('SIGKILL');
  }

  const ref = median(plain);
  const result = {
    runs: RUNS,
    referencePlainStartMs: ref,
    coldDeployMs: cold,
    cachedDeployMs: median(cached),
    unchangedRedeployMs: median(unchanged),
    rollbackMs: median(rollback),
    ratios: { cold: cold / ref, cached: median(cached) / ref, unchanged: median(unchanged) / ref, rollback: median(rollback) / ref },
    samples: { cached, unchanged, rollback, plain },
  };
  const f = (n: number) => `${(n / 1000).toFixed(2)} s`;
  console.log(`deploy of examples/node-express until the first 200 through the router (median of ${RUNS})`);
  console.log(`  reference: plain process start → 200   ${f(ref)}`);
  console.log(`  cold deploy (deps installed)           ${f(cold)}   ${(cold / ref).toFixed(1)}x`);
  console.log(`  deploy, dependencies cached            ${f(result.cachedDeployMs)}   ${result.ratios.cached.toFixed(1)}x   (target < 3 s)`);
  console.log(`  unchanged redeploy                     ${f(result.unchangedRedeployMs)}   ${result.ratios.unchanged.toFixed(1)}x   (target < 1.5 s)`);
  console.log(`  rollback until the new release serves    ${f(result.rollbackMs)}   ${result.ratios.rollback.toFixed(1)}x   (target < 1 s)`);
  await saveResult('deploy', result);
} finally {
  await p.destroy();
  await rm(work, { recursive: true, force: true });
}
