/**
 * Zero-downtime deploys: failed requests and added p99 latency during rolling deploys of 3
 * instances under constant load, through the real router, sandboxed instances. Reference, same
 * run: the same load against the same app in steady state (no deploy).
 * Run: node --import tsx bench/zero-downtime.ts      (BENCH_RUNS=3 deploys by default)
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestPlatform, waitFor } from '../test/helpers/platform.ts';
import { appDir, knobApp } from '../test/helpers/apps.ts';
import { LoadGenerator } from '../test/helpers/load.ts';
import type { LoadResult } from '../test/helpers/load.ts';
import { median, percentile, saveResult } from './lib.ts';

const RUNS = Number(process.env.BENCH_RUNS || 3);
const STEADY_MS = Number(process.env.BENCH_STEADY_MS || 5000);
const CONCURRENCY = 4;

const p = await TestPlatform.start({ isolation: 'sandbox', env: { SHELLWEGO_LOG_LEVEL: 'error' } });
const token = await p.token();
const work = await mkdtemp(join(tmpdir(), 'swg-bench-zd-'));

async function cli(args: string[]): Promise<string> {
  const r = await p.cli(args, token, { cwd: work });
  if (r.code !== 0) throw new Error(`shellwego ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}
const json = async <T = any>(args: string[]): Promise<T> => JSON.parse(await cli([...args, '--json'])) as T;
const load = () => new LoadGenerator({ port: p.routerPort, host: 'zd.localhost', concurrency: CONCURRENCY, pauseMs: 0 }).start();

try {
  await cli(['apps', 'create', 'zd', '--no-link']);
  await cli(['config', 'set', 'VERSION=v0', '--app', 'zd']);
  await cli(['deploy', await appDir(knobApp), '--app', 'zd']);
  await cli(['scale', 'web=3', '--app', 'zd']);
  await waitFor('3 running', async () => (await json<any[]>(['ps', '--app', 'zd'])).filter((i) => i.state === 'running').length === 3, 60_000);

  const steady: LoadResult[] = [];
  const during: (LoadResult & { deployMs: number })[] = [];
  for (let i = 1; i <= RUNS; i++) {
    // Steady state, then one rolling deploy, each under the same load.
    const s = load();
    await new Promise((r) => setTimeout(r, STEADY_MS));
    steady.push(await s.stop());

    const l = load();
    const t0 = performance.now();
    const rel = await json<any>(['config', 'set', `VERSION=v${i}`, '--app', 'zd']);
    const version = rel.release.version as number;
    await waitFor('deployment done and old instances gone', async () => {
      const [d] = await json<any[]>(['deployments', '--app', 'zd', '-n', '1']);
      if (d.toVersion !== version || d.state !== 'succeeded') return false;
      const ps = await json<any[]>(['ps', '--app', 'zd']);
      return ps.length === 3 && ps.every((x) => x.releaseVersion === version);
    }, 120_000, 50);
    const deployMs = performance.now() - t0;
    during.push({ ...(await l.stop()), deployMs });
  }

  const p99 = (rs: LoadResult[]) => median(rs.map((r) => percentile(r.latencies, 99)));
  const p50 = (rs: LoadResult[]) => median(rs.map((r) => percentile(r.latencies, 50)));
  const failed = during.reduce((n, r) => n + r.failed, 0);
  const total = during.reduce((n, r) => n + r.ok + r.failed, 0);
  const result = {
    runs: RUNS, concurrency: CONCURRENCY, instances: 3, strategy: 'rolling (batch 1, surge 1, unavailable 0, drain 2 s)',
    failedDuringDeploys: failed, requestsDuringDeploys: total, errors: during.flatMap((r) => r.errors).slice(0, 10),
    steady: { p50Ms: p50(steady), p99Ms: p99(steady), rps: median(steady.map((r) => r.ok / (STEADY_MS / 1000))) },
    deploy: { p50Ms: p50(during), p99Ms: p99(during), rps: median(during.map((r) => r.ok / (r.deployMs / 1000))), durationMs: median(during.map((r) => r.deployMs)) },
  };
  const addedP99 = result.deploy.p99Ms - result.steady.p99Ms;
  console.log(`rolling deploy of 3 instances under constant load (${CONCURRENCY} keep-alive connections), median of ${RUNS}`);
  console.log(`  failed requests during deploys   ${failed} of ${total}   (target 0)`);
  console.log(`  reference: steady state          p50 ${result.steady.p50Ms.toFixed(2)} ms   p99 ${result.steady.p99Ms.toFixed(2)} ms   ${Math.round(result.steady.rps)} req/s`);
  console.log(`  during the deploy                p50 ${result.deploy.p50Ms.toFixed(2)} ms   p99 ${result.deploy.p99Ms.toFixed(2)} ms   ${Math.round(result.deploy.rps)} req/s`);
  console.log(`  added p99                        ${addedP99.toFixed(2)} ms   (${(result.deploy.p99Ms / result.steady.p99Ms).toFixed(2)}x steady)`);
  console.log(`  deploy until old instances gone  ${(result.deploy.durationMs / 1000).toFixed(2)} s`);
  await saveResult('zero-downtime', { ...result, addedP99Ms: addedP99 });
} finally {
  await p.destroy();
  await rm(work, { recursive: true, force: true });
}
