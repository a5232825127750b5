/**
 * cgroup v1 / v2 handling. We detect the layout from /proc/self/mounts, never assume it.
 *
 * v2 (pure, /sys/fs/cgroup/cgroup.controllers exists, or any cgroup2 mount that actually holds
 * memory+cpu+pids): one dir <mount>/<root>/<id>; limits memory.max (+ memory.swap.max=0),
 * cpu.max, pids.max; OOM kills counted in memory.events.
 * v1 (incl. hybrid hosts whose cgroup2 mount has no controllers): one dir per hierarchy
 * (memory, cpu, pids, and cpuacct for CPU accounting when mounted); limits
 * memory.limit_in_bytes (+ memory.memsw.limit_in_bytes when swap accounting exists),
 * cpu.cfs_quota_us/cfs_period_us, pids.max; OOM kills counted in memory.oom_control.
 */
import { promises as fsp, constants as fsc, closeSync, mkdirSync, openSync, rmdirSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { ResourceLimits, SandboxStats } from './types.ts';
import { readText, readTextSync, sleep, trySignal } from './util.ts';

export type CgroupVersion = 'v1' | 'v2' | 'none';

export interface CgroupLayout {
  version: 'v1' | 'v2';
  /** v2: the cgroup2 mount point. */
  v2Mount?: string;
  /** v1: mount point of each hierarchy (co-mounted controllers share a mount point). */
  v1?: { memory: string; cpu: string; pids: string; cpuacct: string | null; extra?: string[] };
}

/** Serializable reference to one sandbox's cgroup directories (persisted in meta.json). */
export interface CgroupRef {
  version: 'v1' | 'v2';
  memory: string;
  cpu: string;
  pids: string;
  cpuacct: string | null;
  /**
   * v1 only: placement-only dirs (no limits) in the name=systemd hierarchy and the hybrid cgroup2
   * mount, so the sandbox leaves the agent's service cgroup and survives a service restart.
   */
  extra?: string[];
}

interface MountLine {
  type: string;
  dir: string;
  opts: string[];
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMounts(text: string): MountLine[] {
  const out: MountLine[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 4) continue;
    out.push({ dir: unescapeMount(f[1]), type: f[2], opts: f[3].split(',') });
  }
  return out;
}

const V2_REQUIRED = ['memory', 'cpu', 'pids'];

/**
 * Detect the cgroup layout. `reason` explains what is missing when version is 'none'.
 * `mountsText` / `readFile` are injectable for unit tests.
 */
export async function detectCgroups(
  mountsText?: string,
  read: (p: string) => Promise<string | null> = readText,
): Promise<{ version: CgroupVersion; layout: CgroupLayout | null; reason?: string }> {
  const mounts = parseMounts(mountsText ?? (await read('/proc/self/mounts')) ?? '');
  const v2Mounts = mounts.filter((m) => m.type === 'cgroup2');
  // Prefer the canonical pure-v2 mount point, then any other cgroup2 mount with controllers.
  v2Mounts.sort((a, b) => (a.dir === '/sys/fs/cgroup' ? -1 : b.dir === '/sys/fs/cgroup' ? 1 : 0));
  const reasons: string[] = [];
  let pureV2: string | null = null;
  for (const m of v2Mounts) {
    const ctrl = await read(path.join(m.dir, 'cgroup.controllers'));
    if (ctrl === null) continue;
    const have = ctrl.trim().split(/\s+/).filter(Boolean);
    const missing = V2_REQUIRED.filter((c) => !have.includes(c));
    if (m.dir === '/sys/fs/cgroup') pureV2 = m.dir;
    if (missing.length === 0) return { version: 'v2', layout: { version: 'v2', v2Mount: m.dir } };
    if (m.dir === '/sys/fs/cgroup') reasons.push(`cgroup v2 at ${m.dir} lacks controllers: ${missing.join(', ')}`);
  }
  if (!pureV2) {
    const v1 = mounts.filter((m) => m.type === 'cgroup');
    const find = (c: string) => v1.find((m) => m.opts.includes(c))?.dir ?? null;
    const memory = find('memory');
    const cpu = find('cpu');
    const pids = find('pids');
    const cpuacct = find('cpuacct');
    if (memory && cpu && pids) {
      const extra = [...v1.filter((m) => m.opts.includes('name=systemd')).map((m) => m.dir), ...v2Mounts.map((m) => m.dir)];
      return { version: 'v1', layout: { version: 'v1', v1: { memory, cpu, pids, cpuacct, extra } } };
    }
    if (v1.length > 0) {
      const missing = [!memory && 'memory', !cpu && 'cpu', !pids && 'pids'].filter(Boolean);
      reasons.push(`cgroup v1 hierarchies missing for: ${missing.join(', ')}`);
    }
  }
  if (reasons.length === 0) reasons.push('no usable cgroup filesystem mounted (neither v1 memory/cpu/pids nor v2 with memory/cpu/pids)');
  return { version: 'none', layout: null, reason: reasons.join('; ') };
}

const SEGMENT = /^[A-Za-z0-9._-]+$/;

export function validateCgroupRoot(root: string): string {
  const segs = root.split('/').filter(Boolean);
  if (segs.length === 0 || segs.some((s) => !SEGMENT.test(s) || s === '.' || s === '..')) {
    throw new Error(`invalid cgroupRoot "${root}": use path segments of [A-Za-z0-9._-]`);
  }
  return segs.join('/');
}

export function cgroupRef(layout: CgroupLayout, root: string, id: string): CgroupRef {
  if (layout.version === 'v2') {
    const dir = path.join(layout.v2Mount!, root, id);
    return { version: 'v2', memory: dir, cpu: dir, pids: dir, cpuacct: dir };
  }
  const m = layout.v1!;
  return {
    version: 'v1',
    memory: path.join(m.memory, root, id),
    cpu: path.join(m.cpu, root, id),
    pids: path.join(m.pids, root, id),
    cpuacct: m.cpuacct ? path.join(m.cpuacct, root, id) : null,
    extra: (m.extra ?? []).map((d) => path.join(d, root, id)),
  };
}

/** Distinct directories of a cgroup ref (co-mounted v1 hierarchies share one). */
export function cgroupDirs(ref: CgroupRef): string[] {
  return [...new Set([ref.memory, ref.cpu, ref.pids, ref.cpuacct, ...(ref.extra ?? [])].filter((d): d is string => !!d))];
}

/** The cgroup.procs files a launcher must write its pid into (before exec). */
export function procsFiles(ref: CgroupRef): string[] {
  return cgroupDirs(ref).map((d) => path.join(d, 'cgroup.procs'));
}

/*
 * cgroupfs is a pseudo-filesystem: its files are written synchronously (microseconds each)
 * rather than through libuv's thread pool (a round trip per call), see util.ts.
 */
/** Write without O_CREAT: cgroupfs answers EACCES to a create, this gives ENOENT for "absent". */
function writeExisting(file: string, value: string): void {
  const fd = openSync(file, fsc.O_WRONLY);
  try {
    writeSync(fd, value);
  } finally {
    closeSync(fd);
  }
}

function writeCgSync(file: string, value: string): void {
  try {
    writeExisting(file, value);
  } catch (e: any) {
    throw new Error(`cgroup: cannot write "${value}" to ${file}: ${e.code ?? e.message}`);
  }
}

async function writeCg(file: string, value: string): Promise<void> {
  try {
    await fsp.writeFile(file, value);
  } catch (e: any) {
    throw new Error(`cgroup: cannot write "${value}" to ${file}: ${e.code ?? e.message}`);
  }
}

/** v2: make sure memory/cpu/pids are delegated from the mount root down to <root>. */
async function enableV2Controllers(mount: string, root: string): Promise<void> {
  let dir = mount;
  const segs = root.split('/');
  for (let i = 0; i <= segs.length; i++) {
    const ctl = await readText(path.join(dir, 'cgroup.subtree_control'));
    const have = (ctl ?? '').trim().split(/\s+/);
    const need = V2_REQUIRED.filter((c) => !have.includes(c));
    if (need.length) await writeCg(path.join(dir, 'cgroup.subtree_control'), need.map((c) => `+${c}`).join(' '));
    if (i < segs.length) {
      dir = path.join(dir, segs[i]);
      await fsp.mkdir(dir, { recursive: true });
    }
  }
}

export const CPU_PERIOD_US = 100_000;

export function cpuQuotaUs(cpus: number): number {
  return Math.max(1000, Math.round(cpus * CPU_PERIOD_US));
}

function v1Mounts(layout: CgroupLayout): string[] {
  const m = layout.v1!;
  return [...new Set([m.memory, m.cpu, m.pids, m.cpuacct, ...(m.extra ?? [])].filter((d): d is string => !!d))];
}

/** Create `<hierarchy>/<root>` everywhere (v2: with memory/cpu/pids delegated to it). Idempotent. */
export async function prepareCgroupRoot(layout: CgroupLayout, root: string): Promise<void> {
  if (layout.version === 'v2') await enableV2Controllers(layout.v2Mount!, root);
  else await Promise.all(v1Mounts(layout).map((mount) => fsp.mkdir(path.join(mount, root), { recursive: true })));
  preparedRoots.add(rootKey(layout, root));
}

/** `<mount>/<root>` prepared by this process (prepareCgroupRoot), so starts skip re-checking it. */
const preparedRoots = new Set<string>();

function rootKey(layout: CgroupLayout, root: string): string {
  return `${layout.version}:${layout.v2Mount ?? v1Mounts(layout).join(',')}:${root}`;
}

/** Create the cgroup dirs and apply limits. Idempotent. */
export async function createCgroup(layout: CgroupLayout, root: string, ref: CgroupRef, limits: ResourceLimits): Promise<void> {
  const key = rootKey(layout, root);
  if (!preparedRoots.has(key)) {
    await prepareCgroupRoot(layout, root);
  }
  try {
    await createCgroupOnce(ref, limits);
  } catch (e) {
    // <root> removed (or v2 controllers withdrawn) behind our back: prepare it again, retry once.
    preparedRoots.delete(key);
    await prepareCgroupRoot(layout, root);
    await createCgroupOnce(ref, limits).catch(() => {
      throw e;
    });
  }
}

/** Write a cgroup file that may not exist (e.g. swap limits without swap accounting). */
function writeCgIfPresentSync(file: string, value: string): void {
  try {
    writeExisting(file, value);
  } catch (e: any) {
    if (e.code !== 'ENOENT') throw new Error(`cgroup: cannot write "${value}" to ${file}: ${e.code ?? e.message}`);
  }
}

function mkdirOkSync(d: string): void {
  try {
    mkdirSync(d);
  } catch (e: any) {
    if (e.code !== 'EEXIST') throw new Error(`cgroup: cannot create ${d}: ${e.code ?? e.message}`);
  }
}

async function createCgroupOnce(ref: CgroupRef, limits: ResourceLimits): Promise<void> {
  await createCgroupDirs(ref);
  await applyLimits(ref, limits);
}

/** mkdir the cgroup's directories (no limits yet); <root> must exist. Idempotent. */
export async function createCgroupDirs(ref: CgroupRef): Promise<void> {
  for (const d of cgroupDirs(ref)) mkdirOkSync(d);
}

/** `<hierarchy>/<root>` for every hierarchy of the layout. */
export function hierarchyRoots(layout: CgroupLayout, root: string): string[] {
  return (layout.version === 'v2' ? [layout.v2Mount!] : v1Mounts(layout)).map((m) => path.join(m, root));
}

/** Write the limits into existing cgroup dirs (also ones processes are already in). */
export async function applyLimits(ref: CgroupRef, limits: ResourceLimits): Promise<void> {
  const memBytes = Math.floor(limits.memoryMb * 1024 * 1024);
  const quota = cpuQuotaUs(limits.cpus);
  if (ref.version === 'v2') {
    const d = ref.memory;
    writeCgSync(path.join(d, 'memory.max'), String(memBytes));
    writeCgIfPresentSync(path.join(d, 'memory.swap.max'), '0'); // absent without swap accounting
    writeCgSync(path.join(d, 'cpu.max'), `${quota} ${CPU_PERIOD_US}`);
    writeCgSync(path.join(d, 'pids.max'), String(limits.pids));
    return;
  }
  writeCgSync(path.join(ref.memory, 'memory.limit_in_bytes'), String(memBytes));
  // memsw must be >= limit_in_bytes, hence after it; equal means "no swap"
  writeCgIfPresentSync(path.join(ref.memory, 'memory.memsw.limit_in_bytes'), String(memBytes));
  // a quota is only valid with its period: period first
  writeCgSync(path.join(ref.cpu, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
  writeCgSync(path.join(ref.cpu, 'cpu.cfs_quota_us'), String(quota));
  writeCgSync(path.join(ref.pids, 'pids.max'), String(limits.pids));
}

/** All pids currently in the sandbox's cgroup(s). */
export async function cgroupPids(ref: CgroupRef): Promise<number[]> {
  const all = new Set<number>();
  const texts = await Promise.all(cgroupDirs(ref).map((d) => readText(path.join(d, 'cgroup.procs'))));
  for (const t of texts) {
    if (!t) continue;
    for (const l of t.split('\n')) if (l.trim()) all.add(Number(l));
  }
  return [...all];
}

/** cgroupPids, synchronously (cgroupfs; see writeCgSync). */
export function cgroupPidsSync(ref: CgroupRef): number[] {
  const all = new Set<number>();
  for (const d of cgroupDirs(ref)) {
    const t = readTextSync(path.join(d, 'cgroup.procs'));
    if (!t) continue;
    for (const l of t.split('\n')) if (l.trim()) all.add(Number(l));
  }
  return [...all];
}

/** Send `sig` to every process of the cgroup except `exclude`. Returns how many were signalled. */
export async function signalCgroup(ref: CgroupRef, sig: NodeJS.Signals, exclude: number[] = []): Promise<number> {
  let n = 0;
  for (const pid of await cgroupPids(ref)) {
    if (exclude.includes(pid)) continue;
    if (trySignal(pid, sig)) n++;
  }
  return n;
}

/** SIGKILL everything in the cgroup and wait (bounded) until it is empty. */
export async function killCgroup(ref: CgroupRef, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  const killFile = ref.version === 'v2' ? path.join(ref.memory, 'cgroup.kill') : null;
  if (cgroupPidsSync(ref).length === 0) return true; // the usual case at cleanup: nothing left
  while (Date.now() < deadline) {
    const pids = await cgroupPids(ref);
    if (pids.length === 0) return true;
    let usedKillFile = false;
    if (killFile) {
      try {
        await fsp.writeFile(killFile, '1');
        usedKillFile = true;
      } catch {}
    }
    if (!usedKillFile) for (const pid of pids) trySignal(pid, 'SIGKILL');
    await sleep(25);
  }
  return (await cgroupPids(ref)).length === 0;
}

function parseKeyed(text: string | null, key: string): number | null {
  if (!text) return null;
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k === key && v !== undefined) return Number(v);
  }
  return null;
}

/** Number of OOM kills recorded for the cgroup; null when unknown (cgroup gone). */
export async function oomKills(ref: CgroupRef): Promise<number | null> {
  if (ref.version === 'v2') return parseKeyed(await readText(path.join(ref.memory, 'memory.events')), 'oom_kill');
  return parseKeyed(await readText(path.join(ref.memory, 'memory.oom_control')), 'oom_kill');
}

export async function cgroupStats(ref: CgroupRef): Promise<SandboxStats> {
  const num = (t: string | null) => (t === null || t.trim() === '' ? null : Number(t.trim()));
  if (ref.version === 'v2') {
    const mem = num(await readText(path.join(ref.memory, 'memory.current')));
    const usec = parseKeyed(await readText(path.join(ref.cpu, 'cpu.stat')), 'usage_usec');
    return { memoryBytes: mem, cpuUsageNs: usec === null ? null : usec * 1000 };
  }
  const mem = num(await readText(path.join(ref.memory, 'memory.usage_in_bytes')));
  const cpu = ref.cpuacct ? num(await readText(path.join(ref.cpuacct, 'cpuacct.usage'))) : null;
  return { memoryBytes: mem, cpuUsageNs: cpu };
}

/** Remove the cgroup dirs (they must be empty; retries while the kernel finishes exits). Idempotent. */
export async function removeCgroup(ref: CgroupRef, timeoutMs = 5000): Promise<void> {
  const busy: string[] = [];
  for (const d of cgroupDirs(ref)) {
    try {
      rmdirSync(d);
    } catch (e: any) {
      if (e.code === 'EBUSY') busy.push(d);
      else if (e.code !== 'ENOENT') throw new Error(`cgroup: cannot remove ${d}: ${e.code ?? e.message}`);
    }
  }
  await Promise.all(busy.map((d) => rmdirRetry(d, timeoutMs)));
}

export async function rmdirRetry(d: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await fsp.rmdir(d);
      return;
    } catch (e: any) {
      if (e.code === 'ENOENT') return;
      if (e.code !== 'EBUSY' || Date.now() > deadline) throw new Error(`cgroup: cannot remove ${d}: ${e.code ?? e.message}`);
      await sleep(50);
    }
  }
}

/**
 * Remove `<hierarchy>/<root>` (the deepest segment only) for every hierarchy of the layout;
 * only succeeds when no sandbox cgroups remain below it. For tests and uninstall; idempotent.
 */
export async function removeCgroupRoot(layout: CgroupLayout, root: string): Promise<void> {
  const r = validateCgroupRoot(root);
  preparedRoots.delete(rootKey(layout, r));
  const mounts =
    layout.version === 'v2'
      ? [layout.v2Mount!]
      : v1Mounts(layout);
  for (const m of mounts) {
    const d = path.join(m, r);
    try {
      await fsp.rmdir(d);
    } catch (e: any) {
      if (e.code !== 'ENOENT') throw new Error(`cgroup: cannot remove ${d}: ${e.code}`);
    }
  }
}
