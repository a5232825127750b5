/** Helpers shared by this package's tests (not exported from index.ts). */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import { Header } from 'tar';
import { gzipSync } from 'node:zlib';
import type { BlobStore } from '@shellwego/core';

/** A tiny content-addressed blob store in a temp dir. */
export class TempBlobStore implements BlobStore {
  constructor(readonly dir: string) {}

  static async create(root: string): Promise<TempBlobStore> {
    const dir = path.join(root, 'blobs');
    await fsp.mkdir(dir, { recursive: true });
    return new TempBlobStore(dir);
  }

  async putFile(p: string): Promise<string> {
    const h = createHash('sha256');
    await pipeline(createReadStream(p), h);
    const digest = h.digest('hex');
    const dst = path.join(this.dir, digest);
    await fsp.rename(p, dst).catch(async () => {
      await fsp.copyFile(p, dst);
      await fsp.rm(p, { force: true });
    });
    return digest;
  }

  async pathOf(digest: string): Promise<string> {
    if (!/^[0-9a-f]{64}$/.test(digest)) throw new Error(`bad digest ${digest}`);
    const p = path.join(this.dir, digest);
    await fsp.access(p);
    return p;
  }

  async has(digest: string): Promise<boolean> {
    return this.pathOf(digest).then(
      () => true,
      () => false,
    );
  }

  /** Tar+gzip a directory (like the CLI does) and store it; returns the digest. */
  async putDir(dir: string, exclude: string[] = ['node_modules', '.git']): Promise<string> {
    const names = (await fsp.readdir(dir)).filter((n) => !exclude.includes(n)).sort();
    const tmp = path.join(this.dir, `.src-${randomBytes(4).toString('hex')}.tgz`);
    await tar.c({ cwd: dir, file: tmp, gzip: true, portable: true }, names);
    return this.putFile(tmp);
  }

  /** Store a tree given as { 'rel/path': content }. */
  async putFiles(files: Record<string, string>, root: string): Promise<string> {
    const dir = await writeTree(path.join(root, `tree-${randomBytes(4).toString('hex')}`), files);
    return this.putDir(dir);
  }
}

export async function writeTree(dir: string, files: Record<string, string>): Promise<string> {
  await fsp.mkdir(dir, { recursive: true });
  for (const [rel, content] of Object.entries(files)) {
    const p = path.join(dir, rel);
    await fsp.mkdir(path.dirname(p), { recursive: true });
    await fsp.writeFile(p, content);
  }
  return dir;
}

export async function tempRoot(prefix: string, base = os.tmpdir()): Promise<string> {
  return fsp.mkdtemp(path.join(base, prefix));
}

/** List the entries of a (gzipped) tarball. */
export async function listTar(file: string): Promise<string[]> {
  const out: string[] = [];
  await tar.t({ file, onReadEntry: (e) => out.push(e.path.replace(/\/$/, '')) });
  return out;
}

export const EXAMPLES = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../../examples');

export interface RawEntry {
  path: string;
  type?: 'File' | 'Directory' | 'SymbolicLink' | 'Link' | 'CharacterDevice' | 'FIFO';
  body?: string;
  linkpath?: string;
  mode?: number;
}

/** Hand-made tarball, so entries can be as hostile as we like (node-tar's writer would sanitise them). */
export async function rawTar(file: string, entries: RawEntry[], gzip = true): Promise<string> {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '');
    const type = e.type ?? 'File';
    const h = new Header({
      path: e.path,
      mode: e.mode ?? (type === 'Directory' ? 0o755 : 0o644),
      size: type === 'File' ? body.length : 0,
      mtime: new Date(1_700_000_000_000),
      type,
      linkpath: e.linkpath,
      uid: 0,
      gid: 0,
    });
    const hb = Buffer.alloc(512);
    h.encode(hb, 0);
    blocks.push(hb);
    if (type === 'File' && body.length) {
      blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  const data = Buffer.concat(blocks);
  await fsp.writeFile(file, gzip ? gzipSync(data) : data);
  return file;
}

