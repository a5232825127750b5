/**
 * A constant-load generator for zero-downtime tests and benchmarks: `concurrency` loops, each
 * sending one keep-alive GET after another through the router (with a Host header), recording
 * every answer. Anything but the expected status — or a connection error — is a failure.
 */
import http from 'node:http';

export interface LoadResult {
  ok: number;
  failed: number;
  /** The first failures, for the assertion message. */
  errors: string[];
  /** Response bodies in order of completion (e.g. the version that answered). */
  bodies: string[];
  /** Milliseconds per successful request, in order of completion. */
  latencies: number[];
}

export interface Load {
  stop(): Promise<LoadResult>;
  /** Counts so far (the run keeps going). */
  peek(): { ok: number; failed: number };
}

export function startLoad(opts: { port: number; host: string; path?: string; concurrency?: number; expectStatus?: number; keepBodies?: boolean; pauseMs?: number }): Load {
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.concurrency ?? 4 });
  const result: LoadResult = { ok: 0, failed: 0, errors: [], bodies: [], latencies: [] };
  let running = true;
  const expect = opts.expectStatus ?? 200;
  const fail = (why: string) => {
    result.failed++;
    if (result.errors.length < 20) result.errors.push(`${new Date().toISOString()} ${why}`);
  };
  const one = () => new Promise<void>((resolve) => {
    const started = performance.now();
    const req = http.request({ host: '127.0.0.1', port: opts.port, path: opts.path ?? '/', agent, headers: { host: opts.host } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        if (res.statusCode === expect) {
          result.ok++;
          result.latencies.push(performance.now() - started);
          if (opts.keepBodies) result.bodies.push(body);
        } else fail(`status ${res.statusCode}: ${body.slice(0, 200)}`);
        resolve();
      });
      res.on('error', (err) => {
        fail(`response error: ${err.message}`);
        resolve();
      });
    });
    req.setTimeout(30_000, () => req.destroy(new Error('request timed out after 30 s')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      fail(`request error: ${err.code ?? err.message}`);
      resolve();
    });
    req.end();
  });
  const loops = Array.from({ length: opts.concurrency ?? 4 }, async () => {
    while (running) {
      await one();
      if (opts.pauseMs) await new Promise((r) => setTimeout(r, opts.pauseMs));
    }
  });
  return {
    peek: () => ({ ok: result.ok, failed: result.failed }),
    async stop() {
      running = false;
      await Promise.all(loops);
      agent.destroy();
      return result;
    },
  };
}

/** p-th percentile (0..100) of a list of numbers. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
