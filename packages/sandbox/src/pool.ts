/**
 * A small pool of pre-built sandbox "slots", so that a bridged start does not pay, on its critical
 * path, for: `ip netns add`, the veth, the IP lease and the address/route setup; creating the
 * cgroup; and moving the launcher into it (a cgroup migration waits for an RCU grace period in the
 * kernel, often 5-15 ms) plus the launcher's own exec.
 *
 * A slot is
 * - a netns `<nsBase>-Pool.<ownerPid>.<ownerStartTime>.<n>` with eth0 addressed and routed, its
 *   veth `vethName(netns)` up on the bridge, and an IP lease labelled POOL_LEASE;
 * - (with bash) a cgroup `<cgroupRoot>/Pool.<ownerPid>.<ownerStartTime>.<n>` in every hierarchy,
 *   without limits yet, and a "zygote": a root bash, in its own session, already inside that
 *   netns and cgroup, with no inherited fds beyond stdio, blocked reading a line from a pipe from
 *   us. start() writes the limits, then the path of a launch list; the zygote opens the log/status/
 *   env files we hold open (via /proc/<our pid>/fd/N) and execs the uid-dropping step and bwrap —
 *   its pid becomes the sandbox's monitor pid. EOF on the pipe (we closed or died) makes it exit.
 *
 * "Pool" is upper case, which no sandbox id can be: slot names never collide with id-derived ones.
 * take() hands a slot over: from then on it belongs to that sandbox, whose meta.json records netns,
 * hostIf and cgroup, so cleanup works from meta as for any other sandbox. Slot names are never
 * reused.
 *
 * Crash safety: the owner (pid + start time) is part of the name. reclaim() (run by
 * createRuntime) deletes every slot on the host whose owner process is gone and which no sandbox
 * is using: slots leaked by a crash (never handed out, or handed out to a start that did not get
 * as far as launching), or by a runtime that exited without close(). A slot whose sandbox runs has processes in its cgroup/netns other
 * than a zygote, and is left to that sandbox's cleanup. close() releases the slots a pool holds.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import type { Socket } from 'node:net';
import path from 'node:path';
import { cgroupPids, cgroupRef, createCgroupDirs, killCgroup, procsFiles, removeCgroup } from './cgroups.ts';
import type { CgroupLayout, CgroupRef } from './cgroups.ts';
import { Ipam, POOL_LEASE, configureNetnsSide, createNetnsAndVeth, deleteNetworks, forgetNeighbor, netnsPath, networkUsable, parseCidr, vethName } from './net.ts';
import { HELPER_ENV, listPids, pidAlive, pidAliveSync, procStat, readText, trySignal } from './util.ts';

/** A process pre-placed in a slot's netns and cgroup, waiting for a launch list. */
export interface Zygote {
  child: ChildProcess;
  pid: number;
  startTime: number | null;
}

export interface NetSlot {
  netns: string;
  hostIf: string;
  ip: string;
  /** the slot's cgroup, when it has a zygote */
  cgroup: CgroupRef | null;
  zygote: Zygote | null;
}

export interface NetPoolOptions {
  /** slots kept ready; 0 disables the pool */
  size: number;
  /** netns name prefix of this runtime's slots, e.g. "shellwego-Pool." */
  prefix: string;
  bridge: { name: string; cidr: string; isolatePorts: boolean };
  stateRoot: string;
  /** make sure the bridge exists (shared with the runtime) */
  ensureBridge: () => Promise<void>;
  /** zygotes: cgroup layout/root, nsenter and bash; without them slots are network-only */
  zygote: { layout: CgroupLayout; cgroupRoot: string; nsenter: string; bash: string } | null;
  /** delay between a take() and the refill it triggers, so the refill does not compete for CPU
   * with the sandbox that was just started */
  refillDelayMs?: number;
  trace?: (msg: string) => void;
}

/** Marker in a zygote's argv ($0 of its script), to recognise it in /proc. */
export const ZYGOTE_NAME = 'swg-zygote';

/** Tag of pool slot names (netns suffix after the runtime's prefix, cgroup leaf). */
export const POOL_TAG = 'Pool.';

const SLOT_RE = /^Pool\.(\d+)\.(\d+)\.\d+$/;

/**
 * Shell snippet closing every inherited fd above `keep` (bash: any number; POSIX sh: 5-9 only).
 * Node passes its own non-CLOEXEC fds (e.g. ones its parent leaked to it) to children, and bwrap
 * does not close them: without this a sandbox could inherit host pipes or files.
 */
export function closeFdsSnippet(keep: number): string {
  return (
    `if [ -n "$BASH_VERSION" ]; then for f in /proc/$$/fd/*; do n=\${f##*/}; if [ "$n" -gt ${keep} ] 2>/dev/null; then { eval "exec $n>&-"; } 2>/dev/null; fi; done; ` +
    `else for n in 5 6 7 8 9; do if [ "$n" -gt ${keep} ]; then { eval "exec $n>&-"; } 2>/dev/null; fi; done; fi; `
  );
}

/** Shell snippet: join the cgroups whose cgroup.procs files are the next "$1" ("count" first) args. */
export const JOIN_CGROUPS_SNIPPET =
  'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || { echo "swg-launch: cannot join cgroup $1" >&2; exit 125; }; shift; n=$((n-1)); done; ';

/**
 * The zygote (bash): keep only stdio, join the slot's cgroups, report "ready", then wait for one
 * line "PID LIST LOG STATUS ENV": fds of process PID (the runtime) to open through /proc: the
 * NUL-separated command to exec, the log (fds 1+2, appending), the status file (fd 3) and the
 * env args (fd 4). stdin becomes /dev/null, which also drops the pipe from the runtime.
 */
const ZYGOTE_SCRIPT =
  closeFdsSnippet(2) +
  JOIN_CGROUPS_SNIPPET +
  'echo ready; read -r P L O S E || exit 0; d=/proc/$P/fd; ' +
  'mapfile -d "" -t A < "$d/$L" || exit 125; ' +
  'exec 1>>"$d/$O" 2>&1 3>"$d/$S" 4<"$d/$E" 0</dev/null || exit 125; ' +
  'exec "${A[@]}"';

let ownerCache: string | null = null;
/** Slot sequence number, per process (not per pool: runtimes of one process share the owner id). */
let slotSeq = 0;

/** "<pid>.<start time>" of this process: identifies the owner of a slot across pid reuse. */
async function ownerId(): Promise<string> {
  if (!ownerCache) ownerCache = `${process.pid}.${(await procStat(process.pid))?.startTime ?? 0}`;
  return ownerCache;
}

/** Is `pid` a zygote (by its argv)? */
async function isZygote(pid: number): Promise<boolean> {
  const cmd = await readText(`/proc/${pid}/cmdline`);
  return cmd !== null && cmd.split('\0').includes(ZYGOTE_NAME);
}

/** Stop a zygote that was not handed a launch list (it exits on EOF; SIGKILL to be sure). */
export function discardZygote(z: Zygote | null): void {
  if (!z) return;
  z.child.stdin?.destroy();
  z.child.stdout?.destroy();
  // (pid > 0: never let a bogus pid turn into kill(-1) / kill(0))
  if (z.pid > 0 && z.child.exitCode === null && z.child.signalCode === null) trySignal(z.pid, 'SIGKILL');
}

export class NetPool {
  private readonly ready: NetSlot[] = [];
  private readonly waiters: Array<(s: NetSlot | null) => void> = [];
  private filling: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** consecutive failed builds (backoff) */
  private failures = 0;
  private readonly ipam: Ipam;
  /** last error of a slot build (diagnostics) */
  lastError: Error | null = null;

  constructor(private readonly opts: NetPoolOptions) {
    this.ipam = new Ipam(opts.stateRoot, opts.bridge.name, opts.bridge.cidr);
  }

  get size(): number {
    return this.opts.size;
  }

  /** Slots ready to be handed out (tests/diagnostics). */
  get available(): number {
    return this.ready.length;
  }

  /**
   * A ready slot, validated (netns there, veth still on the bridge, zygote alive); if none is
   * ready but one is being built, waits for it (it is further along than a build started now
   * would be). null: build the sandbox's network yourself.
   */
  async take(): Promise<NetSlot | null> {
    if (this.closed || this.opts.size <= 0) return null;
    let slot: NetSlot | null = null;
    while (!slot && this.ready.length) {
      const s = this.ready.shift()!;
      if (this.usable(s)) slot = s;
      else void this.destroy([s]).catch(() => {});
    }
    if (!slot && this.filling) slot = await new Promise<NetSlot | null>((resolve) => this.waiters.push(resolve));
    this.schedule();
    return slot;
  }

  private usable(s: NetSlot): boolean {
    const z = s.zygote;
    if (z && (z.child.exitCode !== null || z.child.signalCode !== null || !pidAliveSync(z.pid, z.startTime))) return false;
    return networkUsable({ netns: s.netns, hostIf: s.hostIf, bridge: this.opts.bridge.name });
  }

  /** Return a slot take() gave out but the start did not use (refused spec). */
  giveBack(slot: NetSlot): void {
    if (this.closed) void this.destroy([slot]).catch(() => {});
    else this.ready.unshift(slot);
  }

  /** Start filling now (createRuntime; tests). */
  fill(): Promise<void> {
    if (this.closed || this.opts.size <= 0) return Promise.resolve();
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (!this.filling) {
      this.filling = this.fillLoop().finally(() => {
        this.filling = null;
        // nobody will build the slot these are waiting for
        for (const w of this.waiters.splice(0)) w(null);
      });
    }
    return this.filling;
  }

  /** Resolves once no slot is being built or scheduled to be (tests, benchmarks). */
  async idle(): Promise<void> {
    while (this.filling || this.timer) {
      if (this.timer) await this.fill();
      else await this.filling;
    }
  }

  private schedule(): void {
    if (this.closed || this.filling || this.timer || this.ready.length >= this.opts.size) return;
    // after failed builds: back off (1 s, doubling up to 1 min) instead of failing on every start
    const delay = Math.max(this.opts.refillDelayMs ?? 50, this.failures ? Math.min(60_000, 1000 * 2 ** (this.failures - 1)) : 0);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.fill();
    }, delay);
    this.timer.unref();
  }

  private async fillLoop(): Promise<void> {
    try {
      await this.opts.ensureBridge();
    } catch (e) {
      this.failures++;
      this.lastError = e as Error;
      this.opts.trace?.(`pool: bridge not ready: ${(e as Error).message}`);
      return;
    }
    while (!this.closed && (this.ready.length < this.opts.size || this.waiters.length > 0)) {
      let slot: NetSlot;
      try {
        slot = await this.build();
      } catch (e) {
        // Do not spin on a persistent failure (e.g. address range exhausted); the next take()
        // schedules another attempt (with backoff), and start() builds what it needs meanwhile.
        this.failures++;
        this.lastError = e as Error;
        this.opts.trace?.(`pool: cannot build a slot: ${(e as Error).message}`);
        return;
      }
      if (this.closed) {
        await this.destroy([slot]).catch(() => {});
        return;
      }
      this.failures = 0;
      const w = this.waiters.shift();
      if (w) w(slot);
      else this.ready.push(slot);
    }
  }

  private async build(): Promise<NetSlot> {
    const leaf = `${POOL_TAG}${await ownerId()}.${slotSeq++}`;
    const netns = `${this.opts.prefix}${leaf.slice(POOL_TAG.length)}`;
    const hostIf = vethName(netns);
    const z = this.opts.zygote;
    const slot: NetSlot = { netns, hostIf, ip: '', cgroup: z ? cgroupRef(z.layout, z.cgroupRoot, leaf) : null, zygote: null };
    const t0 = performance.now();
    try {
      // The lease needs the netns to exist (leases without one are reclaimed as stale).
      await createNetnsAndVeth({ netns, hostIf, bridge: this.opts.bridge.name, isolate: this.opts.bridge.isolatePorts });
      slot.ip = await this.ipam.allocate(netns, POOL_LEASE);
      await Promise.all([configureNetnsSide({ netns, ip: slot.ip, cidr: parseCidr(this.opts.bridge.cidr) }), forgetNeighbor(slot.ip, this.opts.bridge.name)]);
      if (z && slot.cgroup) {
        await createCgroupDirs(slot.cgroup);
        slot.zygote = await spawnZygote(z.nsenter, z.bash, netns, slot.cgroup);
      }
      this.opts.trace?.(`pool: built ${netns} (${slot.ip}${slot.zygote ? `, zygote ${slot.zygote.pid}` : ''}) in ${(performance.now() - t0).toFixed(1)} ms`);
      return slot;
    } catch (e) {
      await this.destroy([slot]).catch(() => {});
      throw e;
    }
  }

  /** Delete slots: zygotes, cgroups, then veths + netns in one `ip` process, then their leases. */
  private async destroy(slots: NetSlot[]): Promise<void> {
    if (slots.length === 0) return;
    for (const s of slots) discardZygote(s.zygote);
    await Promise.all(
      slots.map(async (s) => {
        if (!s.cgroup) return;
        await killCgroup(s.cgroup);
        await removeCgroup(s.cgroup);
      }),
    );
    await deleteNetworks(slots.map((s) => ({ ...s, bridge: this.opts.bridge.name })));
    for (const s of slots) await this.ipam.release(s.netns);
  }

  /** Stop refilling and delete the slots not handed out. The pool hands out nothing afterwards. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    await this.filling?.catch(() => {});
    await this.destroy(this.ready.splice(0));
  }

  /**
   * Delete leaked slots (see the file comment). Returns the netns names deleted.
   *
   * Besides this runtime's own `cgroupRoot`, it also collects dead owners' slots of any other
   * runtime on the host (any `*-Pool.<pid>.<start>.<n>` netns, any `<top-level dir>/Pool.…`
   * cgroup): runtimes with throwaway roots (tests) that exited without close() would otherwise
   * leave them forever. The same checks apply (owner dead, nothing but zygotes in the cgroup,
   * no other process in the netns); only this runtime's IP allocation file is edited (leases of
   * other bridges become stale with their netns, and are reclaimed by their next allocation).
   */
  static async reclaim(opts: { ownRoot: string; ipam: Ipam; bridge: string; layout: CgroupLayout }): Promise<string[]> {
    interface Cand {
      leaf: string;
      netns: string | null;
      cgroup: CgroupRef | null;
    }
    const cands = new Map<string, Cand>(); // key: "<nsBase>|<leaf>"
    const add = (nsBase: string, leaf: string, c: Partial<Cand>) => {
      const key = `${nsBase}|${leaf}`;
      const cur = cands.get(key) ?? { leaf, netns: null, cgroup: null };
      cands.set(key, { ...cur, ...Object.fromEntries(Object.entries(c).filter(([, v]) => v != null)) });
    };
    const NS_RE = /^(.+)-(Pool\.\d+\.\d+\.\d+)$/;
    for (const n of await fsp.readdir('/run/netns').catch(() => [] as string[])) {
      const m = NS_RE.exec(n);
      if (m) add(m[1], m[2], { netns: n });
    }
    // cgroup roots: ours, and every top-level dir of the primary hierarchy holding slot dirs
    const primary = opts.layout.version === 'v2' ? opts.layout.v2Mount! : opts.layout.v1!.memory;
    const roots = new Set<string>([opts.ownRoot]);
    for (const e of await fsp.readdir(primary, { withFileTypes: true }).catch(() => [])) if (e.isDirectory()) roots.add(e.name);
    for (const root of roots) {
      const leaves = (await fsp.readdir(path.join(primary, root)).catch(() => [] as string[])).filter((n) => SLOT_RE.test(n));
      for (const leaf of leaves) add(root.replace(/\//g, '-'), leaf, { cgroup: cgroupRef(opts.layout, root, leaf) });
    }
    // netns without a cgroup dir found: the cgroup of a single-segment root is derivable
    for (const [key, c] of cands) {
      if (c.cgroup) continue;
      const nsBase = key.slice(0, key.indexOf('|'));
      if (roots.has(nsBase)) c.cgroup = cgroupRef(opts.layout, nsBase, c.leaf);
    }
    const reclaimable: Cand[] = [];
    for (const c of cands.values()) {
      const m = SLOT_RE.exec(c.leaf)!;
      if (await pidAlive(Number(m[1]), Number(m[2]))) continue; // owner still running
      if (c.cgroup) {
        const zygotes: number[] = [];
        let used = false;
        for (const pid of await cgroupPids(c.cgroup)) {
          if (await isZygote(pid)) zygotes.push(pid);
          else used = true; // a sandbox runs in it: its cleanup owns the slot
        }
        if (used) continue;
        // A dead owner's zygotes exit on EOF by themselves; make sure.
        for (const pid of zygotes) trySignal(pid, 'SIGKILL');
      }
      reclaimable.push(c);
    }
    if (reclaimable.length === 0) return [];
    // Any process (but a zygote) still in one of those netns? Then it is in use.
    const inUse = new Set<string>();
    if (reclaimable.some((c) => c.netns)) {
      await Promise.all(
        (await listPids()).map(async (pid) => {
          const st = await fsp.stat(`/proc/${pid}/ns/net`).catch(() => null);
          if (st && !(await isZygote(pid))) inUse.add(`${st.dev}:${st.ino}`);
        }),
      );
    }
    const leaked: Cand[] = [];
    for (const c of reclaimable) {
      const st = c.netns ? await fsp.stat(netnsPath(c.netns)).catch(() => null) : null;
      if (st && inUse.has(`${st.dev}:${st.ino}`)) continue;
      leaked.push(c);
    }
    await Promise.all(
      leaked.map(async (c) => {
        if (!c.cgroup) return;
        await killCgroup(c.cgroup);
        await removeCgroup(c.cgroup).catch(() => {});
      }),
    );
    const ips = await opts.ipam.leases();
    const nets = leaked.filter((c) => c.netns).map((c) => c.netns!);
    await deleteNetworks(nets.map((n) => ({ netns: n, hostIf: vethName(n), ip: ips[n]?.ip ?? null, bridge: opts.bridge })));
    for (const n of nets) await opts.ipam.release(n);
    return nets;
  }
}

/**
 * Spawn a zygote in `netns` joined to `cgroup` (own session, stdio: our pipe, a pipe for "ready",
 * /dev/null); resolves once it is in the cgroup and waiting.
 */
async function spawnZygote(nsenter: string, bash: string, netns: string, cgroup: CgroupRef): Promise<Zygote> {
  const files = procsFiles(cgroup);
  const child = spawn(nsenter, [`--net=${netnsPath(netns)}`, '--', bash, '-c', ZYGOTE_SCRIPT, ZYGOTE_NAME, String(files.length), ...files], {
    detached: true,
    stdio: ['pipe', 'pipe', 'ignore'],
    env: HELPER_ENV,
    cwd: '/',
  });
  child.stdin!.on('error', () => {}); // EPIPE if it died: noticed by take()/the start
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error('zygote did not get ready within 10s')), 10_000);
      const done = (err?: Error) => {
        clearTimeout(timer);
        child.stdout!.removeAllListeners('data');
        child.removeListener('exit', onExit);
        if (err) reject(err);
        else resolve();
      };
      const onExit = (code: number | null, sig: string | null) => done(new Error(`zygote exited (${code ?? sig}) before getting ready`));
      child.once('error', (e) => done(e));
      child.once('exit', onExit);
      child.stdout!.on('data', (d) => {
        out += String(d);
        if (out.includes('ready\n')) done();
      });
    });
  } catch (e) {
    discardZygote({ child, pid: child.pid ?? 0, startTime: null });
    throw e;
  }
  // It writes nothing more to stdout (redirected to the log before exec); do not hold the loop.
  child.stdout!.destroy();
  (child.stdin as Socket).unref();
  child.unref();
  return { child, pid: child.pid!, startTime: (await procStat(child.pid!))?.startTime ?? null };
}
