/**
 * Defensive extraction of an uploaded source tarball (tar or tar.gz).
 *
 * The API already validated the upload, but the builder runs as root while extracting, so it
 * checks again, in a first pass over the whole archive before anything is written, and rejects
 * the archive (rather than skipping entries) when any entry:
 *  - is not a regular file, directory, symlink or hard link (devices, FIFOs, …);
 *  - has an absolute path, a `..` segment or a NUL byte;
 *  - lies under a path that an earlier entry made a symlink (extracting through links);
 *  - is a symlink whose target is absolute or climbs out of the tree;
 *  - is a hard link to an unsafe path;
 * or when the archive exceeds the entry/size limits. The second pass (node-tar, strict) extracts
 * with ownership forced to the build user and setuid/setgid/sticky bits dropped.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import * as tar from 'tar';
import type { ReadEntry } from 'tar';
import { BuildError } from './errors.ts';

export interface ExtractOptions {
  /** Owner of everything extracted (defaults: the current process's ids). */
  uid?: number;
  gid?: number;
  /** Max number of entries (default 200 000). */
  maxEntries?: number;
  /** Max total size of file contents in bytes (default 2 GiB). */
  maxBytes?: number;
}

const FILE_TYPES = new Set(['File', 'OldFile', 'ContiguousFile']);
const ALLOWED = new Set([...FILE_TYPES, 'Directory', 'SymbolicLink', 'Link']);

/** Normalised relative path of an entry, or a reason why it is unsafe. */
export function safeEntryPath(p: string): { ok: true; path: string } | { ok: false; reason: string } {
  if (p.includes('\0')) return { ok: false, reason: 'contains a NUL byte' };
  if (p.startsWith('/') || /^[A-Za-z]:[\\/]/.test(p) || p.startsWith('\\')) return { ok: false, reason: 'is an absolute path' };
  const segs = p.split('/').filter((s) => s !== '' && s !== '.');
  if (segs.some((s) => s === '..')) return { ok: false, reason: 'contains ".."' };
  return { ok: true, path: segs.join('/') };
}

/** Does a symlink at `entryPath` (relative) pointing to `target` stay inside the tree? */
export function symlinkStaysInside(entryPath: string, target: string): boolean {
  if (!target || target.includes('\0') || target.startsWith('/')) return false;
  const parent = path.posix.dirname(entryPath);
  const resolved = path.posix.normalize(path.posix.join(parent === '.' ? '' : parent, target));
  return resolved !== '..' && !resolved.startsWith('../') && !path.posix.isAbsolute(resolved);
}

function reject(entry: string, why: string): never {
  throw new BuildError(`source archive rejected: entry "${entry.slice(0, 200)}" ${why}`);
}

/** First pass: validate every entry. Throws BuildError on the first unsafe one. */
export async function scanArchive(file: string, opts: ExtractOptions = {}): Promise<{ entries: number; bytes: number; dirMtimes: Map<string, Date> }> {
  const maxEntries = opts.maxEntries ?? 200_000;
  const maxBytes = opts.maxBytes ?? 2 * 1024 ** 3;
  const types = new Map<string, string>();
  const dirMtimes = new Map<string, Date>();
  let entries = 0;
  let bytes = 0;
  let problem: BuildError | null = null;
  const check = (e: ReadEntry): void => {
    entries++;
    if (entries > maxEntries) throw new BuildError(`source archive rejected: more than ${maxEntries} entries`);
    const raw = e.path;
    if (!ALLOWED.has(e.type)) reject(raw, `is a ${e.type} (only files, directories and links are allowed)`);
    const sp = safeEntryPath(raw);
    if (!sp.ok) reject(raw, sp.reason);
    const p = sp.path;
    if (p === '') {
      if (e.type !== 'Directory') reject(raw, 'has an empty path');
      return;
    }
    // No entry may be written through something an earlier entry made a symlink.
    const segs = p.split('/');
    for (let i = 1; i < segs.length; i++) {
      const prefix = segs.slice(0, i).join('/');
      if (types.get(prefix) === 'SymbolicLink') reject(raw, `would be extracted through the symbolic link "${prefix}"`);
    }
    if (e.type === 'SymbolicLink') {
      const target = e.linkpath ?? '';
      if (!symlinkStaysInside(p, target)) reject(raw, `is a symbolic link pointing outside the app ("${target.slice(0, 200)}")`);
    } else if (e.type === 'Link') {
      const lp = safeEntryPath(e.linkpath ?? '');
      if (!lp.ok || lp.path === '') reject(raw, `is a hard link to an unsafe path ("${(e.linkpath ?? '').slice(0, 200)}")`);
      const tsegs = lp.path.split('/');
      for (let i = 1; i <= tsegs.length; i++) {
        const prefix = tsegs.slice(0, i).join('/');
        if (types.get(prefix) === 'SymbolicLink') reject(raw, `is a hard link through the symbolic link "${prefix}"`);
      }
    }
    if (FILE_TYPES.has(e.type)) {
      bytes += e.size ?? 0;
      if (bytes > maxBytes) throw new BuildError(`source archive rejected: more than ${Math.round(maxBytes / 1024 / 1024)} MB of files`);
    }
    types.set(p, e.type);
    if (e.type === 'Directory' && e.mtime instanceof Date) dirMtimes.set(p, e.mtime);
  };
  try {
    await tar.t({
      file,
      strict: true,
      onReadEntry: (e: ReadEntry) => {
        if (problem) return;
        try {
          check(e);
        } catch (err) {
          problem = err instanceof BuildError ? err : new BuildError(`source archive rejected: ${(err as Error).message}`);
        }
      },
    });
  } catch (e: any) {
    if (problem) throw problem;
    throw new BuildError(`source archive is not a valid tar or tar.gz file: ${e?.message ?? e}`);
  }
  if (problem) throw problem;
  if (entries === 0) throw new BuildError('source archive is empty');
  return { entries, bytes, dirMtimes };
}

/** Fixed mtime for directories the archive did not describe (keeps artifacts reproducible). */
const DEFAULT_DIR_MTIME = new Date('2000-01-01T00:00:00Z');

/**
 * Writing files into a directory bumps its mtime, so extraction leaves "now" on every directory.
 * Put back the archive's times (or a fixed one), deepest first, so unchanged sources give
 * byte-identical artifacts.
 */
async function restoreDirMtimes(dest: string, dirMtimes: Map<string, Date>): Promise<void> {
  const dirs: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const e of await fsp.readdir(path.join(dest, rel), { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const r = rel ? `${rel}/${e.name}` : e.name;
      dirs.push(r);
      await walk(r);
    }
  };
  await walk('');
  for (const d of dirs.reverse()) {
    const t = dirMtimes.get(d) ?? DEFAULT_DIR_MTIME;
    await fsp.utimes(path.join(dest, d), t, t).catch(() => {});
  }
}

/**
 * Extract `file` into `dest` (created if needed) after validating it with scanArchive.
 * On failure nothing usable is left behind (dest is emptied).
 */
export async function extractSource(file: string, dest: string, opts: ExtractOptions = {}): Promise<{ entries: number; bytes: number }> {
  const { dirMtimes, ...stats } = await scanArchive(file, opts);
  await fsp.mkdir(dest, { recursive: true });
  const own = opts.uid !== undefined && opts.gid !== undefined ? { uid: opts.uid, gid: opts.gid } : {};
  try {
    await tar.x({
      file,
      cwd: dest,
      strict: true,
      preservePaths: false,
      unlink: true,
      ...own,
      filter: (_p: string, entry: any) => {
        const e = entry as ReadEntry;
        if (!ALLOWED.has(e.type)) return false;
        if (typeof e.mode === 'number') e.mode = (e.mode & 0o777) | (e.type === 'Directory' ? 0o700 : 0o600);
        return true;
      },
    });
  } catch (e: any) {
    await emptyDir(dest);
    if (e instanceof BuildError) throw e;
    throw new BuildError(`source archive could not be extracted: ${e?.message ?? e}`);
  }
  await restoreDirMtimes(dest, dirMtimes);
  return stats;
}

async function emptyDir(dir: string): Promise<void> {
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    await fsp.rm(path.join(dir, name), { recursive: true, force: true });
  }
}
