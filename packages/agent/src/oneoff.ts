/**
 * One-off processes (`shellwego run <app> -- <cmd>`, the Procfile `release:` phase): a command run
 * once, in the same sandbox as the app's instances (its release's artifact, env and limits),
 * optionally on a terminal, and streamed to the control plane over the bus. Unlike instances they
 * are never restarted and never outlive their controller: no input or keepalive for
 * `idleTimeoutMs`, an explicit kill, or the agent stopping kills the whole sandbox.
 *
 * Terminal sessions: the launch chain runs under a host pty (node-pty) and the command under
 * util-linux `script`, which allocates a second pty *inside* the sandbox's own devpts. So the
 * command sees a /dev/pts/N of its own (bwrap would otherwise show the host pty as /dev/console),
 * gets job control, and resizes follow the host pty (SIGWINCH reaches `script`, which copies the
 * size inwards: the launcher keeps its session for that, see SandboxStdio.tty).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import pty from 'node-pty';
import type { IPty } from 'node-pty';
import type { Logger } from 'pino';
import { subjects } from '@shellwego/core';
import type { InstanceSpec, OneOffInputMessage, OneOffOutputMessage, OneOffStartMessage } from '@shellwego/core';
import type { Bus, Subscription } from '@shellwego/bus';
import type { SandboxHandle, SandboxRuntime, SandboxSpec, SandboxStdio } from '@shellwego/sandbox';
import { copyAppDir } from './artifacts.ts';
import type { ArtifactCache } from './artifacts.ts';
import { appUid, commandLine, specProblem } from './identity.ts';

export interface OneOffDeps {
  nodeId: string;
  bus: Bus;
  runtime: SandboxRuntime;
  artifacts: ArtifactCache;
  /** Working dirs of sessions: `<root>/<sessionId>/{app,state}`; leftovers are removed on start. */
  root: string;
  logger: Logger;
  isRoot: boolean;
}

/** Session ids become sandbox ids, directory names and subject tokens: keep them plain. */
export const SESSION_ID_RE = /^[a-z0-9][a-z0-9_-]{7,62}$/;
/** Signals a client may send; SIGKILL goes through `kill`. */
export const ONE_OFF_SIGNALS = new Set(['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2']);
const MAX_DIM = 1000;
/** Output after the exit is gathered for at most this long (a daemonised child may hold the pipe). */
const DRAIN_MS = 2000;

/** Why a start message cannot be run, or null. */
export function startProblem(m: OneOffStartMessage): string | null {
  if (!m || typeof m !== 'object') return 'start message is not an object';
  if (typeof m.sessionId !== 'string' || !SESSION_ID_RE.test(m.sessionId)) return `invalid session id ${JSON.stringify(m.sessionId)}`;
  const problem = specProblem(m.spec);
  if (problem) return problem;
  if (m.spec.instanceId !== m.sessionId) return 'spec.instanceId must be the session id';
  if (typeof m.tty !== 'boolean') return 'tty must be a boolean';
  for (const d of [m.cols, m.rows]) if (!Number.isInteger(d) || d < 1 || d > MAX_DIM) return `terminal size must be 1..${MAX_DIM}`;
  if (!Number.isInteger(m.idleTimeoutMs) || m.idleTimeoutMs < 1000) return 'idleTimeoutMs must be at least 1000';
  return null;
}

/**
 * The argv run in the sandbox: the .profile.d scripts, then the command; on a terminal through
 * `script` (inner pty, exit status passed through with -e, typescript to /dev/null).
 */
export function oneOffArgv(command: string, tty: boolean, appRoot: string): string[] {
  const profile = `for f in ${appRoot}/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; `;
  if (!tty) return ['/bin/sh', '-c', profile + commandLine(command)];
  return ['/bin/sh', '-c', profile + 'SHELL=${SHELL:-/bin/sh} exec script -q -e -c "$1" /dev/null', 'swg-run', commandLine(command)];
}

export class OneOffs {
  private sessions = new Map<string, OneOffSession>();
  private sub: Subscription | null = null;
  private stopped = false;

  constructor(private readonly deps: OneOffDeps) {}

  /** Removes what sessions of an earlier agent process left (they died with it), then listens. */
  async start(): Promise<void> {
    await fsp.mkdir(this.deps.root, { recursive: true, mode: 0o711 });
    for (const name of await fsp.readdir(this.deps.root)) {
      if (!SESSION_ID_RE.test(name)) continue;
      const dir = path.join(this.deps.root, name);
      await this.deps.runtime.cleanup(name, path.join(dir, 'state')).catch((err) => this.deps.logger.warn({ err, session: name }, 'cannot clean up a stale one-off sandbox'));
      await fsp.rm(dir, { recursive: true, force: true }).catch(() => {});
    }
    this.sub = this.deps.bus.subscribe<OneOffStartMessage>(subjects.oneOffStart(this.deps.nodeId), (m) => this.onStart(m));
  }

  /** Kills every session (no orphans) and waits until each is cleaned up. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.sub?.unsubscribe();
    this.sub = null;
    const all = [...this.sessions.values()];
    for (const s of all) s.kill('agent stopping');
    await Promise.all(all.map((s) => s.done));
  }

  /** Artifacts in use by running sessions (kept by the agent's artifact GC). */
  digests(): string[] {
    return [...this.sessions.values()].map((s) => s.spec.artifactDigest);
  }

  private onStart(m: OneOffStartMessage): void {
    const problem = startProblem(m);
    if (problem) {
      this.deps.logger.warn({ session: m?.sessionId, problem }, 'one-off start refused');
      if (typeof m?.sessionId === 'string' && SESSION_ID_RE.test(m.sessionId)) {
        void this.deps.bus.publish(subjects.oneOffOutput(this.deps.nodeId, m.sessionId), { type: 'error', message: `agent refused the one-off: ${problem}` } satisfies OneOffOutputMessage);
      }
      return;
    }
    if (this.stopped || this.sessions.has(m.sessionId)) return;
    const s = new OneOffSession(this.deps, m);
    this.sessions.set(m.sessionId, s);
    void s.done.finally(() => this.sessions.delete(m.sessionId));
  }
}

class OneOffSession {
  readonly spec: InstanceSpec;
  readonly done: Promise<void>;
  private readonly dir: string;
  private readonly sub: Subscription;
  private readonly watchdog: NodeJS.Timeout;
  private lastInput = Date.now();
  private handle: SandboxHandle | null = null;
  private term: IPty | null = null;
  private child: ChildProcess | null = null;
  /** Input that arrived before the process had its stdio. */
  private pending: OneOffInputMessage[] = [];
  private killedBecause: string | null = null;
  private drained: Promise<void> = Promise.resolve();

  constructor(
    private readonly deps: OneOffDeps,
    private readonly msg: OneOffStartMessage,
  ) {
    this.spec = msg.spec;
    this.dir = path.join(deps.root, msg.sessionId);
    this.sub = deps.bus.subscribe<OneOffInputMessage>(subjects.oneOffInput(deps.nodeId, msg.sessionId), (m) => this.onInput(m));
    const every = Math.min(5000, Math.max(250, Math.floor(msg.idleTimeoutMs / 4)));
    this.watchdog = setInterval(() => {
      if (Date.now() - this.lastInput > msg.idleTimeoutMs) this.kill(`no input or keepalive for ${msg.idleTimeoutMs} ms`);
    }, every);
    this.watchdog.unref();
    this.done = this.run();
  }

  kill(reason: string): void {
    if (this.killedBecause) return;
    this.killedBecause = reason;
    this.deps.logger.info({ session: this.msg.sessionId, reason }, 'killing one-off process');
    void this.handle?.kill('SIGKILL').catch(() => {});
  }

  private publish(m: OneOffOutputMessage): void {
    this.deps.bus.publish(subjects.oneOffOutput(this.deps.nodeId, this.msg.sessionId), m).catch((err) => this.deps.logger.warn({ err }, 'bus publish failed'));
  }

  private output(stream: 'stdout' | 'stderr', chunk: Buffer | string): void {
    const data = (typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk).toString('base64');
    this.publish({ type: 'output', stream, data });
  }

  private onInput(m: OneOffInputMessage): void {
    if (!m || typeof m !== 'object') return;
    this.lastInput = Date.now();
    if (m.type === 'keepalive') return;
    if (m.type === 'kill') return this.kill('killed by the control plane');
    if (!this.term && !this.child) {
      this.pending.push(m);
      return;
    }
    this.apply(m);
  }

  private apply(m: OneOffInputMessage): void {
    const tty = this.msg.tty;
    switch (m.type) {
      case 'data': {
        if (typeof m.data !== 'string') return;
        const bytes = Buffer.from(m.data, 'base64');
        if (this.term) this.term.write(bytes);
        else if (this.child?.stdin?.writable) this.child.stdin.write(bytes);
        return;
      }
      case 'eof':
        if (this.term) this.term.write('\x04');
        else this.child?.stdin?.end();
        return;
      case 'resize':
        if (this.term && Number.isInteger(m.cols) && Number.isInteger(m.rows) && m.cols >= 1 && m.rows >= 1 && m.cols <= MAX_DIM && m.rows <= MAX_DIM) {
          this.term.resize(m.cols, m.rows);
        }
        return;
      case 'signal':
        if (!ONE_OFF_SIGNALS.has(m.signal)) return;
        // On a terminal ^C / ^\ go through the line discipline, like a keypress: they reach the
        // foreground job inside, not `script` itself.
        if (tty && this.term && m.signal === 'SIGINT') this.term.write('\x03');
        else if (tty && this.term && m.signal === 'SIGQUIT') this.term.write('\x1c');
        else void this.handle?.kill(m.signal as NodeJS.Signals).catch(() => {});
        return;
      default:
        return;
    }
  }

  private stdio(): SandboxStdio {
    const { tty, cols, rows } = this.msg;
    return {
      tty,
      spawn: async (file, args, opts) => {
        if (tty) {
          // encoding null: raw bytes (a UTF-8 sequence split across reads must not be mangled).
          const term = pty.spawn(file, args, { name: 'xterm-256color', cols, rows, cwd: opts.cwd, env: opts.env, encoding: null });
          let exited!: () => void;
          this.drained = new Promise<void>((r) => (exited = r));
          term.onData((d: string | Buffer) => this.output('stdout', d));
          term.onExit(() => exited());
          this.term = term;
          return { pid: term.pid };
        }
        const child = spawn(file, args, { cwd: opts.cwd, env: opts.env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
        await new Promise<void>((resolve, reject) => {
          child.once('spawn', resolve);
          child.once('error', reject);
        });
        child.stdin!.on('error', () => {}); // EPIPE once the command stopped reading
        child.stdout!.on('data', (d: Buffer) => this.output('stdout', d));
        child.stderr!.on('data', (d: Buffer) => this.output('stderr', d));
        this.drained = Promise.all([once(child.stdout!, 'close'), once(child.stderr!, 'close')]).then(() => {});
        this.child = child;
        return { pid: child.pid!, child };
      },
    };
  }

  private async run(): Promise<void> {
    const { spec, sessionId, tty } = this.msg;
    const appDir = path.join(this.dir, 'app');
    const stateDir = path.join(this.dir, 'state');
    const isolation = this.deps.runtime.isolation;
    try {
      // Searchable (not listable) by the app user, like instance dirs: the sandbox reaches /app itself.
      await fsp.mkdir(this.dir, { mode: 0o711 });
      await fsp.mkdir(stateDir, { mode: 0o700 });
      const uid = this.deps.isRoot ? appUid(spec.appId) : process.getuid!();
      const gid = this.deps.isRoot ? uid : process.getgid!();
      const artifact = await this.deps.artifacts.ensure(spec.artifactDigest);
      await copyAppDir(artifact, appDir, this.deps.isRoot ? { uid, gid } : null);
      const appRoot = isolation === 'sandbox' ? '/app' : appDir;
      const sandbox: SandboxSpec = {
        id: sessionId,
        argv: oneOffArgv(spec.command, tty, appRoot),
        env: { ...(tty ? { TERM: 'xterm-256color' } : {}), ...spec.env, PORT: String(spec.port), DYNO: `run.${spec.index}`, HOME: appRoot },
        cwd: '/app',
        mounts: [{ source: appDir, target: '/app', readonly: false }],
        uid,
        gid,
        limits: spec.limits,
        network: { mode: isolation === 'sandbox' ? 'bridge' : 'host' },
        logFile: path.join(this.dir, 'launcher.log'),
        stateDir,
        stdio: this.stdio(),
      };
      if (this.killedBecause) throw new Error(`killed before it started: ${this.killedBecause}`);
      this.handle = await this.deps.runtime.start(sandbox);
      this.deps.logger.info({ session: sessionId, app: spec.appId, tty, pid: this.handle.pid }, 'one-off process started');
      this.publish({ type: 'started' });
      for (const m of this.pending.splice(0)) this.apply(m);
      if (this.killedBecause) void this.handle.kill('SIGKILL').catch(() => {});
      const exit = await this.handle.wait();
      await within(this.drained, DRAIN_MS);
      this.publish({ type: 'exit', exitCode: exit.exitCode, signal: exit.signal });
      this.deps.logger.info({ session: sessionId, exit, killed: this.killedBecause }, 'one-off process ended');
    } catch (err) {
      this.deps.logger.warn({ err, session: sessionId }, 'one-off process failed');
      this.publish({ type: 'error', message: (err as Error).message });
    } finally {
      clearInterval(this.watchdog);
      this.sub.unsubscribe();
      // Leftovers (daemons the command started) go with the sandbox: nothing outlives the session.
      await this.deps.runtime.cleanup(sessionId, stateDir).catch((err) => this.deps.logger.warn({ err, session: sessionId }, 'one-off sandbox cleanup failed'));
      try {
        this.term?.kill('SIGKILL');
      } catch {}
      this.child?.stdin?.destroy();
      await fsp.rm(this.dir, { recursive: true, force: true }).catch(() => {});
    }
  }
}

function once(emitter: NodeJS.EventEmitter, event: string): Promise<void> {
  return new Promise((r) => emitter.once(event, () => r()));
}

async function within(p: Promise<unknown>, ms: number): Promise<void> {
  let t: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((r) => (t = setTimeout(r, ms)))]);
  clearTimeout(t);
}
