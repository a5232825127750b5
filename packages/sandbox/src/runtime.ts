/**
 * The sandbox runtimes.
 *
 * `sandbox` launch chain (one detached process, own session, stdio = the log file, fd 3 = the
 * status file, fd 4 = the env for bwrap --args; the pid never changes because every step execs):
 *
 *   bash -c 'close inherited fds; write $$ into each cgroup.procs; exec "$@"'  (root)
 *     -> unshare --mount … bash -c STAGE …                    (only when a mount source is out of
 *                                                               the uid's reach: staging.ts)
 *     -> nsenter --net=/run/netns/NS                          (bridge mode only)
 *     -> setpriv --reuid --regid --clear-groups ...           (drops root, all caps)
 *     -> bwrap --unshare-user/pid/ipc/uts/cgroup[/net] ... --json-status-fd 3 -- argv
 *
 * Bridged starts normally take a pre-built slot from the pool (pool.ts) instead: its "zygote", a
 * bash already in the slot's netns and cgroup with no inherited fds, is handed the files and the
 * command and execs `[unshare … STAGE] -> setpriv … -> bwrap …` — the same chain minus its first steps, which ran
 * ahead of time (the cgroup join is the expensive one: an RCU grace period in the kernel).
 *
 * bwrap writes {"child-pid": N} once the sandbox is set up and {"exit-code": N} when the command
 * ends, to a file we opened, so the exit status is recorded even when our Node process is gone.
 *
 * `none` launch: sh -c 'trap; "$@" 3>&-; echo {"exit-code": $?} >&3' — same files, no isolation.
 *
 * SHELLWEGO_SANDBOX_TRACE=1 prints the phases of every start() (ms) and pool activity to stderr.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { promises as fsp, constants as fsc, closeSync, fstatSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, watch, writeSync } from 'node:fs';
import type { FSWatcher, Stats } from 'node:fs';
import path from 'node:path';
import {
  applyLimits,
  cgroupPids,
  cgroupPidsSync,
  cgroupRef,
  cgroupStats,
  createCgroup,
  killCgroup,
  oomKills,
  prepareCgroupRoot,
  procsFiles,
  removeCgroup,
  signalCgroup,
  validateCgroupRoot,
} from './cgroups.ts';
import type { CgroupLayout, CgroupRef } from './cgroups.ts';
import { detect, systemBindArgs } from './detect.ts';
import type { Tools } from './detect.ts';
import { Ipam, configureNetnsSide, createNetnsAndVeth, deleteNetworks, ensureBridge, forgetNeighbor, netnsPath, parseCidr, validateBridgeName, vethName } from './net.ts';
import { JOIN_CGROUPS_SNIPPET, NetPool, POOL_TAG, closeFdsSnippet, discardZygote } from './pool.ts';
import type { NetSlot } from './pool.ts';
import { blockingDir, canSearch, detectStaging, redirectableBy, stagePlan } from './staging.ts';
import type { StagePlan, Staging } from './staging.ts';
import type {
  IsolationMode,
  ManagedSandboxRuntime,
  Mount,
  RuntimeOptions,
  SandboxExit,
  SandboxHandle,
  SandboxRuntime,
  SandboxSpec,
  SandboxStats,
  ChildProcessLike,
} from './types.ts';
import {
  DEFAULT_SANDBOX_PATH,
  HELPER_ENV,
  existsSync,
  listPids,
  pidAlive,
  pidAliveSync,
  procStat,
  procStatSync,
  readJson,
  readStatusFile,
  readTextSync,
  signalFromStatus,
  sleep,
  tailFrom,
  trySignal,
  which,
  writeJsonAtomic,
  writeJsonAtomicSync,
} from './util.ts';

export const DEFAULT_BRIDGE = { name: 'swg0', cidr: '10.89.0.0/16' };
export const DEFAULT_CGROUP_ROOT = 'shellwego';
export const DEFAULT_STATE_ROOT = '/var/lib/shellwego/sandbox';

const META = 'meta.json';
const STATUS = 'status.json';
const EXIT = 'exit.json';

/** What we persist in <stateDir>/meta.json: enough to adopt, kill, observe and clean up later. */
export interface SandboxMeta {
  v: 1;
  id: string;
  isolation: IsolationMode;
  state: 'starting' | 'running' | 'cleaned';
  pid: number | null;
  pidStartTime: number | null;
  startedAt: string | null;
  ip: string | null;
  network: 'bridge' | 'host' | 'none';
  netns: string | null;
  hostIf: string | null;
  bridge: { name: string; cidr: string; stateRoot: string } | null;
  cgroup: CgroupRef | null;
  logFile: string;
}

const ID_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const FORBIDDEN_TARGETS = ['/usr', '/bin', '/sbin', '/lib', '/lib64', '/lib32', '/libx32', '/etc', '/proc', '/dev', '/sys'];

function validateId(id: string): void {
  if (typeof id !== 'string' || !ID_RE.test(id)) throw new Error(`invalid sandbox id "${id}": 1-63 characters of [a-z0-9_-], starting with a letter or digit`);
}

function hasNul(s: string): boolean {
  return s.includes('\0');
}

async function validateSpec(spec: SandboxSpec, isolation: IsolationMode): Promise<void> {
  validateId(spec.id);
  if (!Array.isArray(spec.argv) || spec.argv.length === 0 || spec.argv.some((a) => typeof a !== 'string' || hasNul(a)) || !spec.argv[0]) {
    throw new Error(`sandbox ${spec.id}: argv must be a non-empty array of strings`);
  }
  for (const [k, v] of Object.entries(spec.env ?? {})) {
    if (!ENV_KEY_RE.test(k) || typeof v !== 'string' || hasNul(v)) throw new Error(`sandbox ${spec.id}: invalid environment variable "${k}"`);
  }
  if (!path.posix.isAbsolute(spec.cwd)) throw new Error(`sandbox ${spec.id}: cwd must be an absolute path, got "${spec.cwd}"`);
  for (const p of [spec.logFile, spec.stateDir]) {
    if (typeof p !== 'string' || !path.isAbsolute(p)) throw new Error(`sandbox ${spec.id}: logFile and stateDir must be absolute host paths`);
  }
  const mode = spec.network?.mode;
  if (mode !== 'bridge' && mode !== 'host' && mode !== 'none') throw new Error(`sandbox ${spec.id}: network.mode must be bridge, host or none`);
  if (isolation === 'sandbox') {
    for (const [name, v] of [['uid', spec.uid], ['gid', spec.gid]] as const) {
      if (!Number.isInteger(v) || v <= 0 || v > 0xfffffffe) throw new Error(`sandbox ${spec.id}: ${name} must be an unprivileged id (> 0), got ${v}`);
    }
    const l = spec.limits;
    if (!l || !(l.memoryMb >= 4) || !Number.isFinite(l.memoryMb)) throw new Error(`sandbox ${spec.id}: limits.memoryMb must be >= 4`);
    if (!(l.cpus > 0) || !Number.isFinite(l.cpus)) throw new Error(`sandbox ${spec.id}: limits.cpus must be > 0`);
    if (!Number.isInteger(l.pids) || l.pids < 1) throw new Error(`sandbox ${spec.id}: limits.pids must be a positive integer`);
  }
  if (spec.rootfs || spec.insideUid !== undefined || spec.insideGid !== undefined) {
    if (isolation !== 'sandbox') throw new Error(`sandbox ${spec.id}: an image root filesystem and inside ids need sandbox isolation`);
    for (const [name, v] of [['insideUid', spec.insideUid], ['insideGid', spec.insideGid]] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 0xfffffffe)) throw new Error(`sandbox ${spec.id}: ${name} must be an id >= 0, got ${v}`);
    }
  }
  if (spec.rootfs) {
    const st = path.isAbsolute(spec.rootfs.source) ? await fsp.stat(spec.rootfs.source).catch(() => null) : null;
    if (!st?.isDirectory()) throw new Error(`sandbox ${spec.id}: rootfs "${spec.rootfs.source}" is not an existing absolute directory`);
  }
  const targets = new Set<string>();
  for (const m of spec.mounts ?? []) {
    if (!path.isAbsolute(m.source)) throw new Error(`sandbox ${spec.id}: mount source must be absolute, got "${m.source}"`);
    const t = m.target;
    if (!path.posix.isAbsolute(t) || path.posix.normalize(t) !== t || t === '/' || t.endsWith('/')) {
      throw new Error(`sandbox ${spec.id}: mount target must be a normalized absolute path other than "/", got "${t}"`);
    }
    if (!spec.rootfs && FORBIDDEN_TARGETS.some((f) => t === f || t.startsWith(f + '/'))) throw new Error(`sandbox ${spec.id}: mount target "${t}" would shadow a system directory`);
    if (targets.has(t)) throw new Error(`sandbox ${spec.id}: duplicate mount target "${t}"`);
    targets.add(t);
    try {
      await fsp.stat(m.source);
    } catch {
      throw new Error(`sandbox ${spec.id}: mount source "${m.source}" does not exist`);
    }
  }
}

function sandboxEnv(env: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = { ...env };
  if (!out.PATH) out.PATH = DEFAULT_SANDBOX_PATH;
  if (!out.HOME) out.HOME = '/tmp';
  return out;
}

export async function readMeta(stateDir: string): Promise<SandboxMeta | null> {
  const m = await readJson<SandboxMeta>(path.join(stateDir, META));
  return m && m.v === 1 && typeof m.id === 'string' ? m : null;
}

async function writeMeta(stateDir: string, meta: SandboxMeta): Promise<void> {
  await writeJsonAtomic(path.join(stateDir, META), meta);
}

/*
 * start() handles its few small state files synchronously: they are tiny, in the page cache, and
 * a sync call costs microseconds where an async one costs several round trips through libuv's
 * thread pool (each 0.1-0.5 ms on a busy host) on the critical path. stateDir and the log belong
 * on a local filesystem.
 */
function readMetaSync(stateDir: string): SandboxMeta | null {
  try {
    const m = JSON.parse(readFileSync(path.join(stateDir, META), 'utf8')) as SandboxMeta;
    return m && m.v === 1 && typeof m.id === 'string' ? m : null;
  } catch {
    return null;
  }
}

/** An fd we opened synchronously, with the FileHandle-like close() the start path uses. */
interface Fd {
  fd: number;
  close(): Promise<void>;
}

function fdOf(fd: number): Fd {
  let open = true;
  return {
    fd,
    async close() {
      if (!open) return;
      open = false;
      try {
        closeSync(fd);
      } catch {}
    },
  };
}

/** Promise.all that lets every promise finish before rejecting with the first error. */
async function settleAll(ps: Array<Promise<unknown>>): Promise<void> {
  const r = await Promise.allSettled(ps);
  for (const x of r) if (x.status === 'rejected') throw x.reason;
}

function buildExit(code: number | null, oom: boolean): SandboxExit {
  return { exitCode: code, signal: signalFromStatus(code), oomKilled: oom };
}

/**
 * Final exit of the sandbox whose state lives in `stateDir`, or null while it is still running
 * (or when nothing is known about it). Persists the answer to exit.json the first time it is
 * known, so it stays readable after cleanup() removed the cgroup that held the OOM counter.
 */
export async function readFinalExit(stateDir: string): Promise<SandboxExit | null> {
  const saved = await readJson<SandboxExit>(path.join(stateDir, EXIT));
  if (saved && 'exitCode' in saved) return saved;
  const meta = await readMeta(stateDir);
  if (!meta || meta.pid === null) return null;
  let st = await readStatusFile(path.join(stateDir, STATUS));
  if (st.exitCode === null) {
    if (await pidAlive(meta.pid, meta.pidStartTime)) return null;
    st = await readStatusFile(path.join(stateDir, STATUS)); // written just before the monitor exited
  }
  const oomCount = meta.cgroup ? await oomKills(meta.cgroup) : 0;
  const exit = buildExit(st.exitCode, (oomCount ?? 0) > 0);
  // cgroup already gone (and no exit.json): the OOM counter is lost; answer without persisting.
  if (oomCount === null) return exit;
  await writeJsonAtomic(path.join(stateDir, EXIT), exit).catch(() => {});
  return exit;
}

export { closeFdsSnippet } from './pool.ts';

/** Trace of start() phases (SHELLWEGO_SANDBOX_TRACE=1): per-phase ms on stderr. */
class Tracer {
  private readonly t0 = performance.now();
  private last = this.t0;
  private readonly parts: string[] = [];

  constructor(
    readonly on: boolean,
    private readonly label: string,
  ) {}

  mark(name: string): void {
    if (!this.on) return;
    const t = performance.now();
    this.parts.push(`${name}=${(t - this.last).toFixed(1)}`);
    this.last = t;
  }

  note(text: string): void {
    if (this.on) this.parts.push(text);
  }

  done(): void {
    if (this.on) process.stderr.write(`[sandbox] ${this.label}: ${this.parts.join(' ')} total=${(performance.now() - this.t0).toFixed(1)}ms\n`);
  }
}

export function traceEnabled(): boolean {
  return process.env.SHELLWEGO_SANDBOX_TRACE === '1';
}

function traceLine(msg: string): void {
  if (traceEnabled()) process.stderr.write(`[sandbox] ${msg}\n`);
}

/**
 * Re-run `check` until it returns non-null: on every change of `watchFile` (inotify), on `child`'s
 * exit, and every `pollMs` as a fallback (fs.watch is best effort). null on timeout.
 */
async function waitFor<T>(check: () => Promise<T | null>, opts: { watchFile?: string; child?: ChildProcessLike; pollMs: number; timeoutMs: number }): Promise<T | null> {
  const first = await check();
  if (first !== null) return first;
  return new Promise<T | null>((resolve, reject) => {
    let done = false;
    let running = false;
    let again = false;
    let watcher: FSWatcher | null = null;
    const finish = (v: T | null, err?: unknown) => {
      if (done) return;
      done = true;
      clearInterval(poll);
      clearTimeout(timeout);
      watcher?.close();
      opts.child?.off('exit', kick);
      if (err) reject(err);
      else resolve(v);
    };
    const kick = () => {
      if (done) return;
      if (running) {
        again = true;
        return;
      }
      running = true;
      check().then(
        (v) => {
          running = false;
          if (v !== null) finish(v);
          else if (again) {
            again = false;
            kick();
          }
        },
        (e) => finish(null, e),
      );
    };
    const poll = setInterval(kick, opts.pollMs);
    const timeout = setTimeout(() => finish(null), opts.timeoutMs);
    opts.child?.on('exit', kick);
    if (opts.watchFile) {
      try {
        watcher = watch(opts.watchFile, { persistent: false }, kick);
        watcher.on('error', () => {});
      } catch {
        watcher = null; // e.g. out of inotify watches: the poll still runs
      }
    }
    kick(); // a change between the first check and the watch
  });
}

/**
 * Has the sandbox's PID 1 (`childPid`) forked the command? From /proc/<pid>/task/<pid>/children
 * when the kernel provides it, else from the cgroup (a third process besides the outer bwrap and
 * PID 1 is the command). No /proc scan.
 */
function hasChild(childPid: number, cgroup: CgroupRef | null, monitorPid: number): boolean {
  const t = readTextSync(`/proc/${childPid}/task/${childPid}/children`);
  if (t !== null) return t.trim() !== '';
  if (!cgroup) return true; // cannot tell: do not wait
  return cgroupPidsSync(cgroup).some((p) => p !== childPid && p !== monitorPid);
}

/**
 * bwrap reports child-pid as soon as it cloned the sandbox's pid 1, before the mounts are set
 * up and the command is forked. Wait (bounded) until pid 1 has forked the command, or the sandbox
 * already ended, so that an immediate kill() reaches the command (a pid-namespace init ignores
 * signals it has no handler for).
 */
async function commandStarted(childPid: number, statusFile: string, cgroup: CgroupRef | null, monitorPid: number): Promise<void> {
  await waitFor(
    async () => {
      if (hasChild(childPid, cgroup, monitorPid)) return true;
      if (!pidAliveSync(childPid)) return true;
      if ((await readStatusFile(statusFile)).exitCode !== null) return true;
      return null;
    },
    { pollMs: 2, timeoutMs: 5000 },
  );
}

/** Processes of a `none`-mode sandbox: everything in the wrapper's session. */
async function sessionPids(sid: number): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await listPids()) {
    const st = await procStat(pid);
    if (st && st.session === sid && st.state !== 'Z') out.push(pid);
  }
  return out;
}

const CLK_TCK = 100; // USER_HZ on every mainstream Linux build
const PAGE = 4096;

class Handle implements SandboxHandle {
  readonly id: string;
  readonly pid: number;
  readonly ip: string | null;
  readonly startedAt: string;
  private waiting: Promise<SandboxExit> | null = null;
  private poke: (() => void) | null = null;

  constructor(
    private readonly meta: SandboxMeta,
    private readonly stateDir: string,
    child?: ChildProcessLike,
  ) {
    this.id = meta.id;
    this.pid = meta.pid!;
    this.ip = meta.ip;
    this.startedAt = meta.startedAt!;
    // For processes we spawned ourselves, react to their exit immediately instead of at the next poll.
    child?.on('exit', () => this.poke?.());
  }

  wait(): Promise<SandboxExit> {
    if (!this.waiting) {
      this.waiting = (async () => {
        let delay = 50;
        for (;;) {
          const exit = await readFinalExit(this.stateDir);
          if (exit) return exit;
          await new Promise<void>((r) => {
            const t = setTimeout(r, delay);
            this.poke = () => {
              clearTimeout(t);
              r();
            };
          });
          this.poke = null;
          delay = Math.min(delay * 2, 250);
        }
      })();
    }
    return this.waiting;
  }

  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.meta.isolation === 'sandbox' && this.meta.cgroup) {
      // Everything in the cgroup (also daemons that outlived the main command) except the outer
      // bwrap, which must live on to record the exit status.
      const n = await signalCgroup(this.meta.cgroup, signal, [this.pid]);
      if (n === 0 && signal === 'SIGKILL' && (await pidAlive(this.pid, this.meta.pidStartTime))) trySignal(this.pid, 'SIGKILL');
      return;
    }
    if (!(await pidAlive(this.pid, this.meta.pidStartTime))) return;
    // none: the wrapper's session, minus the wrapper itself (it records the exit code).
    for (const pid of await sessionPids(this.pid)) if (pid !== this.pid) trySignal(pid, signal);
  }

  async stats(): Promise<SandboxStats> {
    if (this.meta.cgroup) return cgroupStats(this.meta.cgroup);
    let mem = 0;
    let ticks = 0;
    let any = false;
    for (const pid of await sessionPids(this.pid)) {
      const st = await procStat(pid);
      const statm = await fsp.readFile(`/proc/${pid}/statm`, 'utf8').catch(() => null);
      if (!st || !statm) continue;
      any = true;
      mem += Number(statm.split(' ')[1]) * PAGE;
      ticks += st.utime + st.stime;
    }
    return any ? { memoryBytes: mem, cpuUsageNs: Math.round((ticks * 1e9) / CLK_TCK) } : { memoryBytes: null, cpuUsageNs: null };
  }
}

interface LaunchFiles {
  log: { fd: number };
  status: { fd: number };
  logOffset: number;
  close(): Promise<void>;
}

const LOG_FLAGS = fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT;

/** Open the log (O_APPEND; its dir is created if missing) and the status file (truncated). Sync: see readMetaSync. */
function openLaunchFiles(spec: SandboxSpec): LaunchFiles {
  let log: number;
  try {
    log = openSync(spec.logFile, LOG_FLAGS, 0o640);
  } catch (e: any) {
    if (e.code !== 'ENOENT') throw e;
    mkdirSync(path.dirname(spec.logFile), { recursive: true });
    log = openSync(spec.logFile, LOG_FLAGS, 0o640);
  }
  let status: number;
  try {
    status = openSync(path.join(spec.stateDir, STATUS), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC, 0o600);
  } catch (e) {
    closeSync(log);
    throw e;
  }
  const fds = [fdOf(log), fdOf(status)];
  return {
    log: fds[0],
    status: fds[1],
    logOffset: fstatSync(log).size,
    async close() {
      await Promise.all(fds.map((f) => f.close()));
    },
  };
}

/** Spawn detached (own session) with stdio = log file, fd 3 = status file; resolves once spawned. */
async function spawnDetached(
  cmd: string,
  args: string[],
  files: LaunchFiles,
  opts: { env: NodeJS.ProcessEnv; cwd: string; uid?: number; gid?: number; extraFds?: number[] },
): Promise<{ child: ChildProcess; pid: number }> {
  const child = spawn(cmd, args, {
    detached: true,
    stdio: ['ignore', files.log.fd, files.log.fd, files.status.fd, ...(opts.extraFds ?? [])],
    env: opts.env,
    cwd: opts.cwd,
    uid: opts.uid,
    gid: opts.gid,
  });
  const pid = await new Promise<number>((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid!));
    child.once('error', reject);
  });
  child.unref();
  return { child, pid };
}

abstract class BaseRuntime implements SandboxRuntime {
  abstract readonly isolation: IsolationMode;

  abstract start(spec: SandboxSpec): Promise<SandboxHandle>;

  async adopt(id: string, stateDir: string): Promise<SandboxHandle | null> {
    validateId(id);
    const meta = await readMeta(stateDir);
    if (!meta || meta.id !== id || meta.pid === null || meta.startedAt === null) return null;
    if (!(await pidAlive(meta.pid, meta.pidStartTime))) return null;
    return new Handle(meta, stateDir);
  }

  async cleanup(id: string, stateDir: string): Promise<void> {
    validateId(id);
    const meta = await readMeta(stateDir);
    await this.cleanupWith(id, stateDir, meta && meta.id === id ? meta : null);
  }

  /** cleanup() given the sandbox's meta (null: none was written; derive names from the id). */
  protected abstract cleanupWith(id: string, stateDir: string, own: SandboxMeta | null): Promise<void>;

  async close(): Promise<void> {}

  /** Refuse to start over a live sandbox; otherwise clear whatever a previous run left. */
  protected async prepareStateDir(spec: SandboxSpec): Promise<void> {
    await fsp.mkdir(spec.stateDir, { recursive: true, mode: 0o700 });
    const old = await readMeta(spec.stateDir);
    if (old && old.pid !== null && (await pidAlive(old.pid, old.pidStartTime))) {
      throw new Error(`sandbox ${spec.id} is already running (pid ${old.pid}); kill and clean it up first`);
    }
    if (old && old.id !== spec.id) await this.cleanupWith(old.id, spec.stateDir, old);
    const own = old && old.id === spec.id ? old : null;
    const removeFiles = () => Promise.all([META, STATUS, EXIT].map((f) => fsp.rm(path.join(spec.stateDir, f), { force: true })));
    if (own) {
      await this.cleanupWith(spec.id, spec.stateDir, own); // reads the status/exit files: first
      await removeFiles();
    } else {
      await settleAll([this.cleanupWith(spec.id, spec.stateDir, null), removeFiles()]);
    }
  }

  /** Stop the monitor gracefully: kill its payload, give it time to record the exit, then kill it. */
  protected async stopMonitor(meta: SandboxMeta, stateDir: string, killPayload: () => Promise<void>): Promise<void> {
    if (meta.pid === null || !pidAliveSync(meta.pid, meta.pidStartTime)) return;
    await killPayload();
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline && (await pidAlive(meta.pid, meta.pidStartTime))) {
      if ((await readStatusFile(path.join(stateDir, STATUS))).exitCode !== null) break;
      await sleep(25);
    }
    if (await pidAlive(meta.pid, meta.pidStartTime)) trySignal(meta.pid, 'SIGKILL');
  }
}

// ---------------------------------------------------------------------------------------------

class BwrapRuntime extends BaseRuntime {
  readonly isolation = 'sandbox' as const;
  private bridgeReady: Promise<void> | null = null;
  readonly pool: NetPool | null;
  private closed = false;

  constructor(
    private readonly tools: Tools,
    private readonly layout: CgroupLayout,
    private readonly cgroupRoot: string,
    private readonly bridge: { name: string; cidr: string; isolatePorts: boolean },
    private readonly stateRoot: string,
    private readonly binds: string[],
    poolSize: number,
    /** how unreachable mount sources are made reachable (staging.ts) */
    readonly staging: Staging,
  ) {
    super();
    this.pool =
      poolSize > 0
        ? new NetPool({
            size: poolSize,
            prefix: this.poolPrefix(),
            bridge,
            stateRoot,
            ensureBridge: () => this.ensureBridge(),
            // zygotes need bash (mapfile -d) besides nsenter
            zygote: tools.bash ? { layout, cgroupRoot, nsenter: tools.nsenter, bash: tools.bash } : null,
            trace: traceLine,
          })
        : null;
  }

  /** Idempotent and cheap (sysfs + one `ip`): run before every bridged start that builds its own
   * network, and by every pool refill, so a bridge deleted behind our back is recreated.
   * Concurrent callers share one run. */
  ensureBridge(): Promise<void> {
    if (!this.bridgeReady) {
      this.bridgeReady = ensureBridge(this.bridge.name, this.bridge.cidr)
        .catch((e) => {
          throw new Error(`cannot set up bridge ${this.bridge.name} (${this.bridge.cidr}): ${e.message}`);
        })
        .finally(() => {
          this.bridgeReady = null;
        });
    }
    return this.bridgeReady;
  }

  private nsBase(): string {
    return this.cgroupRoot.replace(/\//g, '-');
  }

  private netnsName(id: string): string {
    return `${this.nsBase()}-${id}`;
  }

  poolPrefix(): string {
    return `${this.nsBase()}-${POOL_TAG}`;
  }

  private ipam(bridge: { name: string; cidr: string; stateRoot: string }): Ipam {
    return new Ipam(bridge.stateRoot, bridge.name, bridge.cidr);
  }

  /** Delete pool slots leaked by crashed runtimes (see pool.ts). */
  async reclaimPool(): Promise<string[]> {
    return NetPool.reclaim({ ownRoot: this.cgroupRoot, ipam: this.ipam({ ...this.bridge, stateRoot: this.stateRoot }), bridge: this.bridge.name, layout: this.layout });
  }

  async start(spec: SandboxSpec): Promise<SandboxHandle> {
    const tr = new Tracer(traceEnabled(), `start ${spec?.id}`);
    const bridged = spec?.network?.mode === 'bridge';
    // Read-only steps concurrently: validation, taking a pool slot (handed back if the start is
    // refused). Nothing is created before the spec is valid.
    const [valid, taken] = await Promise.allSettled([
      validateSpec(spec, 'sandbox'),
      // Interactive runs spawn their own launcher (no zygote): they build their network.
      bridged && this.pool && !this.closed && !spec?.stdio ? this.pool.take() : Promise.resolve(null),
    ]);
    const slot: NetSlot | null = taken.status === 'fulfilled' ? taken.value : null;
    const zygote = slot?.zygote ?? null;
    tr.mark('validate+slot');
    if (bridged) tr.note(zygote ? '(pooled+zygote)' : slot ? '(pooled)' : '(built)');
    let idCleanup: Promise<void> | null = null;
    let plan: StagePlan | null = null;
    try {
      if (valid.status === 'rejected') throw valid.reason;
      if (taken.status === 'rejected') throw taken.reason;
      plan = this.stagePlanFor(spec);
      // Refuse to start over a live sandbox; otherwise clear whatever a previous run left.
      const old = readMetaSync(spec.stateDir);
      if (old && old.pid !== null && pidAliveSync(old.pid, old.pidStartTime)) {
        throw new Error(`sandbox ${spec.id} is already running (pid ${old.pid}); kill and clean it up first`);
      }
      if (!old && !existsSync(spec.stateDir)) mkdirSync(spec.stateDir, { recursive: true, mode: 0o700 });
      if (old && old.id !== spec.id) await this.cleanupWith(old.id, spec.stateDir, old);
      if (old && old.id === spec.id) await this.cleanupWith(spec.id, spec.stateDir, old);
      else if (!zygote) await this.cleanupWith(spec.id, spec.stateDir, null);
      // With a zygote this start creates nothing id-derived: id-derived leftovers (of a run that
      // crashed before writing its meta) are cleared concurrently with the rest.
      else idCleanup = this.cleanupWith(spec.id, spec.stateDir, null);
    } catch (e) {
      if (slot) this.pool!.giveBack(slot);
      throw e;
    }
    tr.mark('prepare');
    if (plan) tr.note(`(staged ${plan.mounts.length} mounts)`);
    const netns = slot ? slot.netns : bridged ? this.netnsName(spec.id) : null;
    const meta: SandboxMeta = {
      v: 1,
      id: spec.id,
      isolation: 'sandbox',
      state: 'starting',
      pid: null,
      pidStartTime: null,
      startedAt: null,
      ip: spec.network.mode === 'host' ? '127.0.0.1' : slot ? slot.ip : null,
      network: spec.network.mode,
      netns,
      hostIf: slot ? slot.hostIf : netns ? vethName(netns) : null,
      bridge: bridged ? { name: this.bridge.name, cidr: this.bridge.cidr, stateRoot: this.stateRoot } : null,
      cgroup: zygote && slot!.cgroup ? slot!.cgroup : cgroupRef(this.layout, this.cgroupRoot, spec.id),
      logFile: spec.logFile,
    };
    const held: Array<{ close(): Promise<void> }> = [];
    const closeHeld = () => Promise.all(held.splice(0).map((h) => h.close()));
    let late: Promise<void> | null = null;
    try {
      // The removal of a stale exit.json and of id-derived leftovers only has to be done before
      // start() returns: in the background meanwhile.
      late = settleAll([fsp.rm(path.join(spec.stateDir, EXIT), { force: true }), ...(idCleanup ? [idCleanup] : [])]);
      late.catch(() => {}); // awaited below
      // The plan goes to meta.json before anything runs, so cleanup() can undo a start that
      // crashes midway (an id-derived cgroup is also found without it; a pool slot taken but not
      // recorded yet is reclaimed as leaked by the next runtime).
      writeJsonAtomicSync(path.join(spec.stateDir, META), meta);
      if (zygote) await applyLimits(meta.cgroup!, spec.limits);
      else await createCgroup(this.layout, this.cgroupRoot, meta.cgroup!, spec.limits);
      const files = openLaunchFiles(spec);
      held.push(files);
      const argsFh = envArgsFd(spec, !zygote);
      held.push(argsFh);
      const listFh = zygote
        ? unlinkedFile(spec.stateDir, '.launch', [...(plan?.prefix ?? []), ...this.dropPrivArgs(spec, null), ...this.bwrapArgs(spec, plan)].map((a) => a + '\0').join(''), false)
        : null;
      if (listFh) held.push(listFh);
      tr.mark('meta+cgroup+files');
      if (bridged && !slot) {
        await this.ensureBridge();
        await createNetnsAndVeth({ netns: netns!, hostIf: meta.hostIf!, bridge: this.bridge.name, isolate: this.bridge.isolatePorts });
        meta.ip = await this.ipam(meta.bridge!).allocate(netns!, spec.id);
        await Promise.all([configureNetnsSide({ netns: netns!, ip: meta.ip, cidr: parseCidr(this.bridge.cidr) }), forgetNeighbor(meta.ip, this.bridge.name)]);
        tr.mark('network');
      }
      let child: ChildProcessLike | undefined;
      let pid: number;
      meta.startedAt = new Date().toISOString();
      if (zygote) {
        // Go: the zygote opens log, status, env and launch list through /proc/<our pid>/fd/N, so
        // they stay open here until bwrap reported in or the zygote died (below).
        child = zygote.child;
        pid = zygote.pid;
        meta.pidStartTime = zygote.startTime;
        zygote.child.stdin!.end(`${process.pid} ${listFh!.fd} ${files.log.fd} ${files.status.fd} ${argsFh.fd}\n`);
      } else if (spec.stdio) {
        // The caller's stdio (pty/pipes); status and env are opened through /proc/<our pid>/fd/N
        // like the zygote does, so they stay open here until bwrap reported in (below).
        const d = `/proc/${process.pid}/fd`;
        const [cmd, ...args] = [this.tools.bash ?? this.tools.sh, ...this.launchArgs(spec, meta, plan)];
        args.splice(1, 1, `exec 3>"${d}/${files.status.fd}" 4<"${d}/${argsFh.fd}" || exit 125; ` + args[1]);
        // Pipes from node are sockets, and a first-level bash reads ~/.bashrc when stdin is a
        // socket (rshd detection): SHLVL=1 makes every bash of the chain a nested one.
        ({ child, pid } = await spec.stdio.spawn(cmd, args, { env: { ...HELPER_ENV, SHLVL: '1' } as Record<string, string>, cwd: '/' }));
        meta.pidStartTime = procStatSync(pid)?.startTime ?? null;
      } else {
        // The environment goes to bwrap through fd 4 (--args), not argv: argv of host processes is
        // visible to every host user in `ps`, and app env holds secrets.
        ({ child, pid } = await spawnDetached(this.tools.bash ?? this.tools.sh, this.launchArgs(spec, meta, plan), files, { env: HELPER_ENV, cwd: '/', extraFds: [argsFh.fd] }));
        await closeHeld(); // the child has its own copies
        meta.pidStartTime = procStatSync(pid)?.startTime ?? null;
      }
      tr.mark(zygote ? 'go' : 'spawn');
      meta.pid = pid;
      meta.state = 'running';
      const statusFile = path.join(spec.stateDir, STATUS);
      // Record the pid while bwrap sets the sandbox up; meanwhile wait until bwrap reports it is
      // set up (child-pid) or the launch chain died.
      const [, st] = await Promise.all([
        writeMeta(spec.stateDir, meta).then(() => late),
        waitFor(
          async () => {
            const s = await readStatusFile(statusFile);
            if (s.childPid !== null) return s;
            if (!pidAliveSync(pid, meta.pidStartTime)) return readStatusFile(statusFile); // written just before it exited?
            return null;
          },
          { watchFile: statusFile, child, pollMs: 10, timeoutMs: 15_000 },
        ),
      ]);
      await closeHeld();
      tr.mark('bwrap-ready');
      if (st === null) throw new Error(`sandbox ${spec.id} failed to start: no status from bwrap within 15s`);
      if (st.childPid === null) {
        const out = await tailFrom(spec.logFile, files.logOffset);
        throw new Error(`sandbox ${spec.id} failed to start: ${out || 'launcher exited without output'}`);
      }
      await commandStarted(st.childPid, statusFile, meta.cgroup, pid);
      tr.mark('command-forked');
      tr.done();
      if (slot) void this.ipam(meta.bridge!).relabel(slot.netns, spec.id).catch(() => {});
      return new Handle(meta, spec.stateDir, child);
    } catch (e) {
      await closeHeld();
      if (meta.pid === null) discardZygote(zygote); // never launched: it must not run anything
      await idCleanup?.catch(() => {});
      await late?.catch(() => {});
      await this.cleanupWith(spec.id, spec.stateDir, meta).catch(() => {});
      // Nothing ran: do not leave an exit record for a process that never existed.
      await fsp.rm(path.join(spec.stateDir, EXIT), { force: true });
      throw e;
    }
  }

  /** bash launcher (closes inherited fds, joins the cgroups, execs) + [staging] + dropPrivArgs + bwrapArgs. */
  private launchArgs(spec: SandboxSpec, meta: SandboxMeta, plan: StagePlan | null): string[] {
    const files = procsFiles(meta.cgroup!);
    const launcher = closeFdsSnippet(4) + JOIN_CGROUPS_SNIPPET + 'exec "$@"';
    return ['-c', launcher, 'swg-launch', String(files.length), ...files, ...(plan?.prefix ?? []), ...this.dropPrivArgs(spec, meta.netns), ...this.bwrapArgs(spec, plan)];
  }

  /**
   * null when bwrap, running as spec.uid, can reach every mount source itself (the usual case:
   * nothing is added to the chain); otherwise the staging step (staging.ts) and the rewritten
   * mounts. Throws when a source is unreachable and cannot be staged (no staging directory, or
   * the uid could redirect the path root would resolve).
   */
  private stagePlanFor(spec: SandboxSpec): (StagePlan & { rootfs?: string }) | null {
    // An image root is staged like a mount (first in the list), under the same rules.
    const mounts = [...(spec.rootfs ? [{ source: spec.rootfs.source, target: '/', readonly: spec.rootfs.readonly }] : []), ...((spec.mounts ?? []) as Mount[])];
    const who = { uid: spec.uid, gid: spec.gid };
    let blocked: { source: string; dir: string } | null = null;
    for (const m of mounts) {
      const dir = blockingDir(m.source, who);
      if (dir) {
        blocked = { source: m.source, dir };
        break;
      }
    }
    if (!blocked) return null;
    const why = `mount source "${blocked.source}" is not reachable by uid ${spec.uid} (${blocked.dir} is not searchable by it)`;
    const staging = this.staging;
    if (staging.dir === null) throw new Error(`sandbox ${spec.id}: ${why} and cannot be staged: ${staging.reason}`);
    for (const m of mounts) {
      const dir = redirectableBy(m.source, who);
      if (dir) throw new Error(`sandbox ${spec.id}: ${why}, and it cannot be staged safely: ${dir} on the way to "${m.source}" is writable by uid ${spec.uid}`);
    }
    const plan = stagePlan(staging, mounts);
    return spec.rootfs ? { prefix: plan.prefix, mounts: plan.mounts.slice(1), rootfs: plan.mounts[0].source } : plan;
  }

  /**
   * Join the netns (if `netns`; a zygote is already in its own) and drop to spec.uid:gid with no
   * supplementary groups, no capabilities (bounding set included) and no_new_privs.
   */
  private dropPrivArgs(spec: SandboxSpec, netns: string | null): string[] {
    const pre: string[] = [];
    if (netns) pre.push(this.tools.nsenter, `--net=${netnsPath(netns)}`, '--');
    pre.push(
      this.tools.setpriv,
      `--reuid=${spec.uid}`,
      `--regid=${spec.gid}`,
      '--clear-groups',
      '--inh-caps=-all',
      '--bounding-set=-all',
      '--no-new-privs',
      '--',
    );
    return pre;
  }

  /** `plan`: the mounts' sources are the staged ones. */
  private bwrapArgs(spec: SandboxSpec, plan: (StagePlan & { rootfs?: string }) | null): string[] {
    const b: string[] = [this.tools.bwrap, '--unshare-user', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try'];
    if (spec.network.mode === 'none') b.push('--unshare-net');
    b.push('--hostname', spec.id);
    // Image apps: their USER inside the user namespace; the host side stays spec.uid (setpriv above).
    if (spec.insideUid !== undefined) b.push('--uid', String(spec.insideUid));
    if (spec.insideGid !== undefined) b.push('--gid', String(spec.insideGid));
    if (spec.rootfs) b.push(spec.rootfs.readonly ? '--ro-bind' : '--bind', plan?.rootfs ?? spec.rootfs.source, '/');
    else b.push(...this.binds);
    b.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp');
    for (const m of (plan?.mounts ?? spec.mounts) as Mount[]) b.push(m.readonly ? '--ro-bind' : '--bind', m.source, m.target);
    if (!spec.rootfs) b.push('--remount-ro', '/');
    // --clearenv must precede --args: bwrap applies both in order.
    b.push('--chdir', spec.cwd, '--clearenv', '--args', '4');
    // A terminal session keeps the launcher's session, so the terminal's signals reach the command.
    if (!spec.stdio?.tty) b.push('--new-session');
    b.push('--cap-drop', 'ALL', '--json-status-fd', '3', '--', ...spec.argv);
    return b;
  }

  protected async cleanupWith(id: string, stateDir: string, own: SandboxMeta | null): Promise<void> {
    const cg = own?.cgroup ?? cgroupRef(this.layout, this.cgroupRoot, id);
    const netns = own ? own.netns : this.netnsName(id);
    const hostIf = own ? own.hostIf : vethName(this.netnsName(id));
    const bridge = own ? own.bridge : { name: this.bridge.name, cidr: this.bridge.cidr, stateRoot: this.stateRoot };
    if (own && own.state !== 'cleaned') {
      await this.stopMonitor(own, stateDir, async () => {
        await signalCgroup(cg, 'SIGKILL', [own.pid!]);
      });
      await readFinalExit(stateDir); // persist exit (with the OOM counter) before the cgroup goes
    }
    // cgroup and network are independent: concurrently
    await settleAll([
      (async () => {
        await killCgroup(cg); // leftovers: daemons that outlived the main command
        await removeCgroup(cg);
      })(),
      (async () => {
        if (hostIf || netns) await deleteNetworks([{ netns, hostIf, ip: bridge ? (own?.ip ?? null) : null, bridge: bridge?.name ?? null }]);
        if (netns && bridge) await this.ipam(bridge).release(netns);
      })(),
    ]);
    if (own && own.state !== 'cleaned') {
      own.state = 'cleaned';
      await writeMeta(stateDir, own);
    }
  }

  /** Release the pooled networks not handed out; sandboxes keep running. Idempotent. */
  override async close(): Promise<void> {
    this.closed = true;
    await this.pool?.close();
  }

  /** pids currently in a sandbox's cgroup (diagnostics/tests). */
  async pidsOf(stateDir: string): Promise<number[]> {
    const meta = await readMeta(stateDir);
    return meta?.cgroup ? cgroupPids(meta.cgroup) : [];
  }
}

/**
 * A file holding `content`, already unlinked (nothing stays on disk, nothing to clean up). Its fd's
 * offset is at the end: readers must open it anew, through /proc/<pid>/fd/N (the zygote does;
 * `fresh` does it here, for handing the fd itself to a child). Sync: see readMetaSync.
 */
function unlinkedFile(dir: string, prefix: string, content: string, fresh: boolean): Fd {
  const file = path.join(dir, `${prefix}-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`);
  const fd = openSync(file, 'wx', 0o600);
  try {
    unlinkSync(file);
    writeSync(fd, content);
    if (!fresh) return fdOf(fd);
    const r = openSync(`/proc/self/fd/${fd}`, 'r');
    closeSync(fd);
    return fdOf(r);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {}
    try {
      unlinkSync(file);
    } catch {}
    throw e;
  }
}

/**
 * The sandbox environment as bwrap `--args` (NUL-separated `--setenv K V`), in a file unlinked as
 * soon as it is open: never visible in `ps`, nothing left on disk.
 */
function envArgsFd(spec: SandboxSpec, fresh: boolean): Fd {
  const envArgs = Object.entries(sandboxEnv(spec.env ?? {})).flatMap(([k, v]) => ['--setenv', k, v]);
  return unlinkedFile(spec.stateDir, '.env-args', envArgs.map((a) => a + '\0').join(''), fresh);
}

// ---------------------------------------------------------------------------------------------

class PlainRuntime extends BaseRuntime {
  readonly isolation = 'none' as const;

  constructor(private readonly shell: string) {
    super();
  }

  async start(spec: SandboxSpec): Promise<SandboxHandle> {
    await validateSpec(spec, 'none');
    await this.prepareStateDir(spec);
    // cwd is a path inside the (absent) sandbox: map it through the mounts onto the host.
    let cwd = spec.cwd;
    const m = [...(spec.mounts ?? [])]
      .sort((a, b) => b.target.length - a.target.length)
      .find((x) => spec.cwd === x.target || spec.cwd.startsWith(x.target + '/'));
    if (m) cwd = path.join(m.source, spec.cwd.slice(m.target.length));
    const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
    const switchIds = asRoot && spec.uid > 0;
    if (switchIds) {
      // No mount namespace here (nothing is isolated): the process works on the host paths, as
      // spec.uid, so they must be reachable by it. Say so, rather than failing in spawn().
      const who = { uid: spec.uid, gid: spec.gid };
      let st: Stats | null = null;
      try {
        st = statSync(cwd);
      } catch {}
      const blocked = blockingDir(cwd, who) ?? (st && st.isDirectory() && !canSearch(st, who) ? cwd : null);
      if (blocked) {
        throw new Error(
          `sandbox ${spec.id}: isolation "none" runs the process as uid ${spec.uid} directly on the host, but ${blocked} is not searchable by it ` +
            `(on the way to its working directory ${cwd}). Give others search permission there (chmod o+x) or use another directory; ` +
            `isolation "sandbox" does not need this.`,
        );
      }
    }
    const meta: SandboxMeta = {
      v: 1,
      id: spec.id,
      isolation: 'none',
      state: 'starting',
      pid: null,
      pidStartTime: null,
      startedAt: null,
      ip: '127.0.0.1',
      network: spec.network.mode,
      netns: null,
      hostIf: null,
      bridge: null,
      cgroup: null,
      logFile: spec.logFile,
    };
    await writeMeta(spec.stateDir, meta);
    const wrapper =
      closeFdsSnippet(3) +
      'trap : HUP INT TERM QUIT USR1 USR2; echo "{ \\"child-pid\\": $$ }" >&3; "$@" 3>&-; c=$?; echo "{ \\"exit-code\\": $c }" >&3; exit $c';
    try {
      meta.startedAt = new Date().toISOString();
      const files = await openLaunchFiles(spec);
      let spawned: { child?: ChildProcessLike; pid: number };
      try {
        if (spec.stdio) {
          // The caller's stdio; the status file is opened by path (the wrapper runs as we do), and
          // the ids are dropped for the command only (the caller's spawn cannot set them).
          const status = path.join(spec.stateDir, STATUS);
          const norc = this.shell.endsWith('bash') ? ['--norc'] : []; // pipes are sockets: see BwrapRuntime
          const drop = switchIds ? [(await which('setpriv')) ?? 'setpriv', `--reuid=${spec.uid}`, `--regid=${spec.gid}`, '--clear-groups', '--'] : [];
          spawned = await spec.stdio.spawn(this.shell, [...norc, '-c', 'exec 3>>"$0" || exit 125; ' + wrapper, status, ...drop, ...spec.argv], { env: sandboxEnv(spec.env ?? {}), cwd });
        } else spawned = await spawnDetached(this.shell, ['-c', wrapper, 'swg-run', ...spec.argv], files, {
          env: sandboxEnv(spec.env ?? {}),
          cwd,
          uid: switchIds ? spec.uid : undefined,
          gid: switchIds ? spec.gid : undefined,
        });
      } finally {
        await files.close();
      }
      const { child, pid } = spawned;
      meta.pid = pid;
      meta.pidStartTime = (await procStat(pid))?.startTime ?? null;
      meta.state = 'running';
      await writeMeta(spec.stateDir, meta);
      return new Handle(meta, spec.stateDir, child);
    } catch (e: any) {
      await fsp.rm(path.join(spec.stateDir, META), { force: true });
      throw new Error(`sandbox ${spec.id} failed to start: ${e.message}`);
    }
  }

  protected async cleanupWith(_id: string, stateDir: string, meta: SandboxMeta | null): Promise<void> {
    if (!meta || meta.pid === null) return;
    const sid = meta.pid;
    await this.stopMonitor(meta, stateDir, async () => {
      for (const pid of await sessionPids(sid)) if (pid !== sid) trySignal(pid, 'SIGKILL');
    });
    await readFinalExit(stateDir);
    // Leftovers in the session (only if the session leader is really ours or gone).
    if (!(await pidAlive(sid)) || (await pidAlive(sid, meta.pidStartTime))) {
      for (const pid of await sessionPids(sid)) trySignal(pid, 'SIGKILL');
    }
    if (meta.state !== 'cleaned') {
      meta.state = 'cleaned';
      await writeMeta(stateDir, meta);
    }
  }
}

// ---------------------------------------------------------------------------------------------

export const DEFAULT_NET_POOL_SIZE = 2;

export async function createRuntime(opts: RuntimeOptions): Promise<ManagedSandboxRuntime> {
  if (opts.isolation === 'none') return new PlainRuntime((await which('bash')) ?? '/bin/sh');
  if (opts.isolation !== 'sandbox') throw new Error(`unknown isolation mode "${String(opts.isolation)}" (use "sandbox" or "none")`);
  const cgroupRoot = validateCgroupRoot(opts.cgroupRoot ?? DEFAULT_CGROUP_ROOT);
  const bridge = { ...DEFAULT_BRIDGE, isolatePorts: true, ...(opts.bridge ?? {}) };
  validateBridgeName(bridge.name);
  parseCidr(bridge.cidr);
  const stateRoot = opts.stateRoot ?? DEFAULT_STATE_ROOT;
  if (!path.isAbsolute(stateRoot)) throw new Error(`stateRoot must be an absolute path, got "${stateRoot}"`);
  const poolSize = opts.netPoolSize ?? DEFAULT_NET_POOL_SIZE;
  if (!Number.isInteger(poolSize) || poolSize < 0 || poolSize > 64) throw new Error(`netPoolSize must be an integer between 0 and 64, got ${poolSize}`);
  const d = await detect();
  if (!d.available || !d.layout) {
    throw new Error(`sandbox isolation is not available on this host: ${d.reason ?? 'unknown reason'} (isolation "none" must be chosen explicitly)`);
  }
  // Create <cgroupRoot> now (v2: delegate memory/cpu/pids to it) so a host that cannot host our
  // cgroups fails here, with the reason, rather than at the first start.
  await prepareCgroupRoot(d.layout, cgroupRoot).catch((e: Error) => {
    throw new Error(`sandbox isolation is not available on this host: ${e.message}`);
  });
  const tools = d.tools as Tools;
  const staging = detectStaging(tools, [tools.setpriv, tools.bwrap, tools.nsenter]);
  const rt = new BwrapRuntime(tools, d.layout, cgroupRoot, bridge, stateRoot, await systemBindArgs(), poolSize, staging);
  if (staging.dir === null) traceLine(`mount staging unavailable (${staging.reason}): mount sources must be reachable by the sandbox uid`);
  const reclaimed = await rt.reclaimPool();
  if (reclaimed.length) traceLine(`reclaimed leaked pool networks: ${reclaimed.join(', ')}`);
  if (opts.bridge) {
    await rt.ensureBridge();
    // Pre-build the pool in the background; without explicit bridge options it starts filling
    // after the first bridged start (runtimes that only run host-network builds never build one).
    void rt.pool?.fill();
  }
  return rt;
}
