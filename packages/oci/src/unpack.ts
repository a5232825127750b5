/**
 * Safe unpacking of image layers into a root filesystem on the host.
 *
 * Layers are untrusted input applied as root, so every entry is checked before anything is
 * written: no absolute paths, no `..`, no device nodes (refused), no setuid/setgid bits (stripped),
 * relative symlinks must not climb above the root, hard links must name a regular file already in
 * the root. Parent directories are resolved *inside* the root: a symlink in a lower layer (`lib ->
 * usr/lib`, or even `x -> /etc`) is followed as the container would see it, re-rooted at the
 * image root, so nothing is ever written outside it. The final component is never followed.
 * Whiteouts (`.wh.<name>` deletes, `.wh..wh..opq` empties a directory of lower-layer content)
 * are applied as the OCI image spec describes. Entry count and unpacked bytes are limited.
 */
import { createReadStream, constants as fsc, promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { readTar } from './tar-reader.ts';
import type { TarHeader } from './tar-reader.ts';

export class UnsafeLayerError extends Error {}

export interface UnpackLimits {
  /** Total entries over all layers. Default 500 000. */
  maxEntries: number;
  /** Total regular-file bytes over all layers. Default 8 GiB. */
  maxBytes: number;
}

export const DEFAULT_LIMITS: UnpackLimits = { maxEntries: 500_000, maxBytes: 8 * 1024 ** 3 };

/** Running totals shared by the layers of one image. */
export interface UnpackBudget {
  entries: number;
  bytes: number;
  limits: UnpackLimits;
}

export function newBudget(limits: Partial<UnpackLimits> = {}): UnpackBudget {
  return { entries: 0, bytes: 0, limits: { ...DEFAULT_LIMITS, ...limits } };
}

const WH = '.wh.';
const OPAQUE = '.wh..wh..opq';
const MAX_HOPS = 40;

/** Archive path → components; throws for absolute paths, `..`, NUL. Empty list = the root itself. */
export function entryComponents(p: string): string[] {
  if (p.includes('\0')) throw new UnsafeLayerError(`layer entry with a NUL byte in its path`);
  if (p.startsWith('/')) throw new UnsafeLayerError(`layer entry with an absolute path: "${p}"`);
  const parts = p.split('/').filter((c) => c !== '' && c !== '.');
  if (parts.includes('..')) throw new UnsafeLayerError(`layer entry with a path that leaves the root: "${p}"`);
  return parts;
}

/** A relative symlink target from `relDir` (components) must stay inside the root. */
export function symlinkStaysInRoot(relDir: string[], target: string): boolean {
  if (!target || target.includes('\0')) return false;
  if (target.startsWith('/')) return true; // resolved against the image root when the container runs
  let depth = relDir.length;
  for (const c of target.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      depth--;
      if (depth < 0) return false;
    } else depth++;
  }
  return true;
}

async function lstatOrNull(p: string) {
  try {
    return await fsp.lstat(p);
  } catch (e: any) {
    if (e?.code === 'ENOENT') return null;
    throw e;
  }
}

/**
 * Host path of the directory named by `comps` inside `root`, following symlinks as the
 * container would (absolute targets restart at `root`, `..` stops at `root`). Missing
 * directories are created when `create`.
 */
export async function resolveDirInRoot(root: string, comps: string[], create: boolean): Promise<string> {
  const cur: string[] = [];
  const queue = [...comps];
  let hops = 0;
  while (queue.length) {
    const c = queue.shift()!;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      cur.pop();
      continue;
    }
    const p = path.join(root, ...cur, c);
    const st = await lstatOrNull(p);
    if (!st) {
      if (!create) throw new UnsafeLayerError(`"${[...cur, c].join('/')}" does not exist in the image`);
      await fsp.mkdir(p, { mode: 0o755 });
      cur.push(c);
    } else if (st.isSymbolicLink()) {
      if (++hops > MAX_HOPS) throw new UnsafeLayerError(`too many levels of symbolic links at "${[...cur, c].join('/')}"`);
      const t = await fsp.readlink(p);
      if (t.startsWith('/')) cur.length = 0;
      queue.unshift(...t.split('/'));
    } else if (st.isDirectory()) {
      cur.push(c);
    } else {
      throw new UnsafeLayerError(`"${[...cur, c].join('/')}" is not a directory but a layer puts files below it`);
    }
  }
  return path.join(root, ...cur);
}

async function removeAny(p: string): Promise<void> {
  await fsp.rm(p, { recursive: true, force: true });
}

/** Keep permission bits and sticky; drop setuid/setgid (files run as the image user, never with more). */
const safeMode = (mode: number, dflt: number) => (mode & 0o1777) || dflt;

/** Apply one uncompressed layer (tar stream) onto `root`. */
export async function applyLayer(root: string, tarStream: AsyncIterable<Buffer | Uint8Array | string>, budget: UnpackBudget): Promise<void> {
  // Paths this layer created: an opaque whiteout only hides what lower layers put there.
  const created = new Set<string>();
  const opaqueDirs: string[][] = [];
  await readTar(tarStream, async (h: TarHeader, body) => {
    if (++budget.entries > budget.limits.maxEntries) throw new UnsafeLayerError(`the image has more than ${budget.limits.maxEntries} files`);
    const comps = entryComponents(h.path);
    if (comps.length === 0) return; // the root directory itself
    const name = comps[comps.length - 1];
    const parentComps = comps.slice(0, -1);
    if (name === OPAQUE) {
      opaqueDirs.push(parentComps);
      return;
    }
    if (name.startsWith(WH)) {
      const victim = name.slice(WH.length);
      if (!victim || victim === '.' || victim === '..' || victim.includes('/')) throw new UnsafeLayerError(`bad whiteout "${h.path}"`);
      const dir = await resolveDirInRoot(root, parentComps, false).catch(() => null);
      if (dir) await removeAny(path.join(dir, victim));
      return;
    }
    if (h.type === '3' || h.type === '4') throw new UnsafeLayerError(`layer contains a device node: "${h.path}"`);
    const dir = await resolveDirInRoot(root, parentComps, true);
    const dest = path.join(dir, name);
    const existing = await lstatOrNull(dest);
    switch (h.type) {
      case '5': {
        if (existing && !existing.isDirectory()) await removeAny(dest);
        if (!existing || !existing.isDirectory()) await fsp.mkdir(dest, { mode: 0o755 });
        await fsp.chmod(dest, safeMode(h.mode, 0o755));
        break;
      }
      case '0':
      case '7':
      case '\0': {
        budget.bytes += h.size;
        if (budget.bytes > budget.limits.maxBytes) throw new UnsafeLayerError(`the image unpacks to more than ${budget.limits.maxBytes} bytes`);
        if (existing) await removeAny(dest);
        const fh = await fsp.open(dest, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
        try {
          await body.stream(async (chunk) => {
            await fh.write(chunk);
          });
        } finally {
          await fh.close();
        }
        await fsp.chmod(dest, safeMode(h.mode, 0o644));
        break;
      }
      case '2': {
        if (!symlinkStaysInRoot(parentComps, h.linkpath)) throw new UnsafeLayerError(`layer contains a symlink that points outside the image: "${h.path}" -> "${h.linkpath}"`);
        if (existing) await removeAny(dest);
        await fsp.symlink(h.linkpath, dest);
        break;
      }
      case '1': {
        const targetComps = entryComponents(h.linkpath);
        if (targetComps.length === 0) throw new UnsafeLayerError(`hard link to the root directory: "${h.path}"`);
        const tdir = await resolveDirInRoot(root, targetComps.slice(0, -1), false);
        const target = path.join(tdir, targetComps[targetComps.length - 1]);
        const st = await lstatOrNull(target);
        if (!st || !st.isFile()) throw new UnsafeLayerError(`hard link "${h.path}" must name a regular file earlier in the image, not "${h.linkpath}"`);
        if (target === dest) break;
        if (existing) await removeAny(dest);
        await fsp.link(target, dest);
        break;
      }
      case '6':
        return; // FIFOs: nothing an app needs from the image; skipped
      default:
        throw new UnsafeLayerError(`unsupported tar entry type '${h.type}' for "${h.path}"`);
    }
    for (let i = 1; i <= comps.length; i++) created.add(comps.slice(0, i).join('/'));
  });
  for (const d of opaqueDirs) {
    const dir = await resolveDirInRoot(root, d, true);
    const prefix = d.join('/');
    for (const child of await fsp.readdir(dir)) {
      const rel = prefix ? `${prefix}/${child}` : child;
      if (!created.has(rel)) await removeAny(path.join(dir, child));
    }
  }
}

/** Layer bytes as a tar stream: gzip is recognised by its magic bytes whatever the media type says. */
export async function layerTarStream(file: string): Promise<Readable> {
  const fh = await fsp.open(file, 'r');
  const magic = Buffer.alloc(4);
  try {
    await fh.read(magic, 0, 4, 0);
  } finally {
    await fh.close();
  }
  if (magic[0] === 0x28 && magic[1] === 0xb5 && magic[2] === 0x2f && magic[3] === 0xfd) {
    throw new UnsafeLayerError('zstd-compressed layers are not supported; push the image with gzip layers');
  }
  const raw = createReadStream(file);
  if (magic[0] !== 0x1f || magic[1] !== 0x8b) return raw;
  const gz = createGunzip();
  raw.on('error', (e) => gz.destroy(e));
  return raw.pipe(gz);
}

/** Apply layer files (in order, bottom first) onto an empty `root`. */
export async function unpackLayers(root: string, layerFiles: string[], limits: Partial<UnpackLimits> = {}): Promise<UnpackBudget> {
  const budget = newBudget(limits);
  for (const f of layerFiles) await applyLayer(root, await layerTarStream(f), budget);
  return budget;
}
