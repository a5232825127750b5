/**
 * A real `nats-server` for tests (Debian package nats-server): loopback only, a free port, kept
 * across restarts so clients reconnect to the same URL.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A TCP port free on loopback right now (tests and benchmarks start servers on it). */
/** Polls `fn` until it holds (every 25 ms), or fails naming `what` after `timeoutMs`. */
export async function until(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

// Ports handed out by this process: a later listen(0) may be given a port freed a moment ago, and
// a test that reserved it for a server it has yet to start would then find it taken by itself.
const handedOut = new Set<number>();

export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((res, rej) => {
      const s = createServer();
      s.once('error', rej);
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => res(p));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

export class NatsServerProcess {
  private proc: ChildProcess | null = null;
  output = '';
  /** Clients must speak TLS; the server presents this certificate (chain) and key (PEM files). */
  tls: { certFile: string; keyFile: string } | null = null;

  private constructor(readonly port: number, private readonly bin: string, readonly storeDir: string | null, readonly config: string | null = null) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /**
   * `jetstream`: enable JetStream with file storage in a fresh temporary directory, kept across
   * kill()/boot() (a crash keeps the store) and removed by stop(). `config`: a nats-server config
   * file (e.g. one that includes the operator set-up of nats-auth.ts), under the flags above.
   */
  static async start(opts: { bin?: string; jetstream?: boolean; config?: string; tls?: { certFile: string; keyFile: string } } = {}): Promise<NatsServerProcess> {
    const storeDir = opts.jetstream ? await mkdtemp(join(tmpdir(), 'shellwego-nats-')) : null;
    const s = new NatsServerProcess(await freePort(), opts.bin ?? process.env.NATS_SERVER_BIN ?? 'nats-server', storeDir, opts.config ?? null);
    s.tls = opts.tls ?? null;
    try {
      await s.boot();
    } catch (err) {
      if (storeDir) await rm(storeDir, { recursive: true, force: true });
      throw err;
    }
    return s;
  }

  /** Starts the server (again) on the same port; resolves once it accepts clients. */
  async boot(): Promise<void> {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) throw new Error('nats-server is already running');
    const args = [...(this.config ? ['-c', this.config] : []), '-a', '127.0.0.1', '-p', String(this.port)];
    if (this.storeDir) args.push('-js', '-sd', this.storeDir);
    if (this.tls) args.push('--tls', '--tlscert', this.tls.certFile, '--tlskey', this.tls.keyFile);
    const proc = spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer) => {
        this.output += d;
        if (this.output.includes('Server is ready')) {
          this.output = '';
          resolve();
        }
      };
      proc.stdout!.on('data', onData);
      proc.stderr!.on('data', onData);
      proc.once('error', (err) => reject(new Error(`cannot run ${this.bin} (install the nats-server package): ${err.message}`)));
      proc.once('exit', (code) => reject(new Error(`nats-server exited with ${code} before it was ready:\n${this.output}`)));
    });
  }

  /** Kills the server (SIGKILL, like a crash) and waits until it is gone. */
  async kill(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.boot();
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null) {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    }
    if (this.storeDir) await rm(this.storeDir, { recursive: true, force: true });
  }
}
