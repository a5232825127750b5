/**
 * Router throughput benchmark: the ShellWeGo router against Debian nginx, both proxying to the
 * same plain Node "hello world" backend, measured with wrk (1 thread, 50 connections, 10 s).
 *
 *   node --import tsx bench/router.ts            (≈45 s; ROUTER_BENCH_SECONDS=5 for a quick run)
 *
 * Setup, chosen to be fair on a 2-core machine where wrk needs a core of its own:
 * - backend: a Node http server in its own child process (keep-alive, 120 s idle timeout);
 * - router: createRouter() in its own child process (one event loop = one core), no access log;
 * - nginx: `worker_processes 1`, upstream `keepalive`, `proxy_http_version 1.1`, access log off,
 *   the same X-Forwarded-* / X-Request-Id work as the router, keepalive_requests raised so it
 *   does not recycle wrk's connections (the router never does);
 * - each target gets a 2 s warm-up run (JIT, pools) before the measured run.
 * Prints a table and the ratios router/nginx and router/direct (throughput; p99 as multiples),
 * and writes .bench-out/router.json.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { NGINX, ROOT, WRK, startChild, startNginx } from './lib.ts';

const SECONDS = Number(process.env.ROUTER_BENCH_SECONDS ?? 10);
const WARMUP_SECONDS = 2;
const CONNECTIONS = 50;
const HOSTNAME = 'bench.localhost';

interface WrkResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  errors: number;
  non2xx: number;
}

const children: ChildProcess[] = [];
function cleanup(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
}
process.on('exit', cleanup);
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

function runWrk(port: number, seconds: number): Promise<WrkResult> {
  return new Promise((resolveRun, reject) => {
    const args = [`-t1`, `-c${CONNECTIONS}`, `-d${seconds}s`, '--latency', '-H', `Host: ${HOSTNAME}`, `http://127.0.0.1:${port}/`];
    const child = spawn(WRK, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`wrk exited with ${code}:\n${out}`));
      try {
        resolveRun(parseWrk(out));
      } catch (err) {
        reject(err);
      }
    });
  });
}

function toMs(value: string, unit: string): number {
  const v = Number(value);
  if (unit === 'us') return v / 1000;
  if (unit === 'ms') return v;
  if (unit === 's') return v * 1000;
  if (unit === 'm') return v * 60_000;
  throw new Error(`unknown latency unit ${unit}`);
}

function parseWrk(out: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p99 = /^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(out);
  const p50 = /^\s*50%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(out);
  const total = /(\d+) requests in/.exec(out);
  if (!rps || !p99 || !p50 || !total) throw new Error(`cannot parse wrk output:\n${out}`);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    rps: Number(rps[1]),
    p50Ms: toMs(p50[1], p50[2]),
    p99Ms: toMs(p99[1], p99[2]),
    requests: Number(total[1]),
    errors: sock ? sock.slice(1).reduce((n, x) => n + Number(x), 0) : 0,
    non2xx: non2xx ? Number(non2xx[1]) : 0,
  };
}

async function measure(name: string, port: number): Promise<WrkResult> {
  process.stderr.write(`${name}: warm-up ${WARMUP_SECONDS}s, run ${SECONDS}s…\n`);
  await runWrk(port, WARMUP_SECONDS);
  const r = await runWrk(port, SECONDS);
  if (r.non2xx > 0 || r.errors > 0) process.stderr.write(`  warning: ${name}: ${r.non2xx} non-2xx responses, ${r.errors} socket errors\n`);
  return r;
}

async function main(): Promise<void> {
  for (const bin of [NGINX, WRK]) if (!existsSync(bin)) throw new Error(`${bin} not found`);
  const started = Date.now();
  const backendPort = await startChild(children, 'router-child.ts', ['backend']);
  const routerPort = await startChild(children, 'router-child.ts', ['router', `127.0.0.1:${backendPort}`, HOSTNAME]);
  const nginxDir = mkdtempSync(join(tmpdir(), 'swg-bench-nginx-'));
  const nginxPort = await startNginx({ children, dir: nginxDir, backendPort });

  const direct = await measure('direct', backendPort);
  const viaRouter = await measure('router', routerPort);
  const viaNginx = await measure('nginx', nginxPort);
  cleanup();
  rmSync(nginxDir, { recursive: true, force: true });

  const round = (n: number, d = 2): number => Math.round(n * 10 ** d) / 10 ** d;
  const ratios = {
    routerVsNginxThroughput: round(viaRouter.rps / viaNginx.rps, 3),
    routerVsDirectThroughput: round(viaRouter.rps / direct.rps, 3),
    nginxVsDirectThroughput: round(viaNginx.rps / direct.rps, 3),
    routerVsNginxP99: round(viaRouter.p99Ms / viaNginx.p99Ms, 3),
  };
  const rows: [string, WrkResult][] = [['direct', direct], ['router', viaRouter], ['nginx', viaNginx]];
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(8) : c.padStart(12))).join(' ');
  console.log(`\nrouter benchmark: wrk -t1 -c${CONNECTIONS} -d${SECONDS}s, ${cpus().length} cores, Node ${process.version}`);
  console.log(line(['target', 'req/s', 'p50 ms', 'p99 ms', 'requests']));
  for (const [name, r] of rows) console.log(line([name, round(r.rps, 0).toString(), round(r.p50Ms).toString(), round(r.p99Ms).toString(), String(r.requests)]));
  console.log(`\nrouter/nginx throughput: ${ratios.routerVsNginxThroughput}   router/direct: ${ratios.routerVsDirectThroughput}   nginx/direct: ${ratios.nginxVsDirectThroughput}   router/nginx p99: ${ratios.routerVsNginxP99}x`);

  const result = {
    benchmark: 'router',
    at: new Date().toISOString(),
    setup: {
      tool: `wrk -t1 -c${CONNECTIONS} -d${SECONDS}s --latency`, warmupSeconds: WARMUP_SECONDS, cores: cpus().length, node: process.version,
      backend: 'node http hello world, own process', router: 'createRouter, own process, no logger', nginx: 'worker_processes 1, upstream keepalive 128, proxy_http_version 1.1, access_log off',
    },
    results: { direct, router: viaRouter, nginx: viaNginx },
    ratios,
    durationSeconds: round((Date.now() - started) / 1000, 1),
  };
  const outDir = join(ROOT, '.bench-out');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'router.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote .bench-out/router.json (${result.durationSeconds}s)`);
}

main().catch((err: unknown) => {
  cleanup();
  process.stderr.write(`${String((err as Error).stack ?? err)}\n`);
  process.exit(1);
});
