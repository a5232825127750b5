/**
 * Content-addressed blob files (source tarballs, build artifacts) under
 * `<root>/sha256/<first two hex>/<hex>`. A blob's name is its sha256, so it is written once and
 * never changes; files are read-only (0444).
 *
 * Writes are atomic: bytes stream into `<root>/tmp/` (same filesystem) while being hashed, are
 * fsynced, then renamed into place and the directory fsynced. A crash leaves either no blob or a
 * whole one — never a partial file under a digest. Stale temp files are swept on first write.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { PassThrough, Transform } from 'node:stream';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { badRequest, notFound, payloadTooLarge } from '@shellwego/core';
import type { BlobStore } from '@shellwego/core';

const DIGEST = /^[0-9a-f]{64}$/;
const STALE_TEMP_MS = 60 * 60 * 1000;

/** Throws unless `digest` is a lowercase sha256 hex string — it often arrives from the network. */
export function assertDigest(digest: unknown): asserts digest is string {
  if (typeof digest !== 'string' || !DIGEST.test(digest)) {
    throw badRequest('invalid_digest', 'a blob digest is 64 lowercase hex characters (sha256)', { digest: String(digest).slice(0, 80) });
  }
}

export class FileBlobStore implements BlobStore {
  readonly root: string;
  #swept = false;

  constructor(root: string) {
    this.root = root;
  }

  /** Copies the file in (the original is left alone) and returns its sha256 hex digest. */
  async putFile(path: string): Promise<string> {
    return (await this.putStream(createReadStream(path))).digest;
  }

  /**
   * Stores a stream. With `maxBytes`, a stream longer than that is cut off: the temp file is
   * removed and an error with `code = 'payload_too_large'` (HTTP 413) is thrown. The input is
   * unpiped, not destroyed, so an HTTP handler can still answer; the caller owns it.
   */
  async putStream(input: Readable, opts: { maxBytes?: number } = {}): Promise<{ digest: string; size: number }> {
    // Listen for the input's errors before the first await: one that fails early (a client that
    // disconnects at once) must fail this call, not crash the process as an unhandled error.
    let early: Error | null = null;
    const onEarlyError = (err: Error) => (early ??= err);
    input.on('error', onEarlyError);
    const tmpDir = join(this.root, 'tmp');
    try {
      await mkdir(tmpDir, { recursive: true });
      await this.#sweepOnce(tmpDir);
    } finally {
      input.off('error', onEarlyError);
    }
    if (early) throw early;
    const tmp = join(tmpDir, `${randomBytes(12).toString('hex')}.tmp`);
    const hash = createHash('sha256');
    let size = 0;
    const max = opts.maxBytes;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        size += chunk.length;
        if (max !== undefined && size > max) return cb(payloadTooLarge(`the upload exceeds the limit of ${max} bytes`));
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    // A pass-through between the input and our pipeline: on failure the pipeline destroys only
    // our streams, not the caller's input.
    const source = new PassThrough();
    const onInputError = (err: Error) => source.destroy(err);
    input.on('error', onInputError);
    input.pipe(source);

    try {
      await pipeline(source, meter, createWriteStream(tmp, { flags: 'wx', mode: 0o600 }));
      await fsync(tmp);
    } catch (err) {
      input.unpipe(source);
      await rm(tmp, { force: true });
      throw err;
    } finally {
      input.off('error', onInputError);
    }

    const digest = hash.digest('hex');
    const dir = join(this.root, 'sha256', digest.slice(0, 2));
    const final = join(dir, digest);
    try {
      await mkdir(dir, { recursive: true });
      if (await exists(final)) {
        await rm(tmp, { force: true });
      } else {
        await chmod(tmp, 0o444);
        await rename(tmp, final);
        await fsync(dir);
      }
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    return { digest, size };
  }

  async pathOf(digest: string): Promise<string> {
    assertDigest(digest);
    const path = this.#path(digest);
    if (!(await exists(path))) throw notFound('blob', digest);
    return path;
  }

  async has(digest: string): Promise<boolean> {
    assertDigest(digest);
    return exists(this.#path(digest));
  }

  #path(digest: string): string {
    return join(this.root, 'sha256', digest.slice(0, 2), digest);
  }

  /** Temp files older than an hour are left over from a crash. */
  async #sweepOnce(tmpDir: string): Promise<void> {
    if (this.#swept) return;
    this.#swept = true;
    const cutoff = Date.now() - STALE_TEMP_MS;
    for (const name of await readdir(tmpDir).catch(() => [] as string[])) {
      const p = join(tmpDir, name);
      const s = await stat(p).catch(() => undefined);
      if (s && s.mtimeMs < cutoff) await rm(p, { force: true });
    }
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** fsync a file or directory (for a directory: makes a rename in it durable). */
async function fsync(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
