/**
 * One-off processes (`shellwego run`, the Procfile `release:` phase): a command run once on a
 * ready node, in the app's sandbox with a release's artifact, env and limits, streamed over the bus
 * (subjects.oneOff*). The control plane keeps the session alive with keepalives; the agent kills
 * the process when they stop (this process died) or on `kill()` (the client went away), so no
 * one-off outlives whoever started it.
 */
import { randomBytes } from 'node:crypto';
import { DEFAULT_PLAN, PLANS, badRequest, conflict, notFound, subjects, unavailable } from '@shellwego/core';
import type { OneOffInputMessage, OneOffOutputMessage, OneOffStartMessage } from '@shellwego/core';
import type { NodeRow } from '@shellwego/store';
import type { ControlPlaneContext } from './context.ts';

export interface OneOffRequest {
  organizationId: string;
  appId: string;
  /** Default: the app's current release. */
  releaseId?: string;
  /** Shell command line, run by /bin/sh -c after the .profile.d scripts. */
  command: string;
  tty: boolean;
  cols?: number;
  rows?: number;
  /** Extra env for this run only, over the release's config. */
  env?: Record<string, string>;
  /** Who started it, for the event log ("run started by <by>: <command>"). */
  by?: string;
  /** The agent kills the process after this long without a keepalive. Default 30 s. */
  idleTimeoutMs?: number;
}

export interface OneOffExit {
  exitCode: number | null;
  signal: string | null;
  /** Set when the process could not be run (or its node went away); exitCode is null then. */
  error?: string;
}

export type OutputListener = (chunk: Buffer, stream: 'stdout' | 'stderr') => void;

export interface OneOffSession {
  readonly id: string;
  readonly nodeId: string;
  readonly releaseVersion: number;
  write(data: Buffer | string): void;
  /** Close stdin (without a TTY; on a TTY it sends ^D). */
  eof(): void;
  resize(cols: number, rows: number): void;
  signal(signal: string): void;
  kill(): void;
  /** Output produced before the first listener was attached is delivered to it first. */
  onOutput(listener: OutputListener): void;
  onExit(listener: (exit: OneOffExit) => void): void;
  readonly exited: Promise<OneOffExit>;
}

const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_COMMAND = 16 * 1024;
const NODE_FRESH_MS = 30_000;
/** The agent must answer (started or error) within this: it may have to fetch the artifact. */
const START_TIMEOUT_MS = 120_000;

/** Checks what a caller sent; throws a 400 that names the problem. */
export function validateOneOffRequest(req: Pick<OneOffRequest, 'command' | 'cols' | 'rows' | 'env'>): void {
  if (typeof req.command !== 'string' || req.command.trim() === '') throw badRequest('invalid_command', 'a command to run is required');
  if (req.command.length > MAX_COMMAND || req.command.includes('\0')) throw badRequest('invalid_command', `the command must be at most ${MAX_COMMAND} characters, without NUL`);
  for (const [name, v] of [['cols', req.cols], ['rows', req.rows]] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 1 || v > 1000)) throw badRequest('invalid_terminal_size', `${name} must be an integer between 1 and 1000`);
  }
  for (const [k, v] of Object.entries(req.env ?? {})) {
    if (!ENV_KEY_RE.test(k)) throw badRequest('invalid_env', `invalid environment variable name "${k}"`);
    if (typeof v !== 'string' || v.includes('\0')) throw badRequest('invalid_env', `invalid value for environment variable "${k}"`);
  }
}

/** A ready node with a recent heartbeat, chosen at random (one-offs are short and light). */
export function pickNode(nodes: NodeRow[], now = Date.now()): NodeRow | null {
  const ready = nodes.filter((n) => n.state === 'ready' && n.lastHeartbeatAt && now - Date.parse(n.lastHeartbeatAt) < NODE_FRESH_MS);
  return ready.length ? ready[Math.floor(Math.random() * ready.length)] : null;
}

/** Start a one-off process; throws ApiError (404 app/release, 409 nothing deployed, 503 no node) before anything runs. */
export async function startOneOff(cp: ControlPlaneContext, req: OneOffRequest): Promise<OneOffSession> {
  validateOneOffRequest(req);
  const { store } = cp;
  const app = await store.apps.get(req.organizationId, req.appId);
  if (!app) throw notFound('app', req.appId);
  const releaseId = req.releaseId ?? app.currentReleaseId;
  if (!releaseId) throw conflict('no_release', `app ${app.name} has no release yet: deploy it first`);
  const release = await store.releases.byId(req.organizationId, releaseId);
  if (!release || release.appId !== app.id) throw notFound('release', releaseId);
  const node = pickNode(await store.nodes.list());
  if (!node) throw unavailable('no_ready_node', 'no ready node to run the process on');
  const config = await cp.secrets.openJson<Record<string, string>>({ id: app.id, organizationId: app.organizationId }, release.configSealed);
  const plan = PLANS[app.plan] ?? PLANS[DEFAULT_PLAN];
  const id = `run-${randomBytes(10).toString('hex')}`;
  const msg: OneOffStartMessage = {
    sessionId: id,
    tty: req.tty,
    cols: req.cols ?? 80,
    rows: req.rows ?? 24,
    idleTimeoutMs: req.idleTimeoutMs ?? 30_000,
    spec: {
      instanceId: id, appId: app.id, appName: app.name, organizationId: app.organizationId, releaseId: release.id, releaseVersion: release.version,
      processType: 'run', index: 1, command: req.command,
      env: { ...config, SHELLWEGO_APP: app.name, SHELLWEGO_RELEASE: `v${release.version}`, SHELLWEGO_INSTANCE: id, ...(req.env ?? {}) },
      artifactDigest: release.artifactDigest, limits: { memoryMb: plan.memoryMb, cpus: plan.cpus, pids: plan.pids },
      port: 5000, restartGeneration: 0,
    },
  };
  const session = new Session(cp, id, node.id, release.version, msg.idleTimeoutMs);
  // Never the env: config values are secrets.
  const by = req.by ?? 'the platform';
  await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'run.started', message: `run started by ${by}: ${req.command}`, data: { session: id, releaseVersion: release.version, tty: req.tty, node: node.id } });
  void session.exited.then((e) =>
    cp.events.record({
      organizationId: app.organizationId, appId: app.id, type: 'run.finished',
      message: `run finished by ${by}: ${req.command} (${e.error ? `failed: ${e.error}` : e.signal ? `killed by ${e.signal}` : `exit ${e.exitCode}`})`,
      data: { session: id, exitCode: e.exitCode, signal: e.signal, error: e.error ?? null },
    }).catch((err) => cp.logger.warn({ err }, 'cannot record the run.finished event')),
  );
  await cp.bus.publish(subjects.oneOffStart(node.id), msg);
  return session;
}

/**
 * Run a command without a TTY and wait for it: every output line (stdout and stderr) goes to
 * `onLine`. Throws when it could not be run at all.
 */
export async function runToCompletion(
  cp: ControlPlaneContext,
  req: Omit<OneOffRequest, 'tty' | 'cols' | 'rows'>,
  onLine: (line: string, stream: 'stdout' | 'stderr') => void,
): Promise<{ exitCode: number | null; signal: string | null }> {
  const session = await startOneOff(cp, { ...req, tty: false });
  session.eof();
  const split = { stdout: new LineSplitter((l) => onLine(l, 'stdout')), stderr: new LineSplitter((l) => onLine(l, 'stderr')) };
  session.onOutput((chunk, stream) => split[stream].push(chunk));
  const exit = await session.exited;
  split.stdout.end();
  split.stderr.end();
  if (exit.error) throw new Error(`one-off ${req.command} could not run: ${exit.error}`);
  return { exitCode: exit.exitCode, signal: exit.signal };
}

/** Bytes in, whole lines out (UTF-8; a trailing partial line on end()). */
export class LineSplitter {
  private buf = Buffer.alloc(0);

  constructor(private readonly emit: (line: string) => void) {}

  push(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    let nl: number;
    while ((nl = this.buf.indexOf(0x0a)) >= 0) {
      this.emit(this.buf.subarray(0, nl).toString('utf8').replace(/\r$/, ''));
      this.buf = this.buf.subarray(nl + 1);
    }
  }

  end(): void {
    if (this.buf.length) this.emit(this.buf.toString('utf8').replace(/\r$/, ''));
    this.buf = Buffer.alloc(0);
  }
}

class Session implements OneOffSession {
  readonly exited: Promise<OneOffExit>;
  private finish!: (e: OneOffExit) => void;
  private done = false;
  private listeners: OutputListener[] = [];
  private early: Array<[Buffer, 'stdout' | 'stderr']> = [];
  private started = false;
  private readonly sub;
  private readonly timer: NodeJS.Timeout;
  private readonly startTimer: NodeJS.Timeout;

  constructor(
    private readonly cp: ControlPlaneContext,
    readonly id: string,
    readonly nodeId: string,
    readonly releaseVersion: number,
    idleTimeoutMs: number,
  ) {
    this.exited = new Promise((r) => (this.finish = r));
    this.sub = cp.bus.subscribe<OneOffOutputMessage>(subjects.oneOffOutput(nodeId, id), (m) => this.onMessage(m));
    // Keepalives well inside the agent's idle timeout; each tick also checks the node is still up.
    this.timer = setInterval(() => void this.tick(), Math.max(500, Math.floor(idleTimeoutMs / 3)));
    this.timer.unref();
    this.startTimer = setTimeout(() => {
      if (!this.started) this.end({ exitCode: null, signal: null, error: `node ${nodeId} did not start the process within ${START_TIMEOUT_MS / 1000}s` }, true);
    }, START_TIMEOUT_MS);
    this.startTimer.unref();
  }

  private send(m: OneOffInputMessage): void {
    if (this.done) return;
    this.cp.bus.publish(subjects.oneOffInput(this.nodeId, this.id), m).catch((err) => this.cp.logger.warn({ err, session: this.id }, 'one-off input publish failed'));
  }

  private async tick(): Promise<void> {
    if (this.done) return;
    this.send({ type: 'keepalive' });
    const node = await this.cp.store.nodes.byId(this.nodeId).catch(() => undefined);
    if (node && node.state !== 'ready') this.end({ exitCode: null, signal: null, error: `node ${this.nodeId} went ${node.state}` }, true);
  }

  private onMessage(m: OneOffOutputMessage): void {
    if (this.done || !m || typeof m !== 'object') return;
    switch (m.type) {
      case 'started':
        this.started = true;
        return;
      case 'output': {
        const chunk = Buffer.from(m.data, 'base64');
        const stream = m.stream === 'stderr' ? 'stderr' : 'stdout';
        if (this.listeners.length === 0) this.early.push([chunk, stream]);
        for (const l of this.listeners) l(chunk, stream);
        return;
      }
      case 'exit':
        return this.end({ exitCode: m.exitCode, signal: m.signal }, false);
      case 'error':
        return this.end({ exitCode: null, signal: null, error: m.message }, false);
    }
  }

  private end(e: OneOffExit, kill: boolean): void {
    if (this.done) return;
    if (kill) this.send({ type: 'kill' });
    this.done = true;
    clearInterval(this.timer);
    clearTimeout(this.startTimer);
    this.sub.unsubscribe();
    this.finish(e);
  }

  write(data: Buffer | string): void {
    const b = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    if (b.length) this.send({ type: 'data', data: b.toString('base64') });
  }

  eof(): void {
    this.send({ type: 'eof' });
  }

  resize(cols: number, rows: number): void {
    if (Number.isInteger(cols) && Number.isInteger(rows) && cols >= 1 && rows >= 1 && cols <= 1000 && rows <= 1000) this.send({ type: 'resize', cols, rows });
  }

  signal(signal: string): void {
    this.send({ type: 'signal', signal });
  }

  kill(): void {
    // The agent answers with the exit (SIGKILL); until then the session stays open.
    this.send({ type: 'kill' });
  }

  onOutput(listener: OutputListener): void {
    this.listeners.push(listener);
    if (this.listeners.length === 1) for (const [c, s] of this.early.splice(0)) listener(c, s);
  }

  onExit(listener: (exit: OneOffExit) => void): void {
    void this.exited.then(listener);
  }
}
