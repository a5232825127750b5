/**
 * Build artifacts on this node: each digest is unpacked once into <root>/<digest>/ and every
 * instance gets its own copy of it (a fresh filesystem on every start, as on Heroku).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract } from 'tar';
import type { BlobStore } from '@shellwego/core';
import { prepareWritableDir } from '@shellwego/sandbox';

const TMP_PREFIX = '.tmp-';

/** Entry types an app artifact may contain; devices, FIFOs and the like are skipped. */
const ALLOWED_TYPES = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink', 'Link']);

export type Compression = 'gzip' | 'none';

/** Artifacts are plain tar or gzip'd tar; tell them apart by the gzip magic bytes (1f 8b). */
export async function detectCompression(file: string): Promise<Compression> {
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(2);
    const { bytesRead } = await fh.read(buf, 0, 2, 0);
    return bytesRead === 2 && buf[0] === 0x1f && buf[1] === 0x8b ? 'gzip' : 'none';
  } finally {
    await fh.close();
  }
}

/**
 * Unpack a tarball into `dest` (which must exist). Absolute paths and `..` are refused by tar's
 * defaults (preservePaths off); ownership is not taken from the archive.
 */
export async function unpackTarball(file: string, dest: string): Promise<void> {
  const compression = await detectCompression(file);
  const skipped: string[] = [];
  const unpack = extract({
    cwd: dest,
    strict: true,
    preserveOwner: false,
    filter: (p, entry) => {
      const type = 'type' in entry ? String(entry.type) : 'File';
      if (ALLOWED_TYPES.has(type)) return true;
      skipped.push(p);
      return false;
    },
  });
  if (compression === 'gzip') await pipeline(createReadStream(file), createGunzip(), unpack);
  else await pipeline(createReadStream(file), unpack);
}

export class ArtifactCache {
  private inflight = new Map<string, Promise<string>>();

  constructor(
    private readonly root: string,
    private readonly blobs: BlobStore,
  ) {}

  dirOf(digest: string): string {
    return path.join(this.root, digest);
  }

  /** Remove half-finished unpacks left by a crash. */
  async init(): Promise<void> {
    await fsp.mkdir(this.root, { recursive: true, mode: 0o700 });
    for (const name of await fsp.readdir(this.root)) {
      if (name.startsWith(TMP_PREFIX)) await fsp.rm(path.join(this.root, name), { recursive: true, force: true });
    }
  }

  /** Path of the unpacked artifact; concurrent callers for one digest share a single unpack. */
  ensure(digest: string): Promise<string> {
    const running = this.inflight.get(digest);
    if (running) return running;
    const p = this.unpack(digest).finally(() => this.inflight.delete(digest));
    this.inflight.set(digest, p);
    return p;
  }

  private async unpack(digest: string): Promise<string> {
    const dir = this.dirOf(digest);
    if (await isDir(dir)) return dir;
    const tarball = await this.blobs.pathOf(digest).catch((e: Error) => {
      throw new Error(`cannot fetch artifact ${digest}: ${e.message}`);
    });
    const tmp = path.join(this.root, `${TMP_PREFIX}${digest}-${randomBytes(4).toString('hex')}`);
    await fsp.mkdir(tmp, { mode: 0o755 });
    try {
      await unpackTarball(tarball, tmp);
      // Atomic publish: readers see either no directory or a complete one.
      await fsp.rename(tmp, dir);
    } catch (e) {
      await fsp.rm(tmp, { recursive: true, force: true });
      if (await isDir(dir)) return dir; // another process published it first
      throw new Error(`cannot unpack artifact ${digest}: ${(e as Error).message}`);
    }
    return dir;
  }

  /** Drop unpacked artifacts no instance uses any more (never one being unpacked). */
  async gc(keep: Set<string>): Promise<string[]> {
    const removed: string[] = [];
    let names: string[];
    try {
      names = await fsp.readdir(this.root);
    } catch {
      return removed;
    }
    for (const name of names) {
      if (name.startsWith(TMP_PREFIX) || keep.has(name) || this.inflight.has(name)) continue;
      await fsp.rm(path.join(this.root, name), { recursive: true, force: true });
      removed.push(name);
    }
    return removed;
  }
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await fsp.stat(p)).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Replace `dest` with a copy of `src`, handed to `owner` (when we can chown, i.e. as root) and
 * private to it (0700). `cp -a` keeps
 * modes, timestamps and symlinks as they are and is much faster than a JS walk on node_modules.
 */
export async function copyAppDir(src: string, dest: string, owner: { uid: number; gid: number } | null): Promise<void> {
  await fsp.rm(dest, { recursive: true, force: true });
  await fsp.mkdir(dest, { mode: 0o700 });
  await new Promise<void>((resolve, reject) => {
    execFile('cp', ['-a', '--', `${src}/.`, dest], { maxBuffer: 1024 * 1024 }, (err, _out, stderr) => {
      if (err) reject(new Error(`cannot copy the app into ${dest}: ${String(stderr).trim() || err.message}`));
      else resolve();
    });
  });
  if (owner) await prepareWritableDir(dest, owner.uid, owner.gid);
  await fsp.chmod(dest, 0o700);
}
