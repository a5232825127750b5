/**
 * Fakes for the CLI's own tests: an in-memory Io and a tiny HTTP server answering routes of the
 * table by name. A fake is fine here: these test the CLI layer, not the platform.
 */
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { routes } from '@shellwego/core';
import type { RouteDef, RouteName } from '@shellwego/core';
import type { Io } from './io.ts';
import { run } from './run.ts';

export interface Captured {
  write(chunk: string): boolean;
  isTTY: boolean;
  text: string;
}

function capture(isTTY = false): Captured {
  return {
    isTTY,
    text: '',
    write(chunk: string) {
      this.text += chunk;
      return true;
    },
  };
}

export interface FakeIo extends Io {
  stdout: Captured;
  stderr: Captured;
  opened: string[];
  interrupt(): void;
}

export function fakeIo(opts: { cwd: string; home: string; env?: Record<string, string>; tty?: boolean }): FakeIo {
  const handlers = new Set<() => void>();
  const io: FakeIo = {
    env: { ...opts.env },
    cwd: opts.cwd,
    home: opts.home,
    stdout: capture(opts.tty),
    stderr: capture(opts.tty),
    stdinIsTTY: false,
    opened: [],
    prompt: async () => {
      throw new Error('no terminal in tests');
    },
    openUrl(url) {
      io.opened.push(url);
    },
    onInterrupt(fn) {
      handlers.add(fn);
      return () => handlers.delete(fn);
    },
    interrupt() {
      for (const fn of [...handlers]) fn();
    },
    now: () => Date.now(),
  };
  return io;
}

/** Runs the CLI in-process; returns the exit code and what it printed. */
export async function runCli(io: FakeIo, argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const code = await run(argv, io);
  return { code, stdout: io.stdout.text, stderr: io.stderr.text };
}

export interface FakeRequest {
  route: RouteName;
  method: string;
  url: string;
  params: Record<string, string>;
  headers: IncomingMessage['headers'];
  body: Buffer;
  json(): unknown;
}

export type FakeHandler = (req: FakeRequest, res: ServerResponse) => unknown;

const compiled = (Object.entries(routes) as [RouteName, RouteDef][]).map(([name, def]) => {
  const keys: string[] = [];
  const re = new RegExp(`^${def.path.replace(/:([a-zA-Z]+)/g, (_, k: string) => (keys.push(k), '([^/]+)'))}$`);
  return { name, def, re, keys };
});

/** Answers routes of the table by name; unknown routes get the platform's 404 body. */
export class FakeApi {
  url = '';
  readonly requests: FakeRequest[] = [];
  private handlers = new Map<RouteName, FakeHandler>();
  private server: Server;

  constructor() {
    this.server = createServer((req, res) => void this.handle(req, res));
  }

  async start(): Promise<this> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    this.server.close();
  }

  /** A handler returning a value answers it as JSON with the route's status. */
  on(route: RouteName, handler: FakeHandler): this {
    this.handlers.set(route, handler);
    return this;
  }

  last(route?: RouteName): FakeRequest | undefined {
    const list = route ? this.requests.filter((r) => r.route === route) : this.requests;
    return list[list.length - 1];
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    try {
      for await (const c of req) chunks.push(c as Buffer);
    } catch {
      return;
    }
    const url = new URL(req.url ?? '/', 'http://x');
    const match = compiled.map((c) => ({ c, m: req.method === c.def.method ? c.re.exec(url.pathname) : null })).find((x) => x.m);
    if (!match) return sendJson(res, 404, { error: { code: 'not_found', message: `no route ${req.method} ${url.pathname}`, details: null } });
    const params = Object.fromEntries(match.c.keys.map((k, i) => [k, decodeURIComponent(match.m![i + 1])]));
    const body = Buffer.concat(chunks);
    const fr: FakeRequest = { route: match.c.name, method: req.method!, url: req.url!, params, headers: req.headers, body, json: () => JSON.parse(body.toString()) };
    this.requests.push(fr);
    const h = this.handlers.get(match.c.name);
    if (!h) return sendJson(res, 500, { error: { code: 'internal', message: `fake API has no handler for ${match.c.name}`, details: null } });
    try {
      const out = await h(fr, res);
      if (!res.headersSent && !res.writableEnded) sendJson(res, match.c.def.status ?? 200, out);
    } catch (err) {
      if (!res.headersSent) sendJson(res, 500, { error: { code: 'internal', message: String(err), details: null } });
    }
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

export function apiError(res: ServerResponse, status: number, code: string, message: string): void {
  sendJson(res, status, { error: { code, message, details: null } });
}

export function sse(res: ServerResponse, events: [string, unknown][], opts: { end?: boolean } = {}): void {
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8' });
  res.write(': connected\n\n');
  for (const [event, data] of events) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  if (opts.end !== false) res.end();
}

const T = '2026-11-23T12:00:00.000Z';

export const fixtures = {
  app: (name: string, over: Record<string, unknown> = {}) => ({
    id: `app_${name}`, name, organizationId: 'org_1', plan: 'standard', url: `http://${name}.localhost:8000`, currentRelease: null, createdAt: T, updatedAt: T, ...over,
  }),
  build: (over: Record<string, unknown> = {}) => ({
    id: 'bld_1', appId: 'app_1', state: 'pending', stack: null, sourceDigest: 'sha256:x', artifactDigest: null, processTypes: {}, cacheHit: null, error: null, releaseVersion: null, createdAt: T, finishedAt: null, ...over,
  }),
  instance: (over: Record<string, unknown> = {}) => ({
    id: 'ins_0000000000aaaaaaaaaaaaaaaa', appId: 'app_1', type: 'web', index: 1, releaseVersion: 1, nodeId: 'nod_1', state: 'running', desired: 'running', exitCode: null, signal: null, oomKilled: false, restarts: 0, address: '10.89.0.2:5000', startedAt: T, updatedAt: T, lastLog: [], ...over,
  }),
  release: (version: number, over: Record<string, unknown> = {}) => ({
    id: `rel_${version}`, appId: 'app_1', version, buildId: 'bld_1', description: `Deploy ${version}`, processTypes: { web: 'node server.js' }, configKeys: [], createdBy: 'admin@localhost', createdAt: T, current: false, ...over,
  }),
};
