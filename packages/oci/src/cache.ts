/**
 * Content-addressed blob cache shared by every app on the node: `<dir>/blobs/sha256/<hex>`.
 *
 * A blob is written to a private temp file while its sha256 is computed over the bytes as
 * received, and renamed into place only when the digest (and the declared size) match, so a
 * cached file is always exactly what its name says. Concurrent pulls of one blob in this process
 * share one download; across processes each writes its own temp file and the atomic rename makes
 * the outcome the same whoever wins.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';

export class DigestMismatchError extends Error {
  readonly code = 'digest_mismatch';
}

export function sha256Hex(data: Buffer | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** `sha256:<hex>` of bytes. */
export function digestOf(data: Buffer | Uint8Array): string {
  return `sha256:${sha256Hex(data)}`;
}

/** Throws unless `data` hashes to `expected` (only sha256 digests are accepted). */
export function verifyDigest(data: Buffer | Uint8Array, expected: string, what: string): void {
  if (!/^sha256:[a-f0-9]{64}$/.test(expected)) throw new DigestMismatchError(`${what}: unsupported digest "${expected}" (only sha256 is accepted)`);
  const got = digestOf(data);
  if (got !== expected) throw new DigestMismatchError(`${what}: digest mismatch: expected ${expected}, got ${got}; refusing it`);
}

export class BlobCache {
  private inflight = new Map<string, Promise<string>>();
  readonly blobDir: string;
  readonly tmpDir: string;

  constructor(readonly root: string) {
    this.blobDir = path.join(root, 'blobs', 'sha256');
    this.tmpDir = path.join(root, 'tmp');
  }

  pathOf(digest: string): string {
    const m = /^sha256:([a-f0-9]{64})$/.exec(digest);
    if (!m) throw new DigestMismatchError(`unsupported digest "${digest}" (only sha256 is accepted)`);
    return path.join(this.blobDir, m[1]);
  }

  async has(digest: string): Promise<boolean> {
    try {
      return (await fsp.stat(this.pathOf(digest))).isFile();
    } catch {
      return false;
    }
  }

  /**
   * Path of the blob, downloading it with `open` when it is not cached. `open` returns the body
   * stream; `size` is the descriptor's size (the download is cut off beyond it).
   */
  ensure(digest: string, size: number, open: () => Promise<AsyncIterable<Uint8Array>>, onBytes?: (n: number) => void): Promise<{ file: string; downloaded: boolean }> {
    const file = this.pathOf(digest);
    const running = this.inflight.get(digest);
    const p =
      running ??
      (async () => {
        if (await this.has(digest)) return 'cached';
        await this.download(digest, size, open, onBytes);
        return 'downloaded';
      })().finally(() => this.inflight.delete(digest));
    if (!running) this.inflight.set(digest, p);
    // A caller that joined someone else's download did not download anything itself.
    return p.then((how) => ({ file, downloaded: !running && how === 'downloaded' }));
  }

  private async download(digest: string, size: number, open: () => Promise<AsyncIterable<Uint8Array>>, onBytes?: (n: number) => void): Promise<void> {
    await fsp.mkdir(this.blobDir, { recursive: true, mode: 0o755 });
    await fsp.mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
    const tmp = path.join(this.tmpDir, `${digest.slice(7, 23)}-${randomBytes(6).toString('hex')}`);
    const hash = createHash('sha256');
    let bytes = 0;
    const fh = await fsp.open(tmp, 'wx', 0o644);
    try {
      try {
        for await (const chunk of await open()) {
          bytes += chunk.length;
          if (size >= 0 && bytes > size) throw new DigestMismatchError(`blob ${digest}: the registry sent more than the ${size} bytes the manifest declares; refusing it`);
          hash.update(chunk);
          await fh.write(chunk);
          onBytes?.(chunk.length);
        }
      } finally {
        await fh.close();
      }
      const got = `sha256:${hash.digest('hex')}`;
      if (got !== digest) throw new DigestMismatchError(`blob ${digest}: digest mismatch (got ${got}); refusing it`);
      if (size >= 0 && bytes !== size) throw new DigestMismatchError(`blob ${digest}: ${bytes} bytes received, the manifest declares ${size}; refusing it`);
      await fsp.rename(tmp, this.pathOf(digest));
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw e;
    }
  }

  /** Remove temp files left by a crash (call at start, when no pull is running). */
  async cleanTmp(): Promise<void> {
    await fsp.rm(this.tmpDir, { recursive: true, force: true });
  }
}
