/** Public types of @shellwego/sandbox. */

export type IsolationMode = 'sandbox' | 'none';

/** cpus may be fractional, e.g. 0.5 (converted to a CFS quota). */
export interface ResourceLimits {
  memoryMb: number;
  cpus: number;
  pids: number;
}

export interface Mount {
  source: string;
  target: string;
  readonly: boolean;
}

/**
 * bridge: own netns + IP on the platform bridge;
 * host: share the host network (builds, through a proxy env);
 * none: loopback only.
 */
export interface NetworkAttachment {
  mode: 'bridge' | 'host' | 'none';
}

export interface SandboxSpec {
  /** unique, [a-z0-9-_]+, used for cgroup/netns/dir names */
  id: string;
  /** run inside the sandbox; argv[0] resolved via PATH inside */
  argv: string[];
  env: Record<string, string>;
  /** path inside the sandbox (e.g. "/app") */
  cwd: string;
  mounts: Mount[];
  /** unprivileged ids the process runs as */
  uid: number;
  gid: number;
  limits: ResourceLimits;
  network: NetworkAttachment;
  /** host path; stdout+stderr appended here (O_APPEND), survives our process dying */
  logFile: string;
  /** host dir owned by the sandbox package for this process (status file, metadata) */
  stateDir: string;
  /**
   * Interactive runs (one-off processes): the launch chain is started by the caller on stdio it
   * owns (a pty, or pipes) instead of detached onto logFile. Not pooled; not adoptable after the
   * caller exits in any useful way (its stdio is gone with it).
   */
  stdio?: SandboxStdio;
  /**
   * Rootfs mode (OCI images): this host directory is `/` instead of the host's system
   * directories; /proc, /dev and a tmpfs /tmp are mounted in it, then `mounts`. `sandbox`
   * isolation only.
   */
  rootfs?: { source: string; readonly: boolean };
  /**
   * Ids the process has *inside* its user namespace (an image's USER, 0 included); the host
   * side is always the unprivileged uid/gid above. Default: the same as uid/gid.
   */
  insideUid?: number;
  insideGid?: number;
}

/** How an interactive sandbox's launcher is spawned (see SandboxSpec.stdio). */
export interface SandboxStdio {
  /**
   * A terminal: the command stays in the launcher's session (no bwrap --new-session), so the
   * terminal's signals (SIGWINCH on resize) reach it.
   */
  tty: boolean;
  /**
   * Spawn `file args` in a new session (setsid; with a pty as its controlling terminal) with the
   * caller's stdio and exactly this env; resolves with its pid once it runs. `child`, when given,
   * lets the runtime see its exit at once.
   */
  spawn(file: string, args: string[], opts: { env: Record<string, string>; cwd: string }): Promise<{ pid: number; child?: ChildProcessLike }>;
}

/** What the runtime needs of a spawned process: its exit event. */
export interface ChildProcessLike {
  on(event: 'exit', listener: () => void): unknown;
  off(event: 'exit', listener: () => void): unknown;
}

/**
 * How a sandbox ended. When the process died from signal N the status is 128+N: we report
 * exitCode = 128+N AND signal = the signal's name (e.g. 137 -> { exitCode: 137, signal: 'SIGKILL' }).
 * A process that calls exit(137) itself is indistinguishable from one killed by SIGKILL.
 * exitCode null means the exit status is unknown (the monitor process vanished without
 * recording one, e.g. it was killed itself).
 */
export interface SandboxExit {
  exitCode: number | null;
  signal: string | null;
  oomKilled: boolean;
}

export interface SandboxStats {
  memoryBytes: number | null;
  cpuUsageNs: number | null;
}

export interface SandboxHandle {
  id: string;
  /** host pid of the launcher/monitor process (the outer bwrap, or the sh wrapper in `none` mode) */
  pid: number;
  /** IP reachable from the host (bridge mode), '127.0.0.1' for host network / `none` isolation, null for network none */
  ip: string | null;
  /** ISO timestamp */
  startedAt: string;
  /** resolves once, when the sandboxed command ends */
  wait(): Promise<SandboxExit>;
  /** signal every process of the sandbox (default SIGTERM) */
  kill(signal?: NodeJS.Signals): Promise<void>;
  stats(): Promise<SandboxStats>;
}

export interface SandboxRuntime {
  readonly isolation: IsolationMode;
  start(spec: SandboxSpec): Promise<SandboxHandle>;
  /** re-attach to a still-running sandbox after our process restarted; null if it is gone */
  adopt(id: string, stateDir: string): Promise<SandboxHandle | null>;
  /** kill leftovers and remove netns/veth/cgroups/IP lease; idempotent; keeps the state files */
  cleanup(id: string, stateDir: string): Promise<void>;
  /**
   * Release what the runtime itself holds (the pre-built networks of the pool); running
   * sandboxes are not touched. Call on shutdown. Optional here so that test doubles need not
   * implement it; runtimes from createRuntime() always have it.
   */
  close?(): Promise<void>;
}

/** What createRuntime() returns: a SandboxRuntime whose close() must be called on shutdown. */
export interface ManagedSandboxRuntime extends SandboxRuntime {
  close(): Promise<void>;
}

export interface BridgeOptions {
  /** interface name, at most 15 characters */
  name: string;
  /** e.g. '10.89.0.0/16'; the first host address is given to the bridge */
  cidr: string;
  /**
   * Mark each instance's bridge port "isolated" so instances cannot reach each other over the
   * bridge (they can still reach, and be reached from, the host). Default true.
   */
  isolatePorts?: boolean;
}

export interface RuntimeOptions {
  isolation: IsolationMode;
  /** default { name: 'swg0', cidr: '10.89.0.0/16' } */
  bridge?: BridgeOptions;
  /** cgroup sub-path under each hierarchy, default "shellwego" */
  cgroupRoot?: string;
  /** host dir for runtime-wide state (IP allocations); default /var/lib/shellwego/sandbox */
  stateRoot?: string;
  /**
   * `sandbox` isolation: how many slots for bridged starts to keep pre-built (netns + veth on the
   * bridge + IP + addresses and routes, and, with bash, a cgroup with a launcher process already
   * in it), so that starts skip that work. Default 2; 0 disables the pool. Each slot holds an IP
   * of the CIDR. Release them with close() on shutdown.
   */
  netPoolSize?: number;
}

export interface IsolationReport {
  available: boolean;
  reason?: string;
  cgroup: 'v1' | 'v2' | 'none';
}
