/**
 * Starts the real all-in-one platform as a child process (so tests can kill -9 it), on free
 * loopback ports, with its own data dir and its own bridge, and tears it all down afterwards.
 */
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { after, before } from 'node:test';
import { createClient } from '@shellwego/sdk';

const exec = promisify(execFile);
export const ROOT = resolve(import.meta.dirname, '../..');

import { freePort } from '../../packages/bus/src/testing.ts';

export { freePort };

export interface PlatformOptions {
  isolation?: 'sandbox' | 'none';
  env?: Record<string, string>;
  dataDir?: string;
}

export const ADMIN_EMAIL = 'admin@localhost';
export const ADMIN_PASSWORD = 'test-admin-password-1';

export class TestPlatform {
  proc: ChildProcess | null = null;
  output = '';
  apiUrl = '';
  routerPort = 0;
  httpsPort = 0;
  apiPort = 0;
  readonly bridge = `swgt${Math.random().toString(36).slice(2, 8)}`;
  readonly cidr = `10.${100 + Math.floor(Math.random() * 150)}.0.0/16`;

  constructor(readonly dataDir: string, private readonly opts: PlatformOptions) {}

  static async start(opts: PlatformOptions = {}): Promise<TestPlatform> {
    // mkdtemp is 0700, like the newcomer's `mktemp -d`: the platform must cope with it.
    const dir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'swg-it-')));
    const p = new TestPlatform(dir, opts);
    p.apiPort = await freePort();
    p.routerPort = await freePort();
    p.httpsPort = await freePort();
    await p.boot();
    return p;
  }

  env(): Record<string, string> {
    return {
      ...(process.env as Record<string, string>),
      SHELLWEGO_DATA_DIR: this.dataDir,
      SHELLWEGO_API_PORT: String(this.apiPort),
      SHELLWEGO_HTTP_PORT: String(this.routerPort),
      SHELLWEGO_HTTPS_PORT: String(this.httpsPort),
      SHELLWEGO_ADMIN_PASSWORD: ADMIN_PASSWORD,
      SHELLWEGO_ISOLATION: this.opts.isolation ?? 'sandbox',
      SHELLWEGO_BRIDGE: this.bridge,
      SHELLWEGO_BRIDGE_CIDR: this.cidr,
      SHELLWEGO_RECONCILE_MS: '1000',
      SHELLWEGO_LOG_LEVEL: 'warn',
      // Webhook tests fetch from git servers on loopback.
      SHELLWEGO_FETCH_ALLOW_PRIVATE: '1',
      ...this.opts.env,
    };
  }

  /** (Re)starts the platform process on the same data dir and ports. */
  async boot(): Promise<void> {
    this.apiUrl = `http://127.0.0.1:${this.apiPort}`;
    const proc = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'packages/server/src/main.ts'), 'up'], {
      cwd: ROOT, env: this.env(), stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    proc.stdout!.on('data', (d) => (this.output += d));
    proc.stderr!.on('data', (d) => (this.output += d));
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`platform exited with ${proc.exitCode}:\n${this.output}`);
      try {
        const r = await fetch(`${this.apiUrl}/v1/health`);
        if (r.ok) return;
      } catch {}
      await new Promise((r) => setTimeout(r, 150));
    }
    throw new Error(`platform did not come up:\n${this.output}`);
  }

  async token(email = ADMIN_EMAIL, password = ADMIN_PASSWORD, organization?: string): Promise<string> {
    const c = createClient({ baseUrl: this.apiUrl });
    const r = await c.call('login', { body: { email, password, ...(organization ? { organization } : {}) } });
    return r.token;
  }

  async client(token?: string) {
    return createClient({ baseUrl: this.apiUrl, token: token ?? (await this.token()) });
  }

  /** Simulates a crash: SIGKILL, no cleanup. */
  async kill9(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null) {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(t);
    }
  }

  /** Stops the platform and removes everything it left: sandboxes, bridge, data dir. */
  async destroy(): Promise<void> {
    await this.stop();
    // Anything still running from this data dir (e.g. after kill -9) is killed by its cgroup/process group.
    await exec('sh', ['-c', `pkill -9 -f "${this.dataDir}" || true`]).catch(() => {});
    await exec('ip', ['link', 'del', this.bridge]).catch(() => {});
    await rm(this.dataDir, { recursive: true, force: true }).catch(() => {});
  }

  /** A request through the router with `Host: <app>.localhost` (fetch() does not let tests set Host). */
  async viaRouter(app: string, path = '/', init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Response> {
    return new Promise((res, rej) => {
      const req = httpRequest({ host: '127.0.0.1', port: this.routerPort, path, method: init.method ?? 'GET', headers: { ...init.headers, host: `${app}.localhost` } }, (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => {
          const headers = new Headers();
          for (const [k, v] of Object.entries(r.headers)) if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
          res(new Response(r.statusCode === 204 || r.statusCode === 304 ? null : Buffer.concat(chunks), { status: r.statusCode, headers }));
        });
        r.on('error', rej);
      });
      req.on('error', rej);
      req.end(init.body);
    });
  }

  /** Runs the CLI with this platform's URL and the given token. */
  cli(args: string[], token: string, opts: { cwd?: string; env?: Record<string, string> } = {}) {
    return runCli(this.apiUrl, join(this.dataDir, 'cli-config'), args, token, opts);
  }
}

/** Runs the CLI against apiUrl with token; its config lives in configDir (XDG_CONFIG_HOME). */
export function runCli(apiUrl: string, configDir: string, args: string[], token: string, opts: { cwd?: string; env?: Record<string, string> } = {}) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((res) => {
    const child = spawn(process.execPath, [join(ROOT, 'packages/cli/bin/shellwego.js'), ...args], {
      cwd: opts.cwd ?? ROOT,
      env: { ...(process.env as Record<string, string>), SHELLWEGO_API_URL: apiUrl, SHELLWEGO_TOKEN: token, XDG_CONFIG_HOME: configDir, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (code) => res({ code: code ?? -1, stdout, stderr }));
  });
}

/** What suiteFor needs of a platform: a login, the CLI, its output for failures, and teardown. */
export interface SuitePlatform {
  output: string;
  token(): Promise<string>;
  cli(args: string[], token: string, opts?: { cwd?: string; env?: Record<string, string> }): Promise<{ code: number; stdout: string; stderr: string }>;
  destroy(): Promise<void>;
}

/**
 * Registers before/after hooks that start one platform (all-in-one or split) for the test file
 * with `start` and tear it down, and returns a handle whose fields are set once it runs.
 */
export function suiteFor<P extends SuitePlatform>(start: () => Promise<P>) {
  const s = {
    p: undefined as unknown as P,
    token: '',
    /** A scratch working directory for CLI runs (so nothing links the repository's examples). */
    cwd: '',
    run: (args: string[]) => s.p.cli(args, s.token, { cwd: s.cwd }),
    ok: (args: string[]) => cliOk(s.p, args, s.token, s.cwd),
  };
  before(async () => {
    s.p = await start();
    s.token = await s.p.token();
    s.cwd = await mkdtemp(join(tmpdir(), 'swg-cwd-'));
  });
  after(async () => {
    await s.p?.destroy();
    if (s.cwd) await rm(s.cwd, { recursive: true, force: true });
  });
  return s;
}

/** One all-in-one platform for the test file (see suiteFor). */
export function platformSuite(opts: PlatformOptions = {}) {
  return suiteFor(() => TestPlatform.start(opts));
}

/** Runs the CLI and fails the test with the CLI's and the platform's output when it exits non-zero. */
export async function cliOk(p: Pick<TestPlatform, 'cli' | 'output'>, args: string[], token: string, cwd: string) {
  const r = await p.cli(args, token, { cwd });
  if (r.code !== 0) {
    throw new Error(`shellwego ${args.join(' ')} failed (${r.code}):\n${r.stdout}\n${r.stderr}\n--- platform ---\n${p.output.slice(-3000)}`);
  }
  return r;
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 60_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}
