/**
 * Sandbox start overhead: time from "start instance" to the app accepting connections, in the
 * sandbox (bwrap + netns + cgroups) vs. the same app as a plain child process, same run.
 * Run: node --import tsx bench/sandbox-start.ts
 *
 * BENCH_RUNS (15), BENCH_POOL (the runtime's netPoolSize; default: the runtime's default, 2;
 * 0 = no pre-built slots, every start builds its network/cgroup/launcher itself),
 * BENCH_SETTLE_MS (100): pause before every measurement (both sides) so background work of the
 * previous iteration (pool refill, kernel netns teardown after cleanup) does not land in it.
 * SHELLWEGO_SANDBOX_TRACE=1 prints the phases of every start() to stderr.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRuntime, detectCgroups, prepareWritableDir, removeBridge, removeCgroupRoot } from '@shellwego/sandbox';
import { median, ms, percentile, saveResult, waitForPort } from './lib.ts';

const RUNS = Number(process.env.BENCH_RUNS || 15);
const POOL = process.env.BENCH_POOL === undefined || process.env.BENCH_POOL === '' ? undefined : Number(process.env.BENCH_POOL);
const SETTLE_MS = Number(process.env.BENCH_SETTLE_MS ?? 100);
const settle = () => new Promise((r) => setTimeout(r, SETTLE_MS));
const APP = `require('http').createServer((q, s) => s.end('ok')).listen(process.env.PORT, process.env.HOST);`;

const dir = await mkdtemp(join(tmpdir(), 'swg-bench-start-'));
await chmod(dir, 0o755);
const appDir = join(dir, 'app');
await (await import('node:fs/promises')).mkdir(appDir);
await writeFile(join(appDir, 'server.js'), APP);
await prepareWritableDir(appDir, 100777, 100777);
const bridge = `swgb${Math.random().toString(36).slice(2, 6)}`;
const runtime = await createRuntime({
  isolation: 'sandbox', bridge: { name: bridge, cidr: '10.233.0.0/16' }, cgroupRoot: 'swg-bench', stateRoot: join(dir, 'state'), netPoolSize: POOL,
});

async function plain(i: number): Promise<number> {
  const port = 20000 + i;
  const t0 = performance.now();
  const child = spawn('/usr/bin/node', ['server.js'], { cwd: appDir, env: { PORT: String(port), HOST: '127.0.0.1' }, stdio: 'ignore', detached: true });
  await waitForPort('127.0.0.1', port);
  const t = performance.now() - t0;
  child.kill('SIGKILL');
  return t;
}

async function sandboxed(i: number): Promise<number> {
  const id = `bench-${i}`;
  const stateDir = join(dir, 'sb', id);
  const t0 = performance.now();
  const h = await runtime.start({
    id, argv: ['node', 'server.js'], env: { PORT: '5000', PATH: '/usr/bin:/bin' }, cwd: '/app',
    mounts: [{ source: appDir, target: '/app', readonly: false }], uid: 100777, gid: 100777,
    limits: { memoryMb: 256, cpus: 1, pids: 64 }, network: { mode: 'bridge' }, logFile: join(dir, `${id}.log`), stateDir,
  });
  await waitForPort(h.ip!, 5000);
  const t = performance.now() - t0;
  await runtime.cleanup(id, stateDir);
  return t;
}

const plainTimes: number[] = [];
const sandboxTimes: number[] = [];
try {
  await new Promise((r) => setTimeout(r, 1000)); // the runtime's background setup (pool) finishes, as it would long before a real deploy
  await plain(999); // warm the page cache for node itself
  for (let i = 0; i < RUNS; i++) {
    // Interleave, so drift on a noisy machine hits both sides alike.
    await settle();
    plainTimes.push(await plain(i));
    await settle();
    sandboxTimes.push(await sandboxed(i));
  }
} finally {
  await runtime.close().catch(() => {}); // releases the pre-built slots
  await removeBridge(bridge).catch(() => {});
  const cg = await detectCgroups();
  if (cg.layout) await removeCgroupRoot(cg.layout, 'swg-bench').catch(() => {});
  await rm(dir, { recursive: true, force: true });
}

const result = {
  runs: RUNS,
  netPoolSize: POOL ?? 'default',
  plain: { median: median(plainTimes), p90: percentile(plainTimes, 90) },
  sandbox: { median: median(sandboxTimes), p90: percentile(sandboxTimes, 90) },
  ratio: median(sandboxTimes) / median(plainTimes),
  overheadMs: median(sandboxTimes) - median(plainTimes),
};
console.log(`start → accepting connections (${RUNS} runs, median)`);
console.log(`  plain child process: ${ms(result.plain.median)}   (p90 ${ms(result.plain.p90)})`);
console.log(`  sandbox:             ${ms(result.sandbox.median)}   (p90 ${ms(result.sandbox.p90)})`);
console.log(`  ratio sandbox/plain: ${result.ratio.toFixed(2)}x   (+${result.overheadMs.toFixed(1)} ms)`);
await saveResult('sandbox-start', result);
