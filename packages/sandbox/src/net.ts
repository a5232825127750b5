/**
 * Bridge networking: a host bridge holding the first address of the CIDR, one named netns per
 * sandbox (/run/netns/NAME) with a veth whose host end is enslaved to the bridge, and a small
 * persistent IP allocator (JSON file + lock file) so allocations survive restarts.
 */
import { createHash } from 'node:crypto';
import { promises as fsp, readlinkSync } from 'node:fs';
import path from 'node:path';
import { CommandError, exists, existsSync, pidAlive, readJson, readText, readTextSync, run, runWithInput, sleep, writeJsonAtomic } from './util.ts';

export interface Cidr {
  cidr: string;
  network: number;
  prefix: number;
  /** bridge (gateway) address: first host address */
  gateway: number;
  /** first/last address handed to sandboxes */
  first: number;
  last: number;
}

export function ipToInt(ip: string): number {
  const p = ip.split('.');
  if (p.length !== 4 || p.some((x) => !/^\d{1,3}$/.test(x) || Number(x) > 255)) throw new Error(`invalid IPv4 address "${ip}"`);
  return ((Number(p[0]) << 24) | (Number(p[1]) << 16) | (Number(p[2]) << 8) | Number(p[3])) >>> 0;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function parseCidr(cidr: string): Cidr {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(cidr.trim());
  if (!m) throw new Error(`invalid CIDR "${cidr}" (expected a.b.c.d/prefix)`);
  const prefix = Number(m[2]);
  if (prefix < 8 || prefix > 29) throw new Error(`invalid CIDR "${cidr}": prefix must be between /8 and /29`);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const network = (ipToInt(m[1]) & mask) >>> 0;
  const broadcast = (network | (~mask >>> 0)) >>> 0;
  return { cidr: `${intToIp(network)}/${prefix}`, network, prefix, gateway: network + 1, first: network + 2, last: broadcast - 1 };
}

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

export function validateBridgeName(name: string): void {
  if (!IFNAME.test(name)) throw new Error(`invalid bridge name "${name}": 1-15 characters of [A-Za-z0-9_.-]`);
}

function isMissing(e: unknown): boolean {
  const s = e instanceof CommandError ? e.stderr : String(e);
  return /does not exist|Cannot find device|No such file|not found|Invalid "netns" value|Cannot open network namespace/i.test(s);
}

function isExists(e: unknown): boolean {
  const s = e instanceof CommandError ? e.stderr : String(e);
  return /File exists|already exists|Address already assigned/i.test(s);
}

const IFF_UP = 0x1;

/** Create (if needed) the bridge, give it the gateway address and bring it up. Idempotent. */
export async function ensureBridge(name: string, cidr: string): Promise<void> {
  validateBridgeName(name);
  const c = parseCidr(cidr);
  const want = `${intToIp(c.gateway)}/${c.prefix}`;
  // Fast path (the usual case): bridge exists and is up (sysfs), and has the address (one `ip`).
  const flags = await readText(`/sys/class/net/${name}/flags`);
  if (flags !== null && (Number(flags.trim()) & IFF_UP) !== 0 && (await exists(`/sys/class/net/${name}/bridge`))) {
    const addrs = await run('ip', ['-4', '-o', 'addr', 'show', 'dev', name]).catch(() => '');
    if (addrs.includes(` ${want} `)) return;
  }
  try {
    await run('ip', ['link', 'show', 'dev', name]);
  } catch (e) {
    if (!isMissing(e)) throw e;
    try {
      // A fixed MAC: by default a bridge takes the lowest MAC of its ports, so it changes as
      // sandboxes come and go, and a sandbox whose ARP entry for the gateway names the MAC of a
      // port that is gone cannot reach the host until that entry expires.
      await run('ip', ['link', 'add', 'name', name, 'address', bridgeMac(name), 'type', 'bridge']);
    } catch (e2) {
      if (!isExists(e2)) throw e2;
    }
  }
  const addrs = await run('ip', ['-4', '-o', 'addr', 'show', 'dev', name]);
  if (!addrs.includes(` ${want} `)) {
    try {
      await run('ip', ['addr', 'add', want, 'dev', name]);
    } catch (e) {
      if (!isExists(e)) throw e;
    }
  }
  await run('ip', ['link', 'set', 'dev', name, 'up']);
}

/** Locally administered unicast MAC derived from the bridge name (stable across recreations). */
export function bridgeMac(name: string): string {
  const h = createHash('sha1').update(`shellwego-bridge:${name}`).digest();
  return ['02', ...[0, 1, 2, 3, 4].map((i) => h[i].toString(16).padStart(2, '0'))].join(':');
}

/** Delete a bridge (for tests/uninstall). Idempotent. */
export async function removeBridge(name: string): Promise<void> {
  validateBridgeName(name);
  try {
    await run('ip', ['link', 'del', 'dev', name]);
  } catch (e) {
    if (!isMissing(e)) throw e;
  }
}

/** Host-side veth name for a netns: <=15 chars, deterministic so cleanup can find it after a crash. */
export function vethName(netns: string): string {
  return 'swv' + createHash('sha1').update(netns).digest('hex').slice(0, 11);
}

export function netnsPath(name: string): string {
  return `/run/netns/${name}`;
}

export async function netnsExists(name: string): Promise<boolean> {
  return exists(netnsPath(name));
}

/** Does the (host netns) network interface exist? sysfs, no `ip` process (sync: see util.ts). */
export function linkExists(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`);
}

/** netnsExists, synchronously (/run/netns is a tmpfs). */
export function netnsExistsSync(name: string): boolean {
  return existsSync(netnsPath(name));
}

const SAFE_NAME = /^[A-Za-z0-9_.-]+$/;

/**
 * Run several `ip` commands in one process (`ip [-n NETNS] -batch -`, commands on stdin): one
 * fork/exec instead of one per command. Stops at the first failing command.
 */
export async function ipBatch(lines: string[], netns?: string): Promise<void> {
  if (lines.length === 0) return;
  for (const l of lines) if (/[\n"'\\#]/.test(l)) throw new Error(`ipBatch: unsafe command "${l}"`);
  await runWithInput('ip', netns ? ['-n', netns, '-batch', '-'] : ['-batch', '-'], lines.join('\n') + '\n');
}

export async function deleteNetns(name: string): Promise<void> {
  if (!netnsExistsSync(name)) return;
  try {
    await run('ip', ['netns', 'del', name]);
  } catch (e) {
    if (!isMissing(e) && (await netnsExists(name))) throw e;
  }
}

export async function deleteLink(name: string): Promise<void> {
  if (!linkExists(name)) return;
  try {
    await run('ip', ['link', 'del', 'dev', name]);
  } catch (e) {
    if (!isMissing(e)) throw e;
  }
}

/** Does the host have a neighbour (ARP) entry for `ip` on `dev`? /proc/net/arp, no process. */
export function hasNeighbor(ip: string, dev: string): boolean {
  const t = readTextSync('/proc/net/arp');
  if (!t) return false;
  return t.split('\n').some((l) => {
    const f = l.trim().split(/\s+/);
    return f[0] === ip && f[5] === dev;
  });
}

/**
 * Drop the host's ARP entry for a sandbox address whose interface changed. An IP is reused as soon
 * as it is released, by a new veth with a new MAC; a still-REACHABLE entry for the old MAC would
 * black-hole host -> sandbox traffic for up to ~30 s. No process unless there is an entry.
 */
export async function forgetNeighbor(ip: string, dev: string): Promise<void> {
  if (!hasNeighbor(ip, dev)) return;
  await run('ip', ['neigh', 'del', ip, 'dev', dev]).catch(() => {});
}

/**
 * Delete host-side veths and netns, all in one `ip` process (after checking through sysfs and
 * /run/netns what is actually there, so the usual "nothing left" case runs no process at all).
 * Idempotent: throws only if something that should be gone is still there.
 */
export async function deleteNetworks(items: Array<{ netns: string | null; hostIf: string | null; ip?: string | null; bridge?: string | null }>): Promise<void> {
  const lines: string[] = [];
  const check = items.map((it) => ({
    link: it.hostIf && SAFE_NAME.test(it.hostIf) && linkExists(it.hostIf) ? it.hostIf : null,
    ns: it.netns && SAFE_NAME.test(it.netns) && netnsExistsSync(it.netns) ? it.netns : null,
  }));
  // veth first (its peer goes with it), then the netns; and the host's ARP entry for the address,
  // which is about to be handed to another veth (see forgetNeighbor).
  for (const c of check) if (c.link) lines.push(`link del dev ${c.link}`);
  for (const c of check) if (c.ns) lines.push(`netns del ${c.ns}`);
  for (const it of items) {
    if (it.ip && it.bridge && SAFE_NAME.test(it.bridge) && /^[\d.]+$/.test(it.ip) && hasNeighbor(it.ip, it.bridge)) lines.push(`neigh del ${it.ip} dev ${it.bridge}`);
  }
  if (lines.length === 0) return;
  try {
    await runWithInput('ip', ['-force', '-batch', '-'], lines.join('\n') + '\n');
  } catch (e) {
    // Something vanished concurrently, or a real failure: decide by what is still there.
    const left: string[] = [];
    for (const c of check) {
      if (c.link && linkExists(c.link)) left.push(c.link);
      if (c.ns && netnsExistsSync(c.ns)) left.push(`netns ${c.ns}`);
    }
    if (left.length) throw new Error(`cannot delete ${left.join(', ')}: ${(e as Error).message}`);
  }
}

/**
 * Host side of a sandbox network, one `ip` process: the netns, and a veth pair whose host end
 * `hostIf` is on `bridge` (port isolated when `isolate`) and up, and whose peer is `eth0` inside
 * the netns. Leftovers of a crashed attempt with the same names are replaced.
 */
export async function createNetnsAndVeth(opts: { netns: string; hostIf: string; bridge: string; isolate: boolean }): Promise<void> {
  const { netns, hostIf, bridge } = opts;
  for (const n of [netns, hostIf, bridge]) if (!SAFE_NAME.test(n)) throw new Error(`invalid interface/netns name "${n}"`);
  const [nsThere, linkThere] = [netnsExistsSync(netns), linkExists(hostIf)];
  const lines: string[] = [];
  if (linkThere) lines.push(`link del dev ${hostIf}`); // leftover of a crashed attempt
  if (!nsThere) lines.push(`netns add ${netns}`);
  lines.push(`link add name ${hostIf} type veth peer name eth0 netns ${netns}`, `link set dev ${hostIf} master ${bridge}`);
  if (opts.isolate) lines.push(`link set dev ${hostIf} type bridge_slave isolated on`);
  lines.push(`link set dev ${hostIf} up`);
  await ipBatch(lines);
}

/** Netns side, one `ip -n` process: eth0 gets `ip`, lo and eth0 up, default route via the bridge. */
export async function configureNetnsSide(opts: { netns: string; ip: string; cidr: Cidr }): Promise<void> {
  const { netns, ip, cidr } = opts;
  await ipBatch([`addr add ${ip}/${cidr.prefix} dev eth0`, 'link set dev lo up', 'link set dev eth0 up', `route add default via ${intToIp(cidr.gateway)}`], netns);
}

/**
 * Is a pre-built network still usable? Its netns exists and its veth is still enslaved to `bridge`
 * (a bridge deleted and recreated behind our back does not re-adopt old ports), which is up.
 * sysfs only, no process.
 */
export function networkUsable(opts: { netns: string; hostIf: string; bridge: string }): boolean {
  if (!netnsExistsSync(opts.netns)) return false;
  let master: string;
  try {
    master = readlinkSync(`/sys/class/net/${opts.hostIf}/master`);
  } catch {
    return false;
  }
  const flags = readTextSync(`/sys/class/net/${opts.bridge}/flags`);
  return path.basename(master) === opts.bridge && flags !== null && (Number(flags.trim()) & IFF_UP) !== 0;
}

export interface Lease {
  /** sandbox id, or POOL_LEASE for a pre-built network not handed out yet */
  id: string;
  ip: string;
  at: string;
}

export const POOL_LEASE = '(pool)';

interface IpamFile {
  cidr: string;
  leases: Record<string, Lease>; // key: netns name
}

const inProcessLocks = new Map<string, Promise<unknown>>();

/**
 * Persistent IP allocator for one bridge. Leases are keyed by netns name. A lease whose netns no
 * longer exists is stale (netns are created before allocating and deleted before releasing), so
 * it is reclaimed on the next allocation: this makes a crash between the two steps harmless.
 */
export class Ipam {
  readonly file: string;
  private readonly cidr: Cidr;

  constructor(
    stateRoot: string,
    bridge: string,
    cidr: string,
    /** is the netns behind a lease still there? (injectable for unit tests) */
    private readonly isLive: (netns: string) => Promise<boolean> = netnsExists,
  ) {
    this.file = path.join(stateRoot, `ipam-${bridge}.json`);
    this.cidr = parseCidr(cidr);
  }

  private async locked<T>(fn: () => Promise<T>): Promise<T> {
    const prev = inProcessLocks.get(this.file) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(() => this.fileLocked(fn));
    inProcessLocks.set(this.file, next);
    try {
      return await next;
    } finally {
      if (inProcessLocks.get(this.file) === next) inProcessLocks.delete(this.file);
    }
  }

  /** Cross-process lock: O_EXCL lock file holding our pid; a dead holder's lock is broken. */
  private async fileLocked<T>(fn: () => Promise<T>): Promise<T> {
    await fsp.mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const lock = `${this.file}.lock`;
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        const fh = await fsp.open(lock, 'wx', 0o600);
        await fh.writeFile(String(process.pid));
        await fh.close();
        break;
      } catch (e: any) {
        if (e.code !== 'EEXIST') throw e;
        const holder = Number((await fsp.readFile(lock, 'utf8').catch(() => '')).trim());
        if (!holder || !(await pidAlive(holder))) {
          // Empty content may be a holder between open and write: only break it when old.
          const st = await fsp.stat(lock).catch(() => null);
          if (holder || !st || Date.now() - st.mtimeMs > 2000) {
            await fsp.unlink(lock).catch(() => {});
            continue;
          }
        }
        if (Date.now() > deadline) throw new Error(`ipam: timed out waiting for lock ${lock} (held by pid ${holder})`);
        await sleep(20);
      }
    }
    try {
      return await fn();
    } finally {
      await fsp.unlink(lock).catch(() => {});
    }
  }

  private async load(): Promise<IpamFile> {
    const f = await readJson<IpamFile>(this.file);
    if (f && f.leases && typeof f.leases === 'object') return f;
    return { cidr: this.cidr.cidr, leases: {} };
  }

  /** Allocate (or return the existing) address for `netns`. The netns must already exist. */
  async allocate(netns: string, id: string): Promise<string> {
    return this.locked(async () => {
      const f = await this.load();
      if (f.cidr !== this.cidr.cidr) {
        // CIDR changed: leases from the old range are meaningless for the new one.
        f.cidr = this.cidr.cidr;
        for (const [k, l] of Object.entries(f.leases)) {
          const n = ipToInt(l.ip);
          if (n < this.cidr.first || n > this.cidr.last) delete f.leases[k];
        }
      }
      for (const k of Object.keys(f.leases)) {
        if (k !== netns && !(await this.isLive(k))) delete f.leases[k];
      }
      const mine = f.leases[netns];
      if (mine) {
        await writeJsonAtomic(this.file, f);
        return mine.ip;
      }
      const used = new Set(Object.values(f.leases).map((l) => ipToInt(l.ip)));
      for (let n = this.cidr.first; n <= this.cidr.last; n++) {
        if (used.has(n)) continue;
        const ip = intToIp(n);
        f.leases[netns] = { id, ip, at: new Date().toISOString() };
        await writeJsonAtomic(this.file, f);
        return ip;
      }
      throw new Error(`ipam: no free address left in ${this.cidr.cidr}`);
    });
  }

  async release(netns: string): Promise<void> {
    // Lock-free pre-check: nobody else creates a lease for *this* netns name while it is being
    // released (names are never shared), so "no lease" read without the lock is final.
    const f = await readJson<IpamFile>(this.file);
    if (!f || !f.leases || !f.leases[netns]) return;
    await this.locked(async () => {
      const f = await this.load();
      if (!f.leases[netns]) return;
      delete f.leases[netns];
      await writeJsonAtomic(this.file, f);
    });
  }

  /** Re-label an existing lease (a pooled network handed to sandbox `id`); no-op if it is gone. */
  async relabel(netns: string, id: string): Promise<void> {
    await this.locked(async () => {
      const f = await this.load();
      const l = f.leases[netns];
      if (!l || l.id === id) return;
      l.id = id;
      await writeJsonAtomic(this.file, f);
    });
  }

  async leases(): Promise<Record<string, Lease>> {
    return (await this.load()).leases;
  }
}
