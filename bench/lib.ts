/** Shared helpers for benchmarks: timing, statistics, result files, child processes and nginx. */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '..');
export const OUT = join(ROOT, '.bench-out');
export const NGINX = process.env.NGINX_BIN ?? '/usr/sbin/nginx';
export const WRK = process.env.WRK_BIN ?? '/usr/bin/wrk';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

export const ms = (n: number) => `${n.toFixed(1)} ms`;

/** Polls until host:port accepts a TCP connection; resolves with the time it took. */
export async function waitForPort(host: string, port: number, timeoutMs = 30_000, everyMs = 2): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const s = connect({ host, port });
      s.once('connect', () => { s.destroy(); res(true); });
      s.once('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${host}:${port} did not accept connections within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function saveResult(name: string, data: unknown): Promise<void> {
  await mkdir(OUT, { recursive: true });
  await writeFile(join(OUT, `${name}.json`), JSON.stringify(data, null, 2) + '\n');
}

import { freePort } from '../test/helpers/platform.ts';

export { freePort };

/** Starts bench/<script> (added to `children`) and waits for its `{"port"}` line. */
export function startChild(children: ChildProcess[], script: string, args: string[]): Promise<number> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', script), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise<number>((resolvePort, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolvePort((JSON.parse(buf.slice(0, nl)) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`${script} ${args[0] ?? ''} exited with ${code}`)));
    child.once('error', reject);
  });
}

/**
 * Starts Debian nginx (added to `children`) as a reverse proxy to 127.0.0.1:backendPort, with
 * its config, pid and temp files in `dir`, on a free loopback port; HTTPS with `tls`. It does
 * the same work as the router: keep-alive upstream, X-Forwarded-* and a request id; one worker
 * (one core), no access log, keepalive_requests raised so it never recycles wrk's connections.
 */
export async function startNginx(opts: { children: ChildProcess[]; dir: string; backendPort: number; tls?: { cert: string; key: string; serverName: string } }): Promise<number> {
  const { children, dir, backendPort, tls } = opts;
  const port = await freePort();
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  const listen = tls
    ? `listen 127.0.0.1:${port} ssl;
    server_name ${tls.serverName};
    ssl_certificate ${tls.cert};
    ssl_certificate_key ${tls.key};
    ssl_protocols TLSv1.2 TLSv1.3;`
    : `listen 127.0.0.1:${port};`;
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
    ${listen}
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
  child.once('exit', (code) => {
    if (code) process.stderr.write(`nginx exited with ${code}\n`);
  });
  await waitForPort('127.0.0.1', port, 10_000, 20);
  return port;
}
