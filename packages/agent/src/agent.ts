/**
 * The node agent: converges what runs on this node to what the control plane assigned, and
 * reports what actually runs. Shaped like Nomad's client (one runner per instance, re-attached
 * after a restart) around a Kubernetes-style level-triggered reconcile loop.
 */
import { readFileSync, statfsSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { AssignmentsAssembler, splitStatusReport, subjects } from '@shellwego/core';
import type { AppLogMessage, AssignmentsMessage, BlobStore, HeartbeatMessage, InstanceSpec, InstanceStatusMessage, VolumeDeleteMessage } from '@shellwego/core';
import type { Bus, Subscription } from '@shellwego/bus';
import type { SandboxRuntime } from '@shellwego/sandbox';
import { ArtifactCache } from './artifacts.ts';
import { appUid, sandboxIdFor, specProblem } from './identity.ts';
import { InstanceRunner } from './instance-runner.ts';
import type { BackoffOptions, InstanceInfo, RunnerContext } from './instance-runner.ts';
import { OneOffs } from './oneoff.ts';
import { reconcile } from './reconcile.ts';
import type { Action } from './reconcile.ts';
import { instancePaths, readRecord } from './record.ts';
import { UNOPENED_ENV_STORE, openEnvStore } from './secrets.ts';
import { VolumeDirs } from './volumes.ts';

export interface AgentOptions {
  nodeId: string;
  /** Human-readable node name (hostname). */
  name: string;
  bus: Bus;
  blobs: BlobStore;
  runtime: SandboxRuntime;
  /** Everything the agent keeps: artifacts/, instances/ (never instance env: see secretsDir). */
  dataDir: string;
  /**
   * Where instance env (config vars: secrets) is kept, in `<secretsDir>/env/<instanceId>.json`
   * (dir 0700, files 0600); should be a tmpfs. Default `/run/shellwego/agent-<sha256(dataDir):16>`
   * when /run is a writable tmpfs, else env is kept in memory only.
   */
  secretsDir?: string;
  logger?: Logger;
  /** Default 5000. */
  heartbeatMs?: number;
  /** SIGTERM → SIGKILL grace when stopping an instance. Default 10000. */
  stopGraceMs?: number;
  /** Advertised capacity. Default: all cpus and all memory of the host. */
  capacity?: { cpus: number; memoryMb: number; diskMb?: number };
  /** Node labels for placement (e.g. zone=a), reported with every heartbeat. */
  labels?: Record<string, string>;
  /** host:port of this node's router cluster listener, reported with every heartbeat (routing across nodes). */
  clusterEndpoint?: string;
  /** The route table version this node's router holds, reported with every heartbeat (the control plane resends a missed table). */
  routesVersion?: () => number | null;
  /** Full status report of every instance (and a reconcile pass). Default 10000. */
  statusIntervalMs?: number;
  /** A web process must accept TCP connections on $PORT within this. Default 60000. */
  bootTimeoutMs?: number;
  /** Crash restarts: 1 s, 2 s, 4 s … 60 s; reset after 60 s of healthy running. */
  backoff?: Partial<BackoffOptions>;
  /** output.log is truncated once read past this size. Default 16 MiB. */
  logMaxBytes?: number;
}

export interface Agent {
  start(): Promise<void>;
  /**
   * Stop the agent. By default its instances are stopped (SIGTERM, grace, SIGKILL) and removed;
   * with `leaveRunning` they are left running untouched, to be adopted by the next agent start.
   */
  stop(opts?: { leaveRunning: boolean }): Promise<void>;
  instances(): InstanceInfo[];
}

const TOMBSTONE_MS = 10 * 60_000;
const INSTANCE_DIR_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

export function createAgent(opts: AgentOptions): Agent {
  return new NodeAgent(opts);
}

class NodeAgent implements Agent {
  private readonly logger: Logger;
  private readonly instancesDir: string;
  private readonly artifacts: ArtifactCache;
  private readonly ctx: RunnerContext;
  private readonly isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  private runners = new Map<string, InstanceRunner>();
  /** Stopped instances, re-reported for a while in case the `stopped` message was lost. */
  private tombstones = new Map<string, { msg: InstanceStatusMessage; until: number }>();
  private rejected = new Map<string, string>();
  private desired: InstanceSpec[] | null = null;
  /** Ports handed out under isolation `none`, so two concurrent starts never get the same one. */
  private ports = new Map<InstanceRunner, number>();
  private portLock: Promise<unknown> = Promise.resolve();
  private generation = -Infinity;
  private readonly assignmentChunks = new AssignmentsAssembler();
  private sub: Subscription | null = null;
  private volumeSub: Subscription | null = null;
  private readonly volumes: VolumeDirs;
  private timers: NodeJS.Timeout[] = [];
  private chain: Promise<void> = Promise.resolve();
  private queued = false;
  private state: 'new' | 'starting' | 'started' | 'stopping' | 'stopped' = 'new';
  /** One-off processes (`shellwego run`): oneoff.ts. */
  private readonly oneoffs: OneOffs;

  constructor(private readonly opts: AgentOptions) {
    this.logger = opts.logger ?? pino({ name: 'shellwego-agent' });
    this.instancesDir = path.join(opts.dataDir, 'instances');
    this.artifacts = new ArtifactCache(path.join(opts.dataDir, 'artifacts'), opts.blobs);
    this.volumes = new VolumeDirs(path.join(opts.dataDir, 'volumes'), this.logger);
    this.ctx = {
      volumes: this.volumes,
      nodeId: opts.nodeId,
      runtime: opts.runtime,
      artifacts: this.artifacts,
      envs: UNOPENED_ENV_STORE,
      logger: this.logger,
      stopGraceMs: opts.stopGraceMs ?? 10_000,
      bootTimeoutMs: opts.bootTimeoutMs ?? 60_000,
      backoff: { initialMs: 1000, maxMs: 60_000, resetAfterMs: 60_000, ...opts.backoff },
      logMaxBytes: opts.logMaxBytes ?? 16 * 1024 * 1024,
      owner: (spec) => (this.isRoot ? { uid: appUid(spec.appId), gid: appUid(spec.appId) } : null),
      pickPort: (runner, preferred) => this.pickPort(runner, preferred),
      report: (msg) => this.publish(subjects.instanceStatus(opts.nodeId), msg),
      publishLogs: (appId, lines) => this.publish(subjects.appLogs(opts.nodeId, appId), { appId, lines } satisfies AppLogMessage),
      onGone: (runner) => this.onGone(runner),
    };
    this.oneoffs = new OneOffs({
      nodeId: opts.nodeId, bus: opts.bus, runtime: opts.runtime, artifacts: this.artifacts, root: path.join(opts.dataDir, 'oneoffs'), logger: this.logger, isRoot: this.isRoot,
    });
  }

  // ---------- lifecycle ----------

  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`agent ${this.opts.nodeId} was already started`);
    this.state = 'starting';
    await this.prepareDirs();
    this.ctx.envs = await openEnvStore({ dataDir: this.opts.dataDir, secretsDir: this.opts.secretsDir, logger: this.logger });
    await this.artifacts.init();
    await this.volumes.init();
    await this.restoreInstances();
    await this.dropOrphanEnvs();
    await this.oneoffs.start();
    this.sub = this.opts.bus.subscribe<AssignmentsMessage>(subjects.assignments(this.opts.nodeId), (m) => this.onAssignments(m));
    // Serialised with reconcile passes, so a directory is never removed while a start is mounting it.
    this.volumeSub = this.opts.bus.subscribe<VolumeDeleteMessage>(subjects.volumeDelete(this.opts.nodeId), (m) => this.onVolumeDelete(m));
    this.state = 'started';
    this.heartbeat();
    this.reportAll();
    const hb = setInterval(() => this.heartbeat(), this.opts.heartbeatMs ?? 2000);
    const st = setInterval(() => {
      this.reportAll();
      void this.scheduleReconcile();
    }, this.opts.statusIntervalMs ?? 10_000);
    hb.unref();
    st.unref();
    this.timers.push(hb, st);
    this.logger.info({ node: this.opts.nodeId, isolation: this.opts.runtime.isolation, instances: this.runners.size }, 'agent started');
  }

  async stop(opts: { leaveRunning: boolean } = { leaveRunning: false }): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return;
    this.state = 'stopping';
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.sub?.unsubscribe();
    this.sub = null;
    this.volumeSub?.unsubscribe();
    this.volumeSub = null;
    await this.oneoffs.stop();
    await this.chain;
    const runners = [...this.runners.values()];
    if (opts.leaveRunning) await Promise.all(runners.map((r) => r.detach()));
    else await Promise.all(runners.map((r) => r.stop()));
    this.runners.clear();
    this.state = 'stopped';
    this.logger.info({ node: this.opts.nodeId, leftRunning: opts.leaveRunning ? runners.length : 0 }, 'agent stopped');
  }

  instances(): InstanceInfo[] {
    return [...this.runners.values()].map((r) => r.info());
  }

  /**
   * The agent's own directories get search permission for others (0711: pass through, not list)
   * so that the sandbox, whose bwrap runs as the app user, can reach each instance's /app itself —
   * the fast start path. Directories above dataDir are none of the agent's business: when one of
   * them is closed to others (a `mktemp -d` or /root parent) the sandbox runtime makes the app
   * dir reachable on its own (a private mount namespace, @shellwego/sandbox "Mount staging"),
   * without changing any permission.
   */
  private async prepareDirs(): Promise<void> {
    const { dataDir } = this.opts;
    if (!path.isAbsolute(dataDir)) throw new Error(`agent dataDir must be an absolute path, got "${dataDir}"`);
    await fsp.mkdir(this.instancesDir, { recursive: true, mode: 0o711 });
    if (!this.isRoot) return;
    for (const d of [dataDir, this.instancesDir]) {
      const st = await fsp.stat(d);
      if ((st.mode & 0o001) === 0) await fsp.chmod(d, (st.mode & 0o7777) | 0o011);
    }
  }

  /** Adopt what still runs, account for what ended while we were away. */
  private async restoreInstances(): Promise<void> {
    let names: string[];
    try {
      names = await fsp.readdir(this.instancesDir);
    } catch {
      return;
    }
    for (const name of names) {
      if (!INSTANCE_DIR_RE.test(name)) continue;
      const paths = instancePaths(this.instancesDir, name);
      const loaded = await readRecord(paths.record);
      const record = loaded?.record;
      if (!loaded || !record || record.spec.instanceId !== name) {
        // Created but never recorded (crash during creation) or unreadable: make sure nothing
        // runs from it, then drop it. Still assigned? The next pass starts it afresh.
        this.logger.warn({ dir: paths.dir }, 'instance directory without a readable record: removed');
        await this.opts.runtime.cleanup(sandboxIdFor(name), paths.state).catch(() => {});
        await fsp.rm(paths.dir, { recursive: true, force: true }).catch(() => {});
        continue;
      }
      // The env lives in the EnvStore; records of earlier versions held it inline (rewritten
      // without it at once). Neither (a reboot cleared the tmpfs): unknown, and the runner waits
      // for the assignment to supply it.
      const stored = await this.ctx.envs.read(name);
      const env = stored ?? loaded.inlineEnv;
      if (env) record.spec = { ...record.spec, env };
      try {
        this.runners.set(name, await InstanceRunner.restore(this.ctx, paths, record, loaded.inlineEnv ? 'inline' : stored ? 'store' : null));
      } catch (err) {
        this.logger.error({ err, instance: name }, 'cannot restore instance');
      }
    }
  }

  /** Env files of instances that no longer exist here (removed while the agent was away). */
  private async dropOrphanEnvs(): Promise<void> {
    for (const id of await this.ctx.envs.list()) {
      if (this.runners.has(id)) continue;
      await this.ctx.envs.remove(id).catch((err) => this.logger.warn({ err, instance: id }, 'cannot remove stale instance env'));
    }
  }

  // ---------- desired state ----------

  private async onAssignments(msg: AssignmentsMessage): Promise<void> {
    if (this.state !== 'started') return;
    // A set too large for one message comes in chunks of one generation: act on it when whole.
    const whole = this.assignmentChunks.accept(msg);
    if (whole === 'pending') return;
    if (whole === 'ignored') {
      this.logger.warn({ nodeId: msg?.nodeId }, 'malformed assignments chunk ignored');
      return;
    }
    const m = whole.message;
    if (!m || m.nodeId !== this.opts.nodeId || typeof m.generation !== 'number' || !Array.isArray(m.instances)) {
      this.logger.warn({ nodeId: m?.nodeId }, 'malformed assignments message ignored');
      return;
    }
    if (m.generation < this.generation) {
      this.logger.debug({ generation: m.generation, newest: this.generation }, 'stale assignments ignored');
      return;
    }
    this.generation = m.generation;
    this.desired = m.instances;
    await this.scheduleReconcile();
  }

  /**
   * A destroyed volume's directory goes. The API refuses to destroy a volume its process type
   * still runs with; an instance here that still mounts it (a stale view) keeps it instead.
   */
  private async onVolumeDelete(m: VolumeDeleteMessage): Promise<void> {
    if (!m || m.nodeId !== this.opts.nodeId) {
      this.logger.warn({ nodeId: m?.nodeId }, 'volume delete command for another node ignored');
      return;
    }
    const run = this.chain.then(async () => {
      const users = [...this.runners.values()].filter((r) => r.phase !== 'stopped' && r.spec.volumes?.some((v) => v.id === m.volumeId));
      if (users.length > 0) throw new Error(`volume ${m.name} is still mounted by ${users.map((r) => r.instanceId).join(', ')}: not removed now`);
      await this.volumes.remove(m);
    });
    this.chain = run.catch(() => undefined);
    // A failure goes back to the bus: a durable subject delivers the command again later.
    await run;
  }

  /** Serialised passes; requests during a pass collapse into one more pass. */
  private scheduleReconcile(): Promise<void> {
    if (this.queued) return this.chain;
    this.queued = true;
    this.chain = this.chain.then(async () => {
      this.queued = false;
      try {
        await this.reconcileOnce();
      } catch (err) {
        this.logger.error({ err }, 'reconcile pass failed');
      }
    });
    return this.chain;
  }

  private async reconcileOnce(): Promise<void> {
    if (this.state !== 'started' || this.desired === null) return;
    const valid: InstanceSpec[] = [];
    const seen = new Set<string>();
    for (const spec of this.desired) {
      const problem = specProblem(spec);
      if (!problem) {
        valid.push(spec);
        continue;
      }
      const id = typeof spec?.instanceId === 'string' ? spec.instanceId : null;
      if (!id) {
        this.logger.error({ problem }, 'assigned instance without an id ignored');
        continue;
      }
      seen.add(id);
      if (this.rejected.get(id) === problem) continue;
      this.rejected.set(id, problem);
      this.logger.error({ instance: id, problem }, 'assigned instance cannot be run');
      this.publish(subjects.instanceStatus(this.opts.nodeId), {
        nodeId: this.opts.nodeId, instanceId: id, state: 'crashed', exitCode: null, signal: null, oomKilled: false, restarts: 0,
        address: null, startedAt: null, at: new Date().toISOString(), lastLog: [`agent refused the assignment: ${problem}`],
        restartGeneration: typeof spec.restartGeneration === 'number' ? spec.restartGeneration : 0,
      } satisfies InstanceStatusMessage);
    }
    for (const id of this.rejected.keys()) if (!seen.has(id)) this.rejected.delete(id);

    // Restored instances whose env was lost learn it from their assignment before comparing, so an
    // adopted process is not replaced just because its env was unknown.
    const wanted = new Map<string, InstanceSpec>();
    for (const spec of valid) if (!wanted.has(spec.instanceId)) wanted.set(spec.instanceId, spec);
    for (const r of this.runners.values()) {
      const spec = wanted.get(r.instanceId);
      if (r.needsEnv && spec) r.provideEnv(spec.env ?? {});
      if (spec) r.refresh(spec);
    }
    const actual = [...this.runners.values()].map((r) => ({ instanceId: r.instanceId, spec: r.spec, phase: r.phase }));
    for (const action of reconcile(valid, actual)) {
      try {
        await this.apply(action);
      } catch (err) {
        this.logger.error({ err, action: action.type, instance: action.type === 'start' ? action.spec.instanceId : action.instanceId }, 'reconcile action failed');
      }
    }
    const keep = new Set<string>(valid.map((s) => s.artifactDigest));
    for (const r of this.runners.values()) keep.add(r.spec.artifactDigest);
    for (const d of this.oneoffs.digests()) keep.add(d);
    const removed = await this.artifacts.gc(keep);
    if (removed.length) this.logger.info({ artifacts: removed }, 'removed unused artifacts');
  }

  private async apply(action: Action): Promise<void> {
    switch (action.type) {
      case 'start': {
        const { spec } = action;
        this.tombstones.delete(spec.instanceId);
        const uid = this.isRoot ? appUid(spec.appId) : process.getuid!();
        const gid = this.isRoot ? uid : process.getgid!();
        const paths = instancePaths(this.instancesDir, spec.instanceId);
        const runner = await InstanceRunner.create(this.ctx, paths, spec, { sandboxId: sandboxIdFor(spec.instanceId), uid, gid });
        this.runners.set(spec.instanceId, runner);
        this.logger.info({ instance: spec.instanceId, app: spec.appId, dyno: `${spec.processType}.${spec.index}` }, 'starting instance');
        return;
      }
      case 'stop': {
        const r = this.runners.get(action.instanceId);
        if (!r) return;
        this.logger.info({ instance: action.instanceId }, 'stopping instance: no longer assigned');
        void r.stop().catch((err) => this.logger.error({ err, instance: action.instanceId }, 'stop failed'));
        return;
      }
      case 'replace': {
        this.logger.info({ instance: action.instanceId, reason: action.reason }, 'replacing instance');
        this.runners.get(action.instanceId)?.replace(action.spec);
        return;
      }
    }
  }

  private onGone(runner: InstanceRunner): void {
    if (this.runners.get(runner.instanceId) === runner) this.runners.delete(runner.instanceId);
    this.ports.delete(runner);
    this.tombstones.set(runner.instanceId, { msg: runner.status(), until: Date.now() + TOMBSTONE_MS });
    // Assigned again while it was stopping? The next pass starts it afresh.
    if (this.state === 'started') void this.scheduleReconcile();
  }

  // ---------- reporting ----------

  private heartbeat(): void {
    const base = this.opts.capacity ?? { cpus: os.cpus().length, memoryMb: Math.floor(os.totalmem() / 1024 / 1024) };
    const capacity = base.diskMb === undefined ? { ...base, ...this.diskMb() } : base;
    const live = [...this.runners.values()].filter((r) => r.phase !== 'stopped').length;
    this.publish(subjects.heartbeat(this.opts.nodeId), {
      nodeId: this.opts.nodeId, name: this.opts.name, isolation: this.opts.runtime.isolation, capacity, instances: live, at: new Date().toISOString(),
      ...(this.opts.labels ? { labels: this.opts.labels } : {}),
      ...(this.opts.clusterEndpoint ? { clusterEndpoint: this.opts.clusterEndpoint } : {}),
      assignmentsGeneration: Number.isFinite(this.generation) ? this.generation : null,
      ...(this.opts.routesVersion ? { routesVersion: this.opts.routesVersion() } : {}),
    } satisfies HeartbeatMessage);
  }

  /** Disk the node offers: the size of the file system its data directory is on. */
  private diskMb(): { diskMb?: number } {
    try {
      const s = statfsSync(this.opts.dataDir);
      return { diskMb: Math.floor((s.blocks * s.bsize) / 1024 / 1024) };
    } catch {
      return {}; // not reported: the scheduler does not filter on disk yet
    }
  }

  /**
   * Level-triggered: the whole truth, so a restarted control plane (or a lost message) catches up.
   * One report per node (split only past the message size), on the subject of single statuses so
   * the two stay in order.
   */
  private reportAll(): void {
    const now = Date.now();
    const statuses: InstanceStatusMessage[] = [];
    for (const r of this.runners.values()) statuses.push(r.status());
    for (const [id, t] of this.tombstones) {
      if (t.until < now) this.tombstones.delete(id);
      else statuses.push({ ...t.msg, at: new Date().toISOString() });
    }
    if (statuses.length === 0) return;
    for (const part of splitStatusReport({ nodeId: this.opts.nodeId, statuses })) this.publish(subjects.instanceStatus(this.opts.nodeId), part);
  }

  private publish(subject: string, data: unknown): void {
    this.opts.bus.publish(subject, data).catch((err) => this.logger.warn({ err, subject }, 'bus publish failed'));
  }

  // ---------- ports (isolation `none`) ----------

  /**
   * Without network namespaces every instance shares the host's 127.0.0.1, so each needs its own
   * port: the one it had (kept across restarts when still free), else one the kernel hands out.
   */
  private pickPort(runner: InstanceRunner, preferred: number | null): Promise<number> {
    const pick = async (): Promise<number> => {
      const taken = new Set<number>();
      for (const r of this.runners.values()) if (r !== runner && r.phase !== 'stopped') taken.add(r.port);
      for (const [r, p] of this.ports) if (r !== runner) taken.add(p);
      let port: number | null = null;
      if (preferred && !taken.has(preferred) && (await portFree(preferred))) port = preferred;
      // Below the kernel's ephemeral range: a port the kernel hands to some other socket's bind(0)
      // or outgoing connection must not collide with an app that is about to listen on it.
      const [low, high] = appPortRange();
      for (let i = 0; port === null && i < 100; i++) {
        const p = low + Math.floor(Math.random() * (high - low));
        if (!taken.has(p) && (await portFree(p))) port = p;
      }
      for (let i = 0; port === null && i < 50; i++) {
        const p = await ephemeralPort();
        if (!taken.has(p)) port = p;
      }
      if (port === null) throw new Error('no free port found for the instance');
      this.ports.set(runner, port);
      return port;
    };
    const result = this.portLock.then(pick, pick);
    this.portLock = result.catch(() => {});
    return result;
  }
}

/** Ports for apps without network namespaces: 20000 up to the start of the kernel's ephemeral range. */
function appPortRange(): [number, number] {
  let ephemeralLow = 32768;
  try {
    ephemeralLow = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || ephemeralLow;
  } catch {}
  const low = Math.min(20000, ephemeralLow - 1000);
  return [low, Math.max(low + 100, ephemeralLow)];
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: '0.0.0.0', exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

function ephemeralPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ port: 0, host: '0.0.0.0', exclusive: true }, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
