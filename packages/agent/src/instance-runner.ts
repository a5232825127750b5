/**
 * One instance on this node, from first start to removal (Nomad's "task runner"): unpack and
 * copy the app, start the sandbox, wait for a web process to listen, watch it, restart it with
 * backoff when it crashes, replace it on a restart command, stop it gracefully, and publish its
 * output and status. One runner's failures stay inside it.
 */
import { probe, Thresholds } from './readiness.ts';
export { canConnect } from './readiness.ts';
import { promises as fsp } from 'node:fs';
import type { Logger } from 'pino';
import type { InstanceSpec, InstanceState, InstanceStatusMessage, LogLineT } from '@shellwego/core';
import type { SandboxExit, SandboxHandle, SandboxRuntime, SandboxSpec } from '@shellwego/sandbox';
import { readFinalExit } from '@shellwego/sandbox';
import { copyAppDir } from './artifacts.ts';
import { withImage } from './image-apps.ts';
import type { ArtifactCache } from './artifacts.ts';
import { commandLine, dynoName } from './identity.ts';
import { LogTail, lastLines } from './log-tail.ts';
import type { ActualPhase } from './reconcile.ts';
import { writeRecord } from './record.ts';
import type { InstancePaths, InstanceRecord } from './record.ts';
import type { EnvStore } from './secrets.ts';
import type { VolumeDirs } from './volumes.ts';

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** A process that ran this long resets the backoff. */
  resetAfterMs: number;
}

export interface RunnerContext {
  nodeId: string;
  runtime: SandboxRuntime;
  artifacts: ArtifactCache;
  /** Where instance env lives (tmpfs or memory): instance.json never holds it. */
  envs: EnvStore;
  logger: Logger;
  stopGraceMs: number;
  bootTimeoutMs: number;
  backoff: BackoffOptions;
  /** Owner of app files (null when the agent cannot chown, i.e. not root). */
  owner: (spec: InstanceSpec) => { uid: number; gid: number } | null;
  /** A port for isolation `none` (all instances share 127.0.0.1); `preferred` is kept when free. */
  pickPort: (runner: InstanceRunner, preferred: number | null) => Promise<number>;
  report: (msg: InstanceStatusMessage) => void;
  publishLogs: (appId: string, lines: LogLineT[]) => void;
  /** The runner stopped its instance and removed its directory. */
  onGone: (runner: InstanceRunner) => void;
  logMaxBytes: number;
  /** Volume directories of this node (`<dataDir>/volumes`). */
  volumes: VolumeDirs;
}

type Command = 'run' | 'stop' | 'detach';

/** Where a restored record's env came from: the EnvStore, inline in an old record, or nowhere (unknown). */
export type EnvSource = 'store' | 'inline' | null;

const UNKNOWN_EXIT: SandboxExit = { exitCode: null, signal: null, oomKilled: false };
const PERSIST_THROTTLE_MS = 2000;

/** `p`, or `fallback` after `ms` (the timer is cleared either way, so it never holds the process). */
async function within<T, F>(p: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<F>((r) => (t = setTimeout(() => r(fallback), ms)))]);
  } finally {
    clearTimeout(t);
  }
}

export class InstanceRunner {
  private cmd: Command = 'run';
  private nextSpec: InstanceSpec | null = null;
  private handle: SandboxHandle | null = null;
  private state: InstanceState;
  private exit: SandboxExit | null = null;
  private lastLog: string[] | undefined;
  private wake: () => void = () => {};
  private woken: Promise<void> = Promise.resolve();
  private loop: Promise<void> = Promise.resolve();
  private tail: LogTail;
  private persistTimer: NodeJS.Timeout | null = null;
  private persisting: Promise<void> = Promise.resolve();
  private gone = false;
  /** False when a restored record's env was lost (reboot cleared tmpfs): never start without it. */
  private envKnown = true;
  /** The env last written to the EnvStore (JSON), to write it only when it changes. */
  private envStored: string | null = null;
  private envWaitLogged = false;

  private constructor(
    private readonly ctx: RunnerContext,
    readonly paths: InstancePaths,
    private readonly record: InstanceRecord,
    private readonly isolation: SandboxRuntime['isolation'],
  ) {
    this.state = ({ starting: 'starting', running: 'running', backoff: 'crashed', stopping: 'stopping' } as const)[record.phase];
    this.exit = record.lastExit;
    this.lastLog = record.lastLog?.length ? record.lastLog : undefined;
    this.resetWake();
    this.tail = new LogTail({
      file: paths.log,
      offset: record.logOffset,
      maxFileBytes: ctx.logMaxBytes,
      onLines: (lines) => this.onLines(lines),
      onTruncate: () => {
        this.record.runLogOffset = 0;
        this.record.logOffset = 0;
        this.schedulePersist();
      },
    });
  }

  // ---------- construction ----------

  /** A new instance: create its directory and record, then start it. */
  static async create(ctx: RunnerContext, paths: InstancePaths, spec: InstanceSpec, base: Pick<InstanceRecord, 'sandboxId' | 'uid' | 'gid'>): Promise<InstanceRunner> {
    await fsp.mkdir(paths.dir, { recursive: true, mode: 0o711 });
    await fsp.chmod(paths.dir, 0o711);
    const record: InstanceRecord = {
      // Without namespaces the spec's port (5000 for every web instance) is the one port sure to be
      // contended: 0 makes the first start pick one (isolation `none`).
      v: 1, spec, ...base, port: ctx.runtime.isolation === 'none' ? 0 : spec.port, restarts: 0, consecutiveCrashes: 0, logOffset: 0, runLogOffset: 0,
      restartGeneration: spec.restartGeneration, phase: 'starting', desired: 'running', pid: null, startedAt: null, ip: null,
      runningSince: null, lastExit: null, lastLog: [],
    };
    // An output.log left by an earlier life of this id (stopped, then assigned again) is not news.
    record.logOffset = record.runLogOffset = await fileSize(paths.log);
    const r = new InstanceRunner(ctx, paths, record, ctx.runtime.isolation);
    await r.persistNow();
    r.tail.start();
    r.loop = r.main({});
    return r;
  }

  /**
   * An instance found on disk when the agent starts: adopt its process when it still runs (no
   * restart), otherwise account for how it ended while we were away and carry on from there.
   */
  static async restore(ctx: RunnerContext, paths: InstancePaths, record: InstanceRecord, envSource: EnvSource): Promise<InstanceRunner> {
    const r = new InstanceRunner(ctx, paths, record, ctx.runtime.isolation);
    r.envKnown = envSource !== null;
    if (envSource === 'store') r.envStored = JSON.stringify(record.spec.env);
    // A record of an earlier version held the env inline: move it to the EnvStore now.
    if (envSource === 'inline') await r.persistNow();
    let handle: SandboxHandle | null = null;
    if (record.pid !== null) {
      handle = await ctx.runtime.adopt(record.sandboxId, paths.state).catch((err) => {
        ctx.logger.warn({ err, instance: record.spec.instanceId }, 'cannot adopt instance');
        return null;
      });
    }
    r.handle = handle;
    r.tail.start();
    if (record.desired === 'stopped') {
      r.cmd = 'stop';
      r.state = 'stopping';
      r.loop = r.main({ handle: handle ?? undefined });
    } else if (handle) {
      ctx.logger.info({ instance: record.spec.instanceId, pid: handle.pid }, 'adopted running instance');
      r.state = record.phase === 'running' ? 'running' : 'starting';
      r.loop = r.main({ handle });
    } else if (record.pid === null || record.phase === 'backoff') {
      // Never started, or its crash was already reported: start it now.
      r.loop = r.main({});
    } else {
      const exit = (await readFinalExit(paths.state).catch(() => null)) ?? UNKNOWN_EXIT;
      ctx.logger.info({ instance: record.spec.instanceId, exit }, 'instance ended while the agent was away');
      // Account for the crash before the agent's first report, so that report is already true.
      await r.tail.drain(true);
      await r.crashed(exit, []);
      r.loop = r.main({ backoff: true });
    }
    return r;
  }

  // ---------- what the agent sees ----------

  get instanceId(): string {
    return this.record.spec.instanceId;
  }

  /** The spec the instance converges to (the replacement's, while one is under way). */
  get spec(): InstanceSpec {
    return this.nextSpec ?? this.record.spec;
  }

  /** True while the env is unknown (lost with a reboot) and no assignment supplied it yet. */
  get needsEnv(): boolean {
    return !this.envKnown && this.nextSpec === null;
  }

  /**
   * The env of the assignment for this instance, when the restored record's env was lost: the
   * instance (re)starts with it, and an adopted process is compared with its assignment as usual.
   */
  provideEnv(env: Record<string, string>): void {
    if (this.envKnown) return;
    this.record.spec = { ...this.record.spec, env: { ...env } };
    this.envKnown = true;
    this.ctx.logger.info({ instance: this.instanceId }, 'instance env restored from its assignment');
    void this.persistNow();
    this.poke();
  }

  get port(): number {
    return this.record.port;
  }

  get phase(): ActualPhase {
    if (this.cmd === 'stop' || this.state === 'stopping') return this.state === 'stopped' ? 'stopped' : 'stopping';
    if (this.state === 'unhealthy') return 'running'; // a failing check is the control plane's concern, not a reason to replace
    return this.state === 'pending' ? 'starting' : this.state;
  }

  /**
   * Settings that change how the instance is watched and stopped, not what runs (readiness check,
   * stop timeout): taken from each assignment without a restart.
   */
  refresh(spec: InstanceSpec): void {
    const cur = this.record.spec;
    if (JSON.stringify(cur.readiness ?? null) === JSON.stringify(spec.readiness ?? null) && cur.stopTimeoutMs === spec.stopTimeoutMs) return;
    this.record.spec = { ...cur, readiness: spec.readiness, stopTimeoutMs: spec.stopTimeoutMs };
    if (this.nextSpec) this.nextSpec = { ...this.nextSpec, readiness: spec.readiness, stopTimeoutMs: spec.stopTimeoutMs };
    void this.persistNow();
    this.poke();
  }

  get pid(): number | null {
    return this.handle?.pid ?? null;
  }

  get isWeb(): boolean {
    return this.record.spec.processType === 'web';
  }

  address(): string | null {
    if (!this.isWeb || !this.handle || this.state === 'stopped' || this.state === 'crashed') return null;
    return this.handle.ip ? `${this.handle.ip}:${this.record.port}` : null;
  }

  status(): InstanceStatusMessage {
    // Exit details describe the process that ended; a live process has none.
    const ended = this.state === 'crashed' || this.state === 'stopped' ? this.exit : null;
    const msg: InstanceStatusMessage = {
      nodeId: this.ctx.nodeId,
      instanceId: this.instanceId,
      state: this.state,
      exitCode: ended?.exitCode ?? null,
      signal: ended?.signal ?? null,
      oomKilled: ended?.oomKilled ?? false,
      restarts: this.record.restarts,
      address: this.address(),
      startedAt: this.handle?.startedAt ?? null,
      at: new Date().toISOString(),
      restartGeneration: this.record.spec.restartGeneration,
    };
    if (this.lastLog && (this.state === 'crashed' || this.state === 'unhealthy' || this.state === 'starting')) msg.lastLog = this.lastLog;
    return msg;
  }

  // ---------- commands (idempotent) ----------

  /** Replace the process with one running `spec` (restart command, new release, changed spec). */
  replace(spec: InstanceSpec): void {
    if (this.cmd !== 'run') return;
    this.nextSpec = spec;
    this.poke();
  }

  /** Stop gracefully and remove the instance; resolves when done. */
  async stop(): Promise<void> {
    if (this.cmd !== 'detach') {
      this.cmd = 'stop';
      this.poke();
    }
    await this.loop;
  }

  /** Let go of the instance without touching its process (agent shutdown with apps left running). */
  async detach(): Promise<void> {
    if (this.cmd === 'run') this.cmd = 'detach';
    this.poke();
    await this.loop;
    this.tail.stop();
    if (!this.gone) {
      this.record.logOffset = this.tail.offset;
      await this.persistNow();
    }
  }

  // ---------- the loop ----------

  private resetWake(): void {
    this.woken = new Promise<void>((r) => (this.wake = r));
  }

  private poke(): void {
    const w = this.wake;
    this.resetWake();
    w();
  }

  private interrupted(): boolean {
    return this.cmd !== 'run' || this.nextSpec !== null;
  }

  private async main(start: { handle?: SandboxHandle; backoff?: boolean }): Promise<void> {
    let handle = start.handle ?? null;
    let exit: SandboxExit | null = null;
    let extra: string[] = [];
    try {
      if (start.backoff) await this.interruptibleSleep(this.backoffDelay());
      for (;;) {
        if (this.cmd !== 'run') break;
        if (!handle && !exit && this.needsEnv) {
          await this.waitForEnv();
          continue;
        }
        if (!handle && !exit) {
          try {
            handle = await this.launch();
          } catch (err) {
            const message = (err as Error).message;
            this.ctx.logger.warn({ err, instance: this.instanceId }, 'instance failed to start');
            exit = UNKNOWN_EXIT;
            extra = [`failed to start: ${message}`];
            this.platformLog(extra[0]);
          }
          continue;
        }
        if (handle) {
          const outcome = await this.supervise(handle);
          if (outcome === 'interrupted') {
            if (this.cmd !== 'run') break;
            // Replacement (restart command / new spec): stop the old process, then start the new one.
            this.setState('starting');
            await this.terminate(handle);
            await this.cleanupSandbox();
            handle = null;
            this.handle = null;
            continue;
          }
          exit = outcome.exit;
          extra = outcome.lines;
          handle = null;
        }
        if (this.cmd !== 'run') break;
        await this.crashed(exit!, extra);
        exit = null;
        extra = [];
        if (this.nextSpec) continue; // replaced while crashed: start the new spec at once
        await this.interruptibleSleep(this.backoffDelay());
      }
      if (this.cmd === 'stop') await this.stopInstance(handle, exit);
    } catch (err) {
      // Last resort: a bug or an unexpected I/O error. Keep the agent up, retry later.
      this.ctx.logger.error({ err, instance: this.instanceId }, 'instance runner failed');
      if (this.cmd === 'detach' || this.gone) return;
      this.exit = UNKNOWN_EXIT;
      this.lastLog = [`agent error: ${(err as Error).message}`];
      this.setState('crashed');
      await this.interruptibleSleep(this.ctx.backoff.maxMs);
      if (this.cmd === 'stop') return this.stopInstance(this.handle, null);
      if (this.cmd === 'run') return this.main({ handle: this.handle ?? undefined });
    }
  }

  /** Never start with an empty env: wait until an assignment supplies it (provideEnv / replace). */
  private async waitForEnv(): Promise<void> {
    const woken = this.woken;
    if (this.cmd !== 'run' || !this.needsEnv) return;
    if (!this.envWaitLogged) {
      this.envWaitLogged = true;
      this.ctx.logger.warn({ instance: this.instanceId }, 'instance env unknown (secrets directory cleared): waiting for its assignment before starting it');
    }
    await woken;
  }

  private backoffDelay(): number {
    const { initialMs, maxMs } = this.ctx.backoff;
    const n = Math.max(1, this.record.consecutiveCrashes);
    return Math.min(maxMs, initialMs * 2 ** Math.min(n - 1, 30));
  }

  private async interruptibleSleep(ms: number): Promise<void> {
    const woken = this.woken;
    if (this.interrupted()) return;
    await within(woken, ms, null);
  }

  /** Unpack, copy, start the sandbox. Reports `starting`. */
  private async launch(): Promise<SandboxHandle> {
    if (this.nextSpec) {
      this.record.spec = this.nextSpec;
      this.record.restartGeneration = this.nextSpec.restartGeneration;
      this.nextSpec = null;
      this.envKnown = true;
    }
    const spec = this.record.spec;
    this.exit = null;
    this.lastLog = undefined;
    this.record.phase = 'starting';
    this.record.runningSince = null;
    // Output of this attempt (including the runtime's own start errors) begins here.
    this.record.runLogOffset = await fileSize(this.paths.log);
    this.setState('starting');
    await this.persistNow();

    const artifact = await this.ctx.artifacts.ensure(spec.artifactDigest);
    await copyAppDir(artifact, this.paths.app, this.ctx.owner(spec));
    this.record.port = this.isolation === 'none' ? await this.ctx.pickPort(this, this.record.port) : spec.port;
    // Without a mount namespace a mount path would be the host's own: volumes need the sandbox.
    if (spec.volumes?.length && this.isolation !== 'sandbox') throw new Error(`volumes (${spec.volumes.map((v) => v.name).join(', ')}) need sandbox isolation; this node runs without it`);
    const volumes = await this.ctx.volumes.mounts(spec, this.ctx.owner(spec));
    // OCI image apps: same sandbox, the image's root, argv, env, workdir and user (image-apps.ts).
    const sandboxSpec = await withImage(this.sandboxSpec(spec, volumes), this.paths.app, spec, this.isolation, this.ctx.owner(spec));
    const handle = await this.ctx.runtime.start(sandboxSpec);
    this.handle = handle;
    this.record.pid = handle.pid;
    this.record.startedAt = handle.startedAt;
    this.record.ip = handle.ip;
    await this.persistNow();
    this.setState('starting'); // again, now with the address
    this.ctx.logger.info({ instance: this.instanceId, pid: handle.pid, ip: handle.ip, port: this.record.port }, 'instance started');
    return handle;
  }

  private sandboxSpec(spec: InstanceSpec, volumes: SandboxSpec['mounts']): SandboxSpec {
    // Under `none` there is no /app: paths inside the process are the host's.
    const appRoot = this.isolation === 'sandbox' ? '/app' : this.paths.app;
    const profile = `for f in ${appRoot}/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; `;
    return {
      id: this.record.sandboxId,
      argv: ['/bin/sh', '-c', profile + commandLine(spec.command)],
      env: { ...spec.env, PORT: String(this.record.port), DYNO: dynoName(spec), HOME: appRoot },
      cwd: '/app',
      mounts: [{ source: this.paths.app, target: '/app', readonly: false }, ...volumes],
      uid: this.record.uid,
      gid: this.record.gid,
      limits: { memoryMb: spec.limits.memoryMb, cpus: spec.limits.cpus, pids: spec.limits.pids },
      network: { mode: this.isolation === 'sandbox' ? 'bridge' : 'host' },
      logFile: this.paths.log,
      stateDir: this.paths.state,
    };
  }

  /**
   * Watch a started process: it is `running` (ready for traffic) once its readiness check passes —
   * an HTTP check when its process type has one, else a TCP connect on $PORT for web (boot timeout
   * → killed, counted as a crash); other types are `running` at once. After that an HTTP check keeps
   * running: `unhealthyThreshold` failures in a row report `unhealthy` (out of the router), and
   * passes bring it back.
   */
  private async supervise(handle: SandboxHandle): Promise<'interrupted' | { exit: SandboxExit; lines: string[] }> {
    let exited: SandboxExit | null = null;
    const exitP = handle.wait().then((e) => {
      exited = e;
      return e;
    });
    const host = handle.ip ?? '127.0.0.1';
    if (this.record.phase !== 'running') {
      const readiness = this.record.spec.readiness;
      if (this.isWeb || readiness) {
        const thresholds = readiness ? new Thresholds(readiness.healthyThreshold, 1) : null;
        let lastWhy = '';
        let reportedWhy = '';
        const waitingSince = Date.now();
        const deadline = waitingSince + this.ctx.bootTimeoutMs;
        for (;;) {
          if (exited) return { exit: exited, lines: [] };
          const woken = this.woken;
          if (this.interrupted()) return 'interrupted';
          const r = await probe(readiness, host, this.record.port);
          if (!r.ok && r.why !== reportedWhy && readiness && Date.now() - waitingSince > 1000) {
            // Say why it is not ready yet (`ps`, and the deployment's reason if it never gets there).
            reportedWhy = r.why;
            this.lastLog = [`not ready: ${r.why}`];
            this.ctx.report(this.status());
          }
          if (!r.ok) lastWhy = r.why;
          if (thresholds ? thresholds.record(r.ok) === 'healthy' : r.ok) break;
          if (Date.now() >= deadline) {
            const ms = this.ctx.bootTimeoutMs;
            const secs = ms % 1000 === 0 ? String(ms / 1000) : (ms / 1000).toFixed(1);
            const line = readiness
              ? `${dynoName(this.record.spec)} did not pass its health check within ${secs}s (${lastWhy || 'no answer'}): killed`
              : `${dynoName(this.record.spec)} did not listen on $PORT within ${secs}s (PORT=${this.record.port}): killed`;
            this.platformLog(line);
            await handle.kill('SIGKILL').catch(() => {});
            const exit = await within(exitP, 10_000, UNKNOWN_EXIT);
            return { exit, lines: [line] };
          }
          // Most apps listen within a second: probe often then (readiness is on every deploy's
          // critical path), and back off for slow boots. A refused connect costs microseconds.
          // Passes after the first one are spaced by the check's interval (thresholds mean "in a row, over time").
          const pause = r.ok && readiness ? readiness.intervalMs : Date.now() - waitingSince < 2000 ? 20 : 100;
          await within(Promise.race([exitP, woken]), pause, null);
        }
      }
      this.record.phase = 'running';
      this.record.runningSince = new Date().toISOString();
      await this.persistNow();
      this.setState('running');
    } else if (this.state !== 'running') {
      this.setState('running');
    }
    let watch: Thresholds | null = null;
    let watched = '';
    for (;;) {
      const woken = this.woken;
      if (exited) return { exit: exited, lines: [] };
      if (this.interrupted()) return 'interrupted';
      const readiness = this.record.spec.readiness;
      if (!readiness) {
        if (this.state === 'unhealthy') this.setState('running'); // the check was removed
        await Promise.race([exitP, woken]);
        continue;
      }
      const key = JSON.stringify(readiness);
      if (key !== watched) {
        watched = key;
        watch = new Thresholds(readiness.healthyThreshold, readiness.unhealthyThreshold);
      }
      await within(Promise.race([exitP, woken]), readiness.intervalMs, null);
      if (exited || this.interrupted()) continue;
      const r = await probe(readiness, host, this.record.port);
      const verdict = watch!.record(r.ok);
      if (verdict === 'unhealthy' && this.state === 'running') {
        this.lastLog = [`health check failed ${readiness.unhealthyThreshold} times in a row: ${r.ok ? '' : r.why}`];
        this.platformLog(`${dynoName(this.record.spec)} ${this.lastLog[0]}: out of the router until it passes again`);
        this.setState('unhealthy');
      } else if (verdict === 'healthy' && this.state === 'unhealthy') {
        this.lastLog = undefined;
        this.platformLog(`${dynoName(this.record.spec)} passes its health check again`);
        this.setState('running');
      }
    }
  }

  /** The process ended on its own: report `crashed`, count the restart, persist. */
  private async crashed(exit: SandboxExit, extra: string[]): Promise<void> {
    await this.tail.drain(true);
    const tail = await lastLines(this.paths.log, this.record.runLogOffset, 20);
    const healthyFor = this.record.runningSince ? Date.now() - Date.parse(this.record.runningSince) : 0;
    if (healthyFor >= this.ctx.backoff.resetAfterMs) this.record.consecutiveCrashes = 0;
    this.record.consecutiveCrashes += 1;
    this.record.restarts += 1;
    this.record.phase = 'backoff';
    this.record.runningSince = null;
    this.record.lastExit = exit;
    this.record.lastLog = [...tail, ...extra].slice(-20);
    this.exit = exit;
    this.lastLog = this.record.lastLog;
    this.handle = null;
    await this.persistNow();
    this.setState('crashed');
    this.ctx.logger.info({ instance: this.instanceId, exit, restarts: this.record.restarts }, 'instance crashed');
    // Release its netns / IP / cgroup now rather than at the next start.
    await this.cleanupSandbox();
  }

  /** SIGTERM, then SIGKILL after the grace period. Returns how it ended (null if unknown). */
  private async terminate(handle: SandboxHandle): Promise<SandboxExit | null> {
    const exitP = handle.wait();
    await handle.kill('SIGTERM').catch((err) => this.ctx.logger.warn({ err, instance: this.instanceId }, 'SIGTERM failed'));
    let exit = await within(exitP, this.record.spec.stopTimeoutMs ?? this.ctx.stopGraceMs, null);
    if (!exit) {
      await handle.kill('SIGKILL').catch((err) => this.ctx.logger.warn({ err, instance: this.instanceId }, 'SIGKILL failed'));
      exit = await within(exitP, 10_000, null);
    }
    return exit;
  }

  private async stopInstance(handle: SandboxHandle | null, exit: SandboxExit | null): Promise<void> {
    this.record.desired = 'stopped';
    this.record.phase = 'stopping';
    await this.persistNow();
    this.setState('stopping');
    let final = exit;
    if (handle) final = (await this.terminate(handle)) ?? final;
    await this.tail.drain(true).catch(() => {});
    this.tail.stop();
    await this.cleanupSandbox();
    if (!final) final = await readFinalExit(this.paths.state).catch(() => null);
    if (final) this.exit = final;
    this.handle = null;
    this.gone = true;
    if (this.persistTimer) clearTimeout(this.persistTimer);
    await this.persisting;
    await fsp.rm(this.paths.dir, { recursive: true, force: true }).catch((err) =>
      this.ctx.logger.warn({ err, instance: this.instanceId }, 'cannot remove instance directory'),
    );
    await this.ctx.envs.remove(this.instanceId).catch((err) =>
      this.ctx.logger.warn({ err, instance: this.instanceId }, 'cannot remove instance env'),
    );
    // `stopped` means gone for good: no process, no sandbox, no directory.
    this.setState('stopped');
    this.ctx.logger.info({ instance: this.instanceId }, 'instance stopped');
    this.ctx.onGone(this);
  }

  private async cleanupSandbox(): Promise<void> {
    await this.ctx.runtime.cleanup(this.record.sandboxId, this.paths.state).catch((err) =>
      this.ctx.logger.warn({ err, instance: this.instanceId }, 'sandbox cleanup failed'),
    );
  }

  // ---------- status, logs, persistence ----------

  private setState(state: InstanceState): void {
    this.state = state;
    this.ctx.report(this.status());
  }

  private onLines(lines: string[]): void {
    const ts = new Date().toISOString();
    const spec = this.record.spec;
    const type = dynoName(spec);
    this.ctx.publishLogs(spec.appId, lines.map((line) => ({ ts, source: 'app' as const, instanceId: spec.instanceId, type, line })));
    this.record.logOffset = this.tail.offset;
    this.schedulePersist();
  }

  private platformLog(line: string): void {
    const spec = this.record.spec;
    this.ctx.publishLogs(spec.appId, [{ ts: new Date().toISOString(), source: 'platform', instanceId: spec.instanceId, type: dynoName(spec), line }]);
  }

  private schedulePersist(): void {
    if (this.persistTimer || this.gone) return;
    this.persistTimer = setTimeout(() => {
      this.persistTimer = null;
      void this.persistNow();
    }, PERSIST_THROTTLE_MS);
    this.persistTimer.unref();
  }

  /**
   * Serialised, atomic write of instance.json (without env) and, when it changed, of the env to
   * the EnvStore (first, so a record never refers to a spec whose env is older); failures are
   * logged, never thrown.
   */
  persistNow(): Promise<void> {
    this.persisting = this.persisting.then(async () => {
      if (this.gone) return;
      this.record.logOffset = this.tail.offset;
      const env = this.envKnown ? JSON.stringify(this.record.spec.env ?? {}) : null;
      if (env !== null && env !== this.envStored) {
        try {
          await this.ctx.envs.write(this.instanceId, this.record.spec.env ?? {});
          this.envStored = env;
        } catch (err) {
          this.ctx.logger.warn({ err, instance: this.instanceId }, 'cannot store instance env');
        }
      }
      try {
        await writeRecord(this.paths.record, this.record);
      } catch (err) {
        this.ctx.logger.warn({ err, instance: this.instanceId }, 'cannot persist instance record');
      }
    });
    return this.persisting;
  }

  /** For the agent's listing. */
  info(): InstanceInfo {
    const s = this.status();
    return {
      instanceId: s.instanceId,
      appId: this.record.spec.appId,
      dyno: dynoName(this.record.spec),
      releaseId: this.record.spec.releaseId,
      state: s.state,
      pid: this.pid,
      address: s.address,
      port: this.record.port,
      restarts: s.restarts,
      startedAt: s.startedAt,
      exitCode: s.exitCode,
      signal: s.signal,
      oomKilled: s.oomKilled,
      restartGeneration: s.restartGeneration,
      sandboxId: this.record.sandboxId,
      uid: this.record.uid,
    };
  }
}

export interface InstanceInfo {
  instanceId: string;
  appId: string;
  dyno: string;
  releaseId: string;
  state: InstanceState;
  pid: number | null;
  address: string | null;
  port: number;
  restarts: number;
  startedAt: string | null;
  exitCode: number | null;
  signal: string | null;
  oomKilled: boolean;
  restartGeneration: number;
  sandboxId: string;
  uid: number;
}

async function fileSize(p: string): Promise<number> {
  try {
    return (await fsp.stat(p)).size;
  } catch {
    return 0;
  }
}
