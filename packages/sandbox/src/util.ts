import { execFile, spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { promises as fsp, readFileSync, lstatSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** Minimal environment for the privileged helper processes we run (never the app's env). */
export const HELPER_ENV: NodeJS.ProcessEnv = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  LANG: 'C',
  LC_ALL: 'C',
};

export const DEFAULT_SANDBOX_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export class CommandError extends Error {
  constructor(
    message: string,
    readonly code: number | null,
    readonly stderr: string,
  ) {
    super(message);
    this.name = 'CommandError';
  }
}

/** Run a helper command (no shell), resolve stdout; reject with a CommandError carrying stderr. */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { env: HELPER_ENV, timeout: opts.timeoutMs ?? 15_000, maxBuffer: 4 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) {
          const code = typeof (err as any).code === 'number' ? ((err as any).code as number) : null;
          const msg = String(stderr || err.message).trim();
          reject(new CommandError(`${cmd} ${args.join(' ')}: ${msg}`, code, String(stderr)));
          return;
        }
        resolve(String(stdout));
      },
    );
  });
}

/** Like run(), with `input` written to the command's stdin (e.g. `ip -batch -`). */
export function runWithInput(cmd: string, args: string[], input: string, opts: { timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: HELPER_ENV, stdio: ['pipe', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 15_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += String(d)));
    child.stderr.on('data', (d) => (stderr += String(d)));
    child.stdin.on('error', () => {}); // EPIPE when the command exits early: its status says why
    child.once('error', (e) => reject(new CommandError(`${cmd} ${args.join(' ')}: ${e.message}`, null, String(e.message))));
    child.once('close', (code, signal) => {
      if (code === 0) resolve(stdout);
      else reject(new CommandError(`${cmd} ${args.join(' ')}: ${(stderr || `exit ${code ?? signal}`).trim()}`, code, stderr));
    });
    child.stdin.end(input);
  });
}

const PATH_DIRS = HELPER_ENV.PATH!.split(':');

/** Locate an executable in the helper PATH; null if absent. */
export async function which(name: string): Promise<string | null> {
  for (const dir of PATH_DIRS) {
    const p = path.join(dir, name);
    try {
      await fsp.access(p, 1 /* X_OK */);
      return p;
    } catch {}
  }
  return null;
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}

export async function readText(p: string): Promise<string | null> {
  try {
    return await fsp.readFile(p, 'utf8');
  } catch {
    return null;
  }
}

export async function readJson<T>(p: string): Promise<T | null> {
  const t = await readText(p);
  if (t === null) return null;
  try {
    return JSON.parse(t) as T;
  } catch {
    return null;
  }
}

/** Write a file atomically (tmp + rename) so a crash never leaves half a file. */
export async function writeJsonAtomic(p: string, value: unknown): Promise<void> {
  const tmp = `${p}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  await fsp.writeFile(tmp, JSON.stringify(value, null, 2) + '\n', { mode: 0o600 });
  await fsp.rename(tmp, p);
}

/**
 * writeJsonAtomic, synchronously: for the few small files on start()'s critical path (they land
 * in the page cache in microseconds; an async write costs several thread-pool round trips).
 */
export function writeJsonAtomicSync(p: string, value: unknown): void {
  const tmp = `${p}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n', { mode: 0o600 });
    renameSync(tmp, p);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {}
    throw e;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface ProcStat {
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  utime: number;
  stime: number;
  startTime: number;
}

function parseProcStat(t: string | null): ProcStat | null {
  if (t === null) return null;
  const close = t.lastIndexOf(')');
  if (close < 0) return null;
  const f = t.slice(close + 2).trim().split(/\s+/);
  // f[0] is field 3 (state)
  return {
    state: f[0],
    ppid: Number(f[1]),
    pgrp: Number(f[2]),
    session: Number(f[3]),
    utime: Number(f[11]),
    stime: Number(f[12]),
    startTime: Number(f[19]),
  };
}

/** Parse /proc/<pid>/stat; null if the process does not exist. */
export async function procStat(pid: number): Promise<ProcStat | null> {
  return parseProcStat(await readText(`/proc/${pid}/stat`));
}

/*
 * Synchronous variants, for pseudo-filesystems (/proc, /sys, cgroupfs, /run/netns on tmpfs): those
 * never wait for a disk, a call costs microseconds, while each async call is a round trip through
 * libuv's thread pool (0.1-0.5 ms on a busy host). They keep start()'s critical path short (which
 * also handles its few small state files synchronously, see runtime.ts).
 */

/** readFileSync for pseudo-files; null if absent/unreadable. */
export function readTextSync(p: string): string | null {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return null;
  }
}

export function existsSync(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

export function procStatSync(pid: number): ProcStat | null {
  return parseProcStat(readTextSync(`/proc/${pid}/stat`));
}

function aliveFrom(st: ProcStat | null, startTime?: number | null): boolean {
  if (!st) return false;
  if (st.state === 'Z' || st.state === 'X') return false;
  if (startTime != null && st.startTime !== startTime) return false;
  return true;
}

/**
 * True when `pid` is a live (non-zombie) process, and, when `startTime` is given, it is the same
 * process we started (guards against pid reuse).
 */
export async function pidAlive(pid: number, startTime?: number | null): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  return aliveFrom(await procStat(pid), startTime);
}

export function pidAliveSync(pid: number, startTime?: number | null): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  return aliveFrom(procStatSync(pid), startTime);
}

/** All pids in /proc. */
export async function listPids(): Promise<number[]> {
  const names = await fsp.readdir('/proc');
  return names.filter((n) => /^\d+$/.test(n)).map(Number);
}

export interface StatusRecord {
  childPid: number | null;
  exitCode: number | null;
}

/**
 * Parse a bwrap --json-status-fd stream (a sequence of JSON objects, one per line in practice);
 * tolerant of a partially written last object.
 */
export function parseStatus(text: string): StatusRecord {
  const out: StatusRecord = { childPid: null, exitCode: null };
  // Split on top-level object boundaries: bwrap writes "{ ... }\n" per record.
  for (const chunk of text.split(/\n/)) {
    const s = chunk.trim();
    if (!s) continue;
    let obj: any;
    try {
      obj = JSON.parse(s);
    } catch {
      continue;
    }
    if (obj && typeof obj === 'object') {
      if (typeof obj['child-pid'] === 'number') out.childPid = obj['child-pid'];
      if (typeof obj['exit-code'] === 'number') out.exitCode = obj['exit-code'];
    }
  }
  return out;
}

export async function readStatusFile(p: string): Promise<StatusRecord> {
  const t = await readText(p);
  return t === null ? { childPid: null, exitCode: null } : parseStatus(t);
}

const SIGNAL_NAMES: Record<number, string> = {};
for (const [name, num] of Object.entries(osConstants.signals)) {
  if (!(num in SIGNAL_NAMES)) SIGNAL_NAMES[num] = name;
}

/** 128+N (shell/bwrap convention) -> signal name; anything else -> null. */
export function signalFromStatus(code: number | null): string | null {
  if (code === null || code <= 128 || code > 128 + 64) return null;
  return SIGNAL_NAMES[code - 128] ?? null;
}

export function signalNumber(sig: NodeJS.Signals | number): number {
  if (typeof sig === 'number') return sig;
  const n = (osConstants.signals as Record<string, number>)[sig];
  if (n === undefined) throw new Error(`unknown signal ${sig}`);
  return n;
}

/** process.kill that ignores ESRCH. */
export function trySignal(pid: number, sig: NodeJS.Signals | number): boolean {
  // never a process group / "every process" by accident (kill(0), kill(-1))
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Last `max` bytes of a file from `offset` on, for error messages. */
export async function tailFrom(p: string, offset: number, max = 2000): Promise<string> {
  try {
    const fh = await fsp.open(p, 'r');
    try {
      const { size } = await fh.stat();
      const start = Math.max(offset, size - max);
      const len = size - start;
      if (len <= 0) return '';
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, start);
      return buf.toString('utf8').trim();
    } finally {
      await fh.close();
    }
  } catch {
    return '';
  }
}
