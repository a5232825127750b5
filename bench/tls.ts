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
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { createCa, issueLeaf, loadCa } from '../packages/control-plane/src/domains/local-ca.ts';
import { ROOT, median, saveResult, waitForPort } from './lib.ts';

const NGINX = process.env.NGINX_BIN ?? '/usr/sbin/nginx';
const WRK = process.env.WRK_BIN ?? '/usr/bin/wrk';
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

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function startChild(children: ChildProcess[], script: string, args: string[]): Promise<number> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', script), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise<number>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve((JSON.parse(buf.slice(0, nl)) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
    child.once('error', reject);
  });
}

async function startNginx(children: ChildProcess[], dir: string, backendPort: number, cert: string, key: string): Promise<number> {
  const port = await freePort();
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  // Same work as the router: TLS termination, keep-alive upstream, X-Forwarded-* and a request id.
  const conf = `${user}daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_timeout 65s;
  keepalive_requests 1000000;
  upstream app {
    server 127.0.0.1:${backendPort};
    keepalive 128;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }
  server {
    listen 127.0.0.1:${port} ssl;
    server_name ${HOSTNAME};
    ssl_certificate ${cert};
    ssl_certificate_key ${key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Port $server_port;
      proxy_set_header X-Request-Id $request_id;
      add_header X-Request-Id $request_id;
    }
  }
}
`;
  const confPath = join(dir, 'nginx.conf');
  await writeFile(confPath, conf);
  const child = spawn(NGINX, ['-c', confPath, '-p', dir, '-e', join(dir, 'error.log')], { stdio: ['ignore', 'inherit', 'inherit'] });
  children.push(child);
  await waitForPort('127.0.0.1', port, 10_000, 20);
  return port;
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
    const nginxPort = await startNginx(children, dir, backendPort, cert, key);

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
