/**
 * Readiness probes. The default is a TCP connect on $PORT; an HTTP check sends `GET path` and
 * passes on 2xx/3xx within the timeout. Probes go straight to the instance's address (its own
 * IP on the bridge, or 127.0.0.1 without isolation), not through the router.
 */
import http from 'node:http';
import net from 'node:net';
import type { Readiness } from '@shellwego/core';

export type ProbeResult = { ok: true } | { ok: false; why: string };

/** One TCP connect attempt; true when something accepts on host:port. */
export function canConnect(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok: boolean) => {
      sock.removeAllListeners();
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** One HTTP GET; the body is read and dropped (bounded by the timeout). */
export function httpCheck(host: string, port: number, path: string, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const req = http.request({
      host, port, path, method: 'GET', agent: false,
      headers: { 'user-agent': 'shellwego-health/1', host: `${host}:${port}`, connection: 'close' },
    }, (res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      res.once('end', () => done(status >= 200 && status < 400 ? { ok: true } : { ok: false, why: `GET ${path} answered ${status}` }));
      res.once('error', () => done({ ok: false, why: `GET ${path}: response cut short` }));
    });
    const timer = setTimeout(() => done({ ok: false, why: `GET ${path} timed out after ${timeoutMs} ms` }), timeoutMs);
    req.once('error', (err: NodeJS.ErrnoException) => done({ ok: false, why: `GET ${path}: ${err.code ?? err.message}` }));
    req.end();
  });
}

export async function probe(readiness: Readiness | undefined, host: string, port: number): Promise<ProbeResult> {
  if (readiness?.type === 'http') return httpCheck(host, port, readiness.path, readiness.timeoutMs);
  return (await canConnect(host, port, 500)) ? { ok: true } : { ok: false, why: `nothing accepts connections on port ${port}` };
}

/**
 * Consecutive-result thresholds: `healthy` passes in a row make an instance ready, `unhealthy`
 * failures in a row take it out. A single flap never changes the verdict.
 */
export class Thresholds {
  private passes = 0;
  private failures = 0;

  constructor(private readonly healthy: number, private readonly unhealthy: number) {}

  /** Records a result; returns 'healthy' / 'unhealthy' when the verdict crosses a threshold now. */
  record(ok: boolean): 'healthy' | 'unhealthy' | null {
    if (ok) {
      this.failures = 0;
      this.passes++;
      return this.passes === this.healthy ? 'healthy' : null;
    }
    this.passes = 0;
    this.failures++;
    return this.failures === this.unhealthy ? 'unhealthy' : null;
  }
}
