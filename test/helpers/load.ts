/**
 * A constant-load generator for zero-downtime tests and benchmarks: keep-alive HTTP requests
 * through the router (with a Host header), one after another per connection, counting anything
 * but a 200 as a failure (a refused or reset connection, a 502/503 from the router, a timeout).
 * `start()` begins, `stop()` lets in-flight requests finish and returns the counts.
 */
import { Agent, request as httpRequest } from 'node:http';
import { performance } from 'node:perf_hooks';

export interface LoadOptions {
  port: number;
  /** Where the router listens. Default 127.0.0.1. */
  address?: string;
  /** Host header (`<app>.localhost`). */
  host: string;
  path?: string;
  /** Parallel keep-alive connections, each sending one request after another. Default 4. */
  concurrency?: number;
  /** Pause between a worker's requests, to leave CPU to the platform. Default 5 ms. */
  pauseMs?: number;
  /** Also keep every successful body in order of completion (`sequence`). */
  keepSequence?: boolean;
}

export interface LoadResult {
  ok: number;
  failed: number;
  /** One line per failed request (the first 100): status and body, or the connection error. */
  errors: string[];
  /** Milliseconds per successful request. */
  latencies: number[];
  /** Distinct response bodies seen (e.g. instance boot stamps), with counts; the first 1000 kinds. */
  bodies: Map<string, number>;
  /** Successful bodies in order of completion, with `keepSequence`. */
  sequence: string[];
}

export class LoadGenerator {
  private readonly agent: Agent;
  private running = false;
  private workers: Promise<void>[] = [];
  readonly result: LoadResult = { ok: 0, failed: 0, errors: [], latencies: [], bodies: new Map(), sequence: [] };

  constructor(private readonly opts: LoadOptions) {
    this.agent = new Agent({ keepAlive: true, maxSockets: opts.concurrency ?? 4 });
  }

  start(): this {
    if (this.running) throw new Error('load generator already running');
    this.running = true;
    for (let i = 0; i < (this.opts.concurrency ?? 4); i++) this.workers.push(this.worker());
    return this;
  }

  /** Resolves once `n` more requests succeeded than when called (proof traffic flows now). */
  async succeeded(n: number, timeoutMs = 60_000): Promise<void> {
    const target = this.result.ok + n;
    const deadline = Date.now() + timeoutMs;
    while (this.result.ok < target) {
      if (!this.running) throw new Error('load generator is stopped');
      if (Date.now() > deadline) throw new Error(`only ${this.result.ok - target + n} of ${n} requests succeeded in ${timeoutMs} ms; errors: ${this.result.errors.slice(-5).join(' | ')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop(): Promise<LoadResult> {
    this.running = false;
    await Promise.all(this.workers);
    this.workers = [];
    this.agent.destroy();
    return this.result;
  }

  private async worker(): Promise<void> {
    while (this.running) {
      await this.once();
      if (this.opts.pauseMs !== 0) await new Promise((r) => setTimeout(r, this.opts.pauseMs ?? 5));
    }
  }

  private once(): Promise<void> {
    const started = performance.now();
    return new Promise((resolve) => {
      let done = false;
      const fail = (why: string) => {
        if (done) return;
        done = true;
        this.result.failed++;
        if (this.result.errors.length < 100) this.result.errors.push(`${new Date().toISOString()} ${why}`);
        resolve();
      };
      const req = httpRequest({ host: this.opts.address ?? '127.0.0.1', port: this.opts.port, path: this.opts.path ?? '/', agent: this.agent, headers: { host: this.opts.host } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => fail(`response error: ${err.message}`));
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString();
          if (res.statusCode !== 200) return fail(`status ${res.statusCode}: ${body.slice(0, 200)}`);
          if (done) return;
          done = true;
          this.result.ok++;
          this.result.latencies.push(performance.now() - started);
          const { bodies } = this.result;
          if (bodies.has(body) || bodies.size < 1000) bodies.set(body, (bodies.get(body) ?? 0) + 1);
          if (this.opts.keepSequence) this.result.sequence.push(body);
          resolve();
        });
      });
      req.setTimeout(30_000, () => req.destroy(new Error('no response in 30 s')));
      req.on('error', (err) => fail(`request error: ${err.message}`));
      req.end();
    });
  }
}

