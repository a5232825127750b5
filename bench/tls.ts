/**
 * TLS benchmark: the ShellWeGo router terminating HTTPS against Debian nginx, with the same
 * certificate (ECDSA P-256 from the local CA), both proxying to the same Node backend, in the
 * same run. Measured with wrk (1 thread, 50 connections):
 * - handshakes/s: every request on a new connection (`Connection: close`; wrk does not resume
 *   sessions), so each request is one full TLS handshake;
 * - HTTPS requests/s: keep-alive connections, handshake cost amortised.
 *
 *   node --import tsx bench/tls.ts         (≈90 s; TLS_BENCH_SECONDS=2 TLS_BENCH_ROUNDS=1 for a quick run)
 *
 * Router and nginx each get one process / one worker (one core); wrk gets the other core. The
 * four measurements are interleaved over several rounds and each ratio is the median of the
 * rounds' ratios, so load changes on a shared machine hit both sides alike.
 * Prints the figures and the router/nginx ratios, and writes .bench-out/tls.json.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createCa, issueLeaf, loadCa } from '../packages/control-plane/src/domains/local-ca.ts';
import { NGINX, WRK, median, saveResult, startChild, startNginx } from './lib.ts';

const HOSTNAME = 'bench.example.test';
const CONNECTIONS = 50;

export interface WrkFigures { rps: number; p99Ms: number; requests: number; errors: number; non2xx: number }

export interface TlsBenchResult {
  benchmark: 'tls';
  at: string;
  setup: Record<string, unknown>;
  /** Per round. */
  results: { router: { handshake: WrkFigures; keepAlive: WrkFigures }; nginx: { handshake: WrkFigures; keepAlive: WrkFigures } }[];
  ratios: { routerVsNginxHandshakes: number; routerVsNginxHttpsRps: number; routerVsNginxHttpsP99: number };
}

function toMs(value: string, unit: string): number {
  const v = Number(value);
  return unit === 'us' ? v / 1000 : unit === 'ms' ? v : unit === 's' ? v * 1000 : v * 60_000;
}

function runWrk(port: number, seconds: number, close: boolean): Promise<WrkFigures> {
  // wrk dials 127.0.0.1 (no DNS for the test name): neither side gets a matching SNI name, both
  // serve their one certificate; the Host header picks the route.
  const args = ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '--latency', '-H', `Host: ${HOSTNAME}`, ...(close ? ['-H', 'Connection: close'] : []), `https://127.0.0.1:${port}/`];
  return new Promise((resolve, reject) => {
    const child = spawn(WRK, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
      const p99 = /^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(out);
      const total = /(\d+) requests in/.exec(out);
      if (code !== 0 || !rps || !p99 || !total) return reject(new Error(`wrk failed (${code}):\n${out}`));
      const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
      const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
      resolve({
        rps: Number(rps[1]), p99Ms: toMs(p99[1], p99[2]), requests: Number(total[1]),
        errors: sock ? sock.slice(1).reduce((n, x) => n + Number(x), 0) : 0, non2xx: non2xx ? Number(non2xx[1]) : 0,
      });
    });
  });
}

async function measure(name: string, port: number, seconds: number, close: boolean, warmup: boolean): Promise<WrkFigures> {
  process.stderr.write(`${name} ${close ? 'handshakes' : 'keep-alive'}: ${warmup ? 'warm-up 2s, ' : ''}run ${seconds}s…\n`);
  if (warmup) await runWrk(port, 2, close);
  const r = await runWrk(port, seconds, close);
  if (r.non2xx > 0 || r.errors > 0) process.stderr.write(`  warning: ${name}: ${r.non2xx} non-2xx responses, ${r.errors} socket errors\n`);
  return r;
}

/** Runs the benchmark, prints the table and ratios, writes .bench-out/tls.json. */
export async function benchTls(opts: { seconds?: number; rounds?: number } = {}): Promise<TlsBenchResult> {
  const seconds = opts.seconds ?? Number(process.env.TLS_BENCH_SECONDS ?? 5);
  const rounds = opts.rounds ?? Number(process.env.TLS_BENCH_ROUNDS ?? 3);
  for (const bin of [NGINX, WRK]) if (!existsSync(bin)) throw new Error(`${bin} not found`);
  const children: ChildProcess[] = [];
  const dir = await mkdtemp(join(tmpdir(), 'swg-bench-tls-'));
  try {
    // One certificate for both, as the platform would issue it (local CA, ECDSA P-256).
    const ca = await createCa('bench CA');
    const leaf = await issueLeaf(await loadCa(ca.certPem, ca.keyPem), [HOSTNAME]);
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    await writeFile(cert, leaf.certPem);
    await writeFile(key, leaf.keyPem, { mode: 0o600 });

    const backendPort = await startChild(children, 'router-child.ts', ['backend']);
    const routerPort = await startChild(children, 'tls-child.ts', [`127.0.0.1:${backendPort}`, HOSTNAME, cert, key]);
    const nginxPort = await startNginx({ children, dir, backendPort, tls: { cert, key, serverName: HOSTNAME } });

    const results: TlsBenchResult['results'] = [];
    for (let i = 0; i < rounds; i++) {
      const first = i === 0;
      const rh = await measure('router', routerPort, seconds, true, first);
      const nh = await measure('nginx', nginxPort, seconds, true, first);
      const rk = await measure('router', routerPort, seconds, false, first);
      const nk = await measure('nginx', nginxPort, seconds, false, first);
      results.push({ router: { handshake: rh, keepAlive: rk }, nginx: { handshake: nh, keepAlive: nk } });
    }
    const round = (n: number, d = 3): number => Math.round(n * 10 ** d) / 10 ** d;
    const ratios = {
      routerVsNginxHandshakes: round(median(results.map((r) => r.router.handshake.rps / r.nginx.handshake.rps))),
      routerVsNginxHttpsRps: round(median(results.map((r) => r.router.keepAlive.rps / r.nginx.keepAlive.rps))),
      routerVsNginxHttpsP99: round(median(results.map((r) => r.router.keepAlive.p99Ms / r.nginx.keepAlive.p99Ms))),
    };
    const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(24) : c.padStart(12))).join(' ');
    console.log(`\nTLS benchmark: wrk -t1 -c${CONNECTIONS} -d${seconds}s × ${rounds} interleaved rounds, ECDSA P-256, ${cpus().length} cores, Node ${process.version}`);
    console.log(line(['target (median)', 'req/s', 'p99 ms']));
    const med = (f: (r: TlsBenchResult['results'][number]) => WrkFigures): string[] => [Math.round(median(results.map((r) => f(r).rps))).toString(), round(median(results.map((r) => f(r).p99Ms)), 2).toString()];
    console.log(line(['router handshakes', ...med((r) => r.router.handshake)]));
    console.log(line(['nginx handshakes', ...med((r) => r.nginx.handshake)]));
    console.log(line(['router https keep-alive', ...med((r) => r.router.keepAlive)]));
    console.log(line(['nginx https keep-alive', ...med((r) => r.nginx.keepAlive)]));
    console.log(`\nrouter/nginx handshakes/s: ${ratios.routerVsNginxHandshakes}   router/nginx HTTPS req/s: ${ratios.routerVsNginxHttpsRps}   router/nginx HTTPS p99: ${ratios.routerVsNginxHttpsP99}x`);
    const result: TlsBenchResult = {
      benchmark: 'tls', at: new Date().toISOString(),
      setup: {
        tool: `wrk -t1 -c${CONNECTIONS} -d${seconds}s --latency (handshakes: Connection: close), ${rounds} interleaved rounds, ratios = median of per-round ratios`, certificate: 'ECDSA P-256 leaf from the local CA',
        cores: cpus().length, node: process.version, router: 'createRouter with tls, own process, no logger', nginx: 'worker_processes 1, ssl, upstream keepalive 128, access_log off',
      },
      results,
      ratios,
    };
    await saveResult('tls', result);
    return result;
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  benchTls().catch((err: unknown) => {
    process.stderr.write(`${String((err as Error).stack ?? err)}\n`);
    process.exit(1);
  });
}
