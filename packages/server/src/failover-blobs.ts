/**
 * Artifacts for a joined node from any server of an HA control plane (`--join https://a,https://b`):
 * they serve the same blobs (one database, shared blob storage) and chain to the same install CA,
 * so a node keeps starting new releases when the server it joined through is down. The server
 * that answered last is asked first; one cache for all of them.
 */
import { isApiError, notFound } from '@shellwego/core';
import type { BlobStore } from '@shellwego/core';
import { HttpBlobStore, fetchedIfFound } from '@shellwego/store';
import type { TlsPin } from '@shellwego/store';

export class FailoverBlobStore implements BlobStore {
  readonly #servers: { apiUrl: string; blobs: HttpBlobStore }[];
  #preferred = 0;
  readonly #warn: (msg: string) => void;

  /** `warn`: told when an artifact came from another server than the first asked (and why). */
  constructor(opts: { apiUrls: string[]; authorization: string; cacheDir: string; pin: TlsPin | null; warn?: (msg: string) => void }) {
    this.#warn = opts.warn ?? (() => {});
    if (opts.apiUrls.length === 0) throw new Error('FailoverBlobStore needs at least one API URL');
    this.#servers = opts.apiUrls.map((apiUrl) => ({ apiUrl, blobs: new HttpBlobStore({ apiUrl, authorization: opts.authorization, cacheDir: opts.cacheDir, pin: opts.pin }) }));
  }

  putFile(): Promise<string> {
    return Promise.reject(new Error('a joined node only reads blobs: builds store them on the control plane'));
  }

  /**
   * From the preferred server, else each other in turn. A server that answers 404 is believed
   * (they share one blob storage) unless another has the blob; the rest fail with every reason.
   */
  async pathOf(digest: string): Promise<string> {
    const failures: string[] = [];
    let missing = 0;
    for (let i = 0; i < this.#servers.length; i++) {
      const at = (this.#preferred + i) % this.#servers.length;
      try {
        const path = await this.#servers[at].blobs.pathOf(digest);
        if (failures.length > 0) this.#warn(`artifact ${digest} fetched from ${this.#servers[at].apiUrl}; before, ${failures.join('; ')}`);
        this.#preferred = at;
        return path;
      } catch (err) {
        if (isApiError(err) && err.status === 404) missing++;
        failures.push(`${this.#servers[at].apiUrl}: ${(err as Error).message}`);
      }
    }
    if (missing > 0) throw notFound('blob', digest);
    // One server: its own error as it was (its message names it).
    if (this.#servers.length === 1) throw new Error(failures[0].slice(this.#servers[0].apiUrl.length + 2));
    throw new Error(`no control plane server could give artifact ${digest}: ${failures.join('; ')}`);
  }

  has(digest: string): Promise<boolean> {
    return fetchedIfFound(this, digest);
  }
}
