/**
 * The read side of the blob store for a node that is not on the control plane's machine: a blob
 * is downloaded from the control plane (`GET /v1/node/blobs/:digest`, node credentials) into a
 * local cache with the same layout as FileBlobStore. Bytes are hashed while they are written to
 * a temp file and only a file whose sha256 is the digest asked for is renamed into the cache, so
 * a tampered or truncated download leaves nothing behind.
 */
import { createWriteStream } from 'node:fs';
import { chmod, mkdir, rename, rm } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { isApiError, notFound } from '@shellwego/core';
import type { BlobStore } from '@shellwego/core';
import { FileBlobStore, assertDigest } from './blobs.ts';
import { nodeRequest, readJson } from './node-http.ts';
import type { TlsPin } from './node-http.ts';

export interface HttpBlobStoreOptions {
  /** The control plane's API URL. */
  apiUrl: string;
  /** `Node <node id>:<secret>`, the credentials the node got at join. */
  authorization: string;
  /** Local cache (under the node's data dir). */
  cacheDir: string;
  /** https: the control plane's CA pinned at join (its certificate must chain to it). */
  pin?: TlsPin | null;
}

export class HttpBlobStore implements BlobStore {
  readonly #cache: FileBlobStore;
  readonly #inflight = new Map<string, Promise<string>>();

  constructor(private readonly opts: HttpBlobStoreOptions) {
    this.#cache = new FileBlobStore(opts.cacheDir);
  }

  /** Nodes only read artifacts; builds store them on the control plane. */
  putFile(): Promise<string> {
    return Promise.reject(new Error('HttpBlobStore is read-only: blobs are stored on the control plane'));
  }

  /** Local path of the blob, downloaded and verified first when it is not cached yet. */
  async pathOf(digest: string): Promise<string> {
    assertDigest(digest);
    if (await this.#cache.has(digest)) return this.#cache.pathOf(digest);
    // Concurrent starts of one release share a single download.
    const running = this.#inflight.get(digest);
    if (running) return running;
    const p = this.#download(digest).finally(() => this.#inflight.delete(digest));
    this.#inflight.set(digest, p);
    return p;
  }

  /** Whether the control plane has the blob (fetching it into the cache when it does). */
  has(digest: string): Promise<boolean> {
    return fetchedIfFound(this, digest);
  }

  async #download(digest: string): Promise<string> {
    const url = new URL(`/v1/node/blobs/${digest}`, this.opts.apiUrl).toString();
    let res: IncomingMessage;
    try {
      res = await nodeRequest(url, { headers: { authorization: this.opts.authorization }, pin: this.opts.pin ?? null });
    } catch (err) {
      throw new Error(`could not fetch artifact ${digest} from the control plane at ${this.opts.apiUrl}: ${(err as Error).message}`, { cause: err });
    }
    if (res.statusCode !== 200) {
      const body = (await readJson(res)) as { error?: { message?: string } } | null;
      if (res.statusCode === 404) throw notFound('blob', digest);
      const why = res.statusCode === 401 ? "the control plane refused this node's credentials" : `HTTP ${res.statusCode}`;
      throw new Error(`could not fetch artifact ${digest} from ${this.opts.apiUrl}: ${why}${body?.error?.message ? ` (${body.error.message})` : ''}`);
    }
    const tmpDir = join(this.opts.cacheDir, 'tmp');
    await mkdir(tmpDir, { recursive: true, mode: 0o700 });
    const tmp = join(tmpDir, `${randomBytes(12).toString('hex')}.download`);
    const hash = createHash('sha256');
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(res, meter, createWriteStream(tmp, { flags: 'wx', mode: 0o600 }));
      const got = hash.digest('hex');
      if (got !== digest) {
        throw new Error(`artifact ${digest} downloaded from ${this.opts.apiUrl} has sha256 ${got}: refused (corrupted or tampered in transit)`);
      }
      const dir = join(this.opts.cacheDir, 'sha256', digest.slice(0, 2));
      await mkdir(dir, { recursive: true });
      await chmod(tmp, 0o444);
      await rename(tmp, join(dir, digest));
    } finally {
      await rm(tmp, { force: true });
    }
    return this.#cache.pathOf(digest);
  }
}

/**
 * `has` of a blob store that fetches on read: true once the blob is fetched, false when its
 * source answers 404, any other failure thrown.
 */
export async function fetchedIfFound(blobs: Pick<BlobStore, 'pathOf'>, digest: string): Promise<boolean> {
  try {
    await blobs.pathOf(digest);
    return true;
  } catch (err) {
    if (isApiError(err) && err.status === 404) return false;
    throw err;
  }
}
