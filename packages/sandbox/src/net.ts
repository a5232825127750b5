/**
 * Bridge networking: a host bridge holding the first address of the CIDR, one named netns per
 * sandbox (/run/netns/NAME) with a veth whose host end is enslaved to the bridge, and a small
 * persistent IP allocator (JSON file + lock file) so allocations survive restarts.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { CommandError, exists, pidAlive, readJson, run, sleep, writeJsonAtomic } from './util.ts';

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

/** Create (if needed) the bridge, give it the gateway address and bring it up. Idempotent. */
export async function ensureBridge(name: string, cidr: string): Promise<void> {
  validateBridgeName(name);
  const c = parseCidr(cidr);
  try {
    await run('ip', ['link', 'show', 'dev', name]);
  } catch (e) {
    if (!isMissing(e)) throw e;
    try {
      await run('ip', ['link', 'add', 'name', name, 'type', 'bridge']);
    } catch (e2) {
      if (!isExists(e2)) throw e2;
    }
  }
  const addrs = await run('ip', ['-4', '-o', 'addr', 'show', 'dev', name]);
  const want = `${intToIp(c.gateway)}/${c.prefix}`;
  if (!addrs.includes(` ${want} `)) {
    try {
      await run('ip', ['addr', 'add', want, 'dev', name]);
    } catch (e) {
      if (!isExists(e)) throw e;
    }
  }
  await run('ip', ['link', 'set', 'dev', name, 'up']);
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

export async function createNetns(name: string): Promise<void> {
  if (await netnsExists(name)) return;
  try {
    await run('ip', ['netns', 'add', name]);
  } catch (e) {
    if (!isExists(e)) throw e;
  }
}

export async function deleteNetns(name: string): Promise<void> {
  try {
    await run('ip', ['netns', 'del', name]);
  } catch (e) {
    if (!isMissing(e) && (await netnsExists(name))) throw e;
  }
}

export async function deleteLink(name: string): Promise<void> {
  try {
    await run('ip', ['link', 'del', 'dev', name]);
  } catch (e) {
    if (!isMissing(e)) throw e;
  }
}

/**
 * veth pair: host end `hostIf` on `bridge`, peer named eth0 inside `netns` with `ip`, default
 * route via the bridge address, loopback up.
 */
export async function setupVeth(opts: { netns: string; hostIf: string; bridge: string; ip: string; cidr: Cidr; isolate: boolean }): Promise<void> {
  const { netns, hostIf, bridge, ip, cidr } = opts;
  await deleteLink(hostIf); // leftover of a crashed attempt
  await run('ip', ['link', 'add', 'name', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
  await run('ip', ['link', 'set', 'dev', hostIf, 'master', bridge]);
  if (opts.isolate) await run('ip', ['link', 'set', 'dev', hostIf, 'type', 'bridge_slave', 'isolated', 'on']);
  await run('ip', ['link', 'set', 'dev', hostIf, 'up']);
  await run('ip', ['-n', netns, 'addr', 'add', `${ip}/${cidr.prefix}`, 'dev', 'eth0']);
  await run('ip', ['-n', netns, 'link', 'set', 'dev', 'lo', 'up']);
  await run('ip', ['-n', netns, 'link', 'set', 'dev', 'eth0', 'up']);
  await run('ip', ['-n', netns, 'route', 'add', 'default', 'via', intToIp(cidr.gateway)]);
}

interface Lease {
  id: string;
  ip: string;
  at: string;
}

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
    if (!(await exists(this.file))) return;
    await this.locked(async () => {
      const f = await this.load();
      if (!f.leases[netns]) return;
      delete f.leases[netns];
      await writeJsonAtomic(this.file, f);
    });
  }

  async leases(): Promise<Record<string, Lease>> {
    return (await this.load()).leases;
  }
}
