/**
 * The sandbox runtimes.
 *
 * `sandbox` launch chain (one detached process, own session, stdio = the log file, fd 3 = the
 * status file; the pid never changes because every step execs):
 *
 *   sh -c 'write $$ into each cgroup.procs; exec "$@"'      (root; joins the cgroups first)
 *     -> nsenter --net=/run/netns/NS                          (bridge mode only)
 *     -> setpriv --reuid --regid --clear-groups ...           (drops root, all caps)
 *     -> bwrap --unshare-user/pid/ipc/uts/cgroup[/net] ... --json-status-fd 3 -- argv
 *
 * bwrap writes {"child-pid": N} once the sandbox is set up and {"exit-code": N} when the command
 * ends, to a file we opened, so the exit status is recorded even when our Node process is gone.
 *
 * `none` launch: sh -c 'trap; "$@" 3>&-; echo {"exit-code": $?} >&3' — same files, no isolation.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { promises as fsp, constants as fsc } from 'node:fs';
import path from 'node:path';
import {
  cgroupPids,
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
import { Ipam, createNetns, deleteLink, deleteNetns, ensureBridge, netnsPath, parseCidr, setupVeth, validateBridgeName, vethName } from './net.ts';
import type {
  IsolationMode,
  Mount,
  RuntimeOptions,
  SandboxExit,
  SandboxHandle,
  SandboxRuntime,
  SandboxSpec,
  SandboxStats,
} from './types.ts';
import {
  DEFAULT_SANDBOX_PATH,
  HELPER_ENV,
  listPids,
  pidAlive,
  procStat,
  readJson,
  readStatusFile,
  signalFromStatus,
  sleep,
  tailFrom,
  trySignal,
  which,
  writeJsonAtomic,
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
  const targets = new Set<string>();
  for (const m of spec.mounts ?? []) {
    if (!path.isAbsolute(m.source)) throw new Error(`sandbox ${spec.id}: mount source must be absolute, got "${m.source}"`);
    const t = m.target;
    if (!path.posix.isAbsolute(t) || path.posix.normalize(t) !== t || t === '/' || t.endsWith('/')) {
      throw new Error(`sandbox ${spec.id}: mount target must be a normalized absolute path other than "/", got "${t}"`);
    }
    if (FORBIDDEN_TARGETS.some((f) => t === f || t.startsWith(f + '/'))) throw new Error(`sandbox ${spec.id}: mount target "${t}" would shadow a system directory`);
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

/**
 * Shell snippet closing every inherited fd above `keep`. Node passes its own non-CLOEXEC fds
 * (e.g. ones its parent leaked to it) to children, and bwrap does not close them: without this a
 * sandbox could inherit host pipes or files. Multi-digit fds need bash; POSIX sh only closes 0-9.
 */
export function closeFdsSnippet(keep: number): string {
  return (
    `if [ -n "$BASH_VERSION" ]; then for f in /proc/$$/fd/*; do n=\${f##*/}; if [ "$n" -gt ${keep} ] 2>/dev/null; then { eval "exec $n>&-"; } 2>/dev/null; fi; done; ` +
    `else for n in 5 6 7 8 9; do if [ "$n" -gt ${keep} ]; then { eval "exec $n>&-"; } 2>/dev/null; fi; done; fi; `
  );
}

/** Does `pid` have a child process? */
async function hasChild(pid: number): Promise<boolean> {
  const t = await fsp.readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => null);
  if (t !== null) return t.trim() !== '';
  for (const p of await listPids()) if ((await procStat(p))?.ppid === pid) return true;
  return false;
}

/**
 * bwrap reports child-pid as soon as it cloned the sandbox's pid 1, before the mounts are set
 * up and the command is forked. Wait (bounded) until pid 1 has forked the command, or the sandbox
 * already ended, so that an immediate kill() reaches the command (a pid-namespace init ignores
 * signals it has no handler for).
 */
async function commandStarted(childPid: number, statusFile: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    if (await hasChild(childPid)) return;
    if (!(await pidAlive(childPid))) return;
    if ((await readStatusFile(statusFile)).exitCode !== null) return;
    await sleep(5);
  }
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
    child?: ChildProcess,
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

/** Spawn detached (own session) with stdio = log file (O_APPEND), fd 3 = status file; resolves once spawned. */
async function spawnDetached(
  cmd: string,
  args: string[],
  opts: { env: NodeJS.ProcessEnv; cwd: string; spec: SandboxSpec; uid?: number; gid?: number; extraFds?: number[] },
): Promise<{ child: ChildProcess; pid: number; logOffset: number }> {
  const { spec } = opts;
  await fsp.mkdir(path.dirname(spec.logFile), { recursive: true });
  const logFh = await fsp.open(spec.logFile, fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT, 0o640);
  let statusFh: fsp.FileHandle | null = null;
  try {
    statusFh = await fsp.open(path.join(spec.stateDir, STATUS), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC, 0o600);
    const logOffset = (await logFh.stat()).size;
    const child = spawn(cmd, args, {
      detached: true,
      stdio: ['ignore', logFh.fd, logFh.fd, statusFh.fd, ...(opts.extraFds ?? [])],
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
    return { child, pid, logOffset };
  } finally {
    await logFh.close().catch(() => {});
    await statusFh?.close().catch(() => {});
  }
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

  abstract cleanup(id: string, stateDir: string): Promise<void>;

  /** Refuse to start over a live sandbox; otherwise clear whatever a previous run left. */
  protected async prepareStateDir(spec: SandboxSpec): Promise<void> {
    await fsp.mkdir(spec.stateDir, { recursive: true, mode: 0o700 });
    const old = await readMeta(spec.stateDir);
    if (old && old.pid !== null && (await pidAlive(old.pid, old.pidStartTime))) {
      throw new Error(`sandbox ${spec.id} is already running (pid ${old.pid}); kill and clean it up first`);
    }
    if (old && old.id !== spec.id) await this.cleanup(old.id, spec.stateDir);
    await this.cleanup(spec.id, spec.stateDir);
    for (const f of [META, STATUS, EXIT]) await fsp.rm(path.join(spec.stateDir, f), { force: true });
  }

  /** Stop the monitor gracefully: kill its payload, give it time to record the exit, then kill it. */
  protected async stopMonitor(meta: SandboxMeta, stateDir: string, killPayload: () => Promise<void>): Promise<void> {
    if (meta.pid === null || !(await pidAlive(meta.pid, meta.pidStartTime))) return;
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

  constructor(
    private readonly tools: Tools,
    private readonly layout: CgroupLayout,
    private readonly cgroupRoot: string,
    private readonly bridge: { name: string; cidr: string; isolatePorts: boolean },
    private readonly stateRoot: string,
  ) {
    super();
  }

  /** Idempotent and cheap (a few `ip` calls): run before every bridged start, so a bridge deleted
   * behind our back is recreated. Concurrent callers share one run. */
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

  private netnsName(id: string): string {
    return `${this.cgroupRoot.replace(/\//g, '-')}-${id}`;
  }

  private ipam(bridge: { name: string; cidr: string; stateRoot: string }): Ipam {
    return new Ipam(bridge.stateRoot, bridge.name, bridge.cidr);
  }

  async start(spec: SandboxSpec): Promise<SandboxHandle> {
    await validateSpec(spec, 'sandbox');
    await this.prepareStateDir(spec);
    const bridged = spec.network.mode === 'bridge';
    const netns = bridged ? this.netnsName(spec.id) : null;
    const meta: SandboxMeta = {
      v: 1,
      id: spec.id,
      isolation: 'sandbox',
      state: 'starting',
      pid: null,
      pidStartTime: null,
      startedAt: null,
      ip: spec.network.mode === 'host' ? '127.0.0.1' : null,
      network: spec.network.mode,
      netns,
      hostIf: netns ? vethName(netns) : null,
      bridge: bridged ? { name: this.bridge.name, cidr: this.bridge.cidr, stateRoot: this.stateRoot } : null,
      cgroup: cgroupRef(this.layout, this.cgroupRoot, spec.id),
      logFile: spec.logFile,
    };
    // Record the plan before creating anything, so cleanup() can undo a start that crashed midway.
    await writeMeta(spec.stateDir, meta);
    try {
      await createCgroup(this.layout, this.cgroupRoot, meta.cgroup!, spec.limits);
      if (bridged) {
        await this.ensureBridge();
        await createNetns(netns!);
        meta.ip = await this.ipam(meta.bridge!).allocate(netns!, spec.id);
        await writeMeta(spec.stateDir, meta);
        await setupVeth({ netns: netns!, hostIf: meta.hostIf!, bridge: this.bridge.name, ip: meta.ip, cidr: parseCidr(this.bridge.cidr), isolate: this.bridge.isolatePorts });
      }
      const args = await this.launchArgs(spec, meta);
      // The environment goes to bwrap through fd 4 (--args), not argv: argv of host processes is
      // visible to every host user in `ps`, and app env holds secrets. The file is unlinked at once.
      const envArgs = Object.entries(sandboxEnv(spec.env ?? {})).flatMap(([k, v]) => ['--setenv', k, v]);
      const argsFile = path.join(spec.stateDir, `.env-args-${process.pid}-${Date.now()}`);
      await fsp.writeFile(argsFile, envArgs.map((a) => a + '\0').join(''), { mode: 0o600 });
      const argsFh = await fsp.open(argsFile, 'r');
      await fsp.rm(argsFile, { force: true });
      meta.startedAt = new Date().toISOString();
      let spawned;
      try {
        spawned = await spawnDetached(this.tools.bash ?? this.tools.sh, args, { env: HELPER_ENV, cwd: '/', spec, extraFds: [argsFh.fd] });
      } finally {
        await argsFh.close().catch(() => {});
      }
      const { child, pid, logOffset } = spawned;
      meta.pid = pid;
      meta.pidStartTime = (await procStat(pid))?.startTime ?? null;
      meta.state = 'running';
      await writeMeta(spec.stateDir, meta);
      // Wait until bwrap reports the sandbox is set up (child-pid) or the launch chain died.
      const deadline = Date.now() + 15_000;
      for (;;) {
        const st = await readStatusFile(path.join(spec.stateDir, STATUS));
        if (st.childPid !== null) {
          await commandStarted(st.childPid, path.join(spec.stateDir, STATUS));
          break;
        }
        if (!(await pidAlive(pid, meta.pidStartTime))) {
          const again = await readStatusFile(path.join(spec.stateDir, STATUS));
          if (again.childPid !== null) break;
          const out = await tailFrom(spec.logFile, logOffset);
          throw new Error(`sandbox ${spec.id} failed to start: ${out || 'launcher exited without output'}`);
        }
        if (Date.now() > deadline) throw new Error(`sandbox ${spec.id} failed to start: no status from bwrap within 15s`);
        await sleep(10);
      }
      return new Handle(meta, spec.stateDir, child);
    } catch (e) {
      await this.cleanup(spec.id, spec.stateDir).catch(() => {});
      // Nothing ran: do not leave an exit record for a process that never existed.
      await fsp.rm(path.join(spec.stateDir, EXIT), { force: true });
      throw e;
    }
  }

  private async launchArgs(spec: SandboxSpec, meta: SandboxMeta): Promise<string[]> {
    const files = procsFiles(meta.cgroup!);
    const launcher =
      closeFdsSnippet(4) +
      'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || { echo "swg-launch: cannot join cgroup $1" >&2; exit 125; }; shift; n=$((n-1)); done; exec "$@"';
    const pre: string[] = ['-c', launcher, 'swg-launch', String(files.length), ...files];
    if (meta.netns) pre.push(this.tools.nsenter, `--net=${netnsPath(meta.netns)}`, '--');
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
    const b: string[] = [this.tools.bwrap, '--unshare-user', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try'];
    if (spec.network.mode === 'none') b.push('--unshare-net');
    b.push('--hostname', spec.id);
    b.push(...(await systemBindArgs()));
    b.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp');
    for (const m of spec.mounts as Mount[]) b.push(m.readonly ? '--ro-bind' : '--bind', m.source, m.target);
    b.push('--remount-ro', '/');
    // --clearenv must precede --args: bwrap applies both in order.
    b.push('--chdir', spec.cwd, '--clearenv', '--args', '4');
    b.push('--new-session', '--cap-drop', 'ALL', '--json-status-fd', '3', '--', ...spec.argv);
    return [...pre, ...b];
  }

  async cleanup(id: string, stateDir: string): Promise<void> {
    validateId(id);
    const meta = await readMeta(stateDir);
    const own = meta && meta.id === id ? meta : null;
    const cg = own?.cgroup ?? cgroupRef(this.layout, this.cgroupRoot, id);
    const netns = own ? own.netns : this.netnsName(id);
    const hostIf = own ? own.hostIf : vethName(this.netnsName(id));
    const bridge = own ? own.bridge : { name: this.bridge.name, cidr: this.bridge.cidr, stateRoot: this.stateRoot };
    if (own) {
      await this.stopMonitor(own, stateDir, async () => {
        await signalCgroup(cg, 'SIGKILL', [own.pid!]);
      });
      await readFinalExit(stateDir); // persist exit (with the OOM counter) before the cgroup goes
    }
    await killCgroup(cg); // leftovers: daemons that outlived the main command
    await removeCgroup(cg);
    if (hostIf) await deleteLink(hostIf);
    if (netns) {
      await deleteNetns(netns);
      if (bridge) await this.ipam(bridge).release(netns);
    }
    if (own && own.state !== 'cleaned') {
      own.state = 'cleaned';
      await writeMeta(stateDir, own);
    }
  }

  /** pids currently in a sandbox's cgroup (diagnostics/tests). */
  async pidsOf(stateDir: string): Promise<number[]> {
    const meta = await readMeta(stateDir);
    return meta?.cgroup ? cgroupPids(meta.cgroup) : [];
  }
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
    const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
    const switchIds = asRoot && spec.uid > 0;
    try {
      meta.startedAt = new Date().toISOString();
      const { child, pid } = await spawnDetached(this.shell, ['-c', wrapper, 'swg-run', ...spec.argv], {
        env: sandboxEnv(spec.env ?? {}),
        cwd,
        spec,
        uid: switchIds ? spec.uid : undefined,
        gid: switchIds ? spec.gid : undefined,
      });
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

  async cleanup(id: string, stateDir: string): Promise<void> {
    validateId(id);
    const meta = await readMeta(stateDir);
    if (!meta || meta.id !== id || meta.pid === null) return;
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

export async function createRuntime(opts: RuntimeOptions): Promise<SandboxRuntime> {
  if (opts.isolation === 'none') return new PlainRuntime((await which('bash')) ?? '/bin/sh');
  if (opts.isolation !== 'sandbox') throw new Error(`unknown isolation mode "${String(opts.isolation)}" (use "sandbox" or "none")`);
  const cgroupRoot = validateCgroupRoot(opts.cgroupRoot ?? DEFAULT_CGROUP_ROOT);
  const bridge = { ...DEFAULT_BRIDGE, isolatePorts: true, ...(opts.bridge ?? {}) };
  validateBridgeName(bridge.name);
  parseCidr(bridge.cidr);
  const stateRoot = opts.stateRoot ?? DEFAULT_STATE_ROOT;
  if (!path.isAbsolute(stateRoot)) throw new Error(`stateRoot must be an absolute path, got "${stateRoot}"`);
  const d = await detect();
  if (!d.available || !d.layout) {
    throw new Error(`sandbox isolation is not available on this host: ${d.reason ?? 'unknown reason'} (isolation "none" must be chosen explicitly)`);
  }
  // Create <cgroupRoot> now (v2: delegate memory/cpu/pids to it) so a host that cannot host our
  // cgroups fails here, with the reason, rather than at the first start.
  await prepareCgroupRoot(d.layout, cgroupRoot).catch((e: Error) => {
    throw new Error(`sandbox isolation is not available on this host: ${e.message}`);
  });
  const rt = new BwrapRuntime(d.tools as Tools, d.layout, cgroupRoot, bridge, stateRoot);
  if (opts.bridge) await rt.ensureBridge();
  return rt;
}
