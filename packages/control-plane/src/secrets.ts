import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Store } from '@shellwego/store';

/**
 * Envelope encryption of config values (ADR 0005).
 *
 * - A `KeyProvider` holds the master key (key-encryption key) and wraps/unwraps data keys. The
 *   default is `FileKeyProvider` (`<data>/master.key`, 0600); a KMS/Vault provider implements
 *   the same interface.
 * - Each organization has its own 256-bit data key (DEK), generated on first use and stored
 *   only wrapped, in `organization_keys`. Unwrapped DEKs are cached in memory.
 * - Values are sealed with AES-256-GCM under the organization's DEK, with the app id as
 *   associated data (a value can't be moved to another app):
 *   `v2:<organization id>:<iv b64>:<tag b64>:<ciphertext b64>`.
 * - `v1:<iv>:<tag>:<ct>` (sealed directly under the master key, before issue 3) still opens,
 *   so existing installs keep working; every new write is v2.
 */

/** Where a value belongs: its app (the AAD) and the app's organization (the DEK). */
export interface SealScope { id: string; organizationId: string }

export interface KeyProvider {
  /** Kind of provider, stored with each wrapped key (`file`, later `kms`, `vault`, …). */
  readonly name: string;
  /** Identifies the master key that wraps new data keys (recorded for rotation). */
  readonly keyId: string;
  /** Wraps a data key; `context` (the organization id) is bound to the wrapped key. */
  wrap(dek: Buffer, context: string): Promise<string>;
  /** Unwraps a data key wrapped by master key `keyId` for the same `context`. */
  unwrap(wrapped: string, keyId: string, context: string): Promise<Buffer>;
  /** The master key as a raw AES key, for values sealed in the v1 format (file provider only). */
  legacyKey?(): Buffer;
}

function gcmSeal(key: Buffer, plaintext: Buffer, aad: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  if (aad) cipher.setAAD(Buffer.from(aad));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return `${iv.toString('base64')}:${cipher.getAuthTag().toString('base64')}:${ct.toString('base64')}`;
}

function gcmOpen(key: Buffer, iv: string, tag: string, ct: string, aad: string): Buffer {
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64'));
  if (aad) decipher.setAAD(Buffer.from(aad));
  decipher.setAuthTag(Buffer.from(tag, 'base64'));
  return Buffer.concat([decipher.update(Buffer.from(ct, 'base64')), decipher.final()]);
}

/** The master key in a file (base64 of 32 bytes), created with mode 0600 on first start. */
export class FileKeyProvider implements KeyProvider {
  readonly name = 'file';
  readonly keyId: string;

  private constructor(private readonly key: Buffer) {
    this.keyId = `file:${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
  }

  static fromKey(key: Buffer): FileKeyProvider {
    if (key.length !== 32) throw new Error('master key must be 32 bytes');
    return new FileKeyProvider(key);
  }

  /** Loads the key file, creating it (mode 0600) on first start. */
  static async fromFile(path: string): Promise<FileKeyProvider> {
    try {
      const raw = (await readFile(path, 'utf8')).trim();
      return FileKeyProvider.fromKey(Buffer.from(raw, 'base64'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await mkdir(dirname(path), { recursive: true });
      const key = randomBytes(32);
      await writeFile(path, key.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
      return FileKeyProvider.fromKey(key);
    }
  }

  async wrap(dek: Buffer, context: string): Promise<string> {
    return gcmSeal(this.key, dek, `swg-dek:${context}`);
  }

  async unwrap(wrapped: string, keyId: string, context: string): Promise<Buffer> {
    if (keyId !== this.keyId) throw new Error(`data key was wrapped by master key ${keyId}, this platform has ${this.keyId}`);
    const [iv, tag, ct] = wrapped.split(':');
    if (!iv || !tag || ct === undefined) throw new Error('unrecognised wrapped key');
    const dek = gcmOpen(this.key, iv, tag, ct, `swg-dek:${context}`);
    if (dek.length !== 32) throw new Error('unwrapped data key is not 32 bytes');
    return dek;
  }

  legacyKey(): Buffer {
    return this.key;
  }
}

/**
 * Seals and opens config values. `store` (default: the platform's store) is where data keys
 * are read; pass the transaction's store inside `store.transaction(fn)`. A data key is created
 * on the platform store in its own transaction (race-safe: the first writer wins and everybody
 * uses its key) and cached; one read through a transaction's store is not cached, since that
 * transaction may still roll back.
 */
export class SecretBox {
  private readonly deks = new Map<string, Buffer>();
  private readonly creating = new Map<string, Promise<Buffer>>();

  constructor(private readonly provider: KeyProvider, private readonly store: Store) {}

  /** The file-based provider on `<path>` (created on first start), the default. */
  static async fromFile(path: string, store: Store): Promise<SecretBox> {
    return new SecretBox(await FileKeyProvider.fromFile(path), store);
  }

  async seal(scope: SealScope, plaintext: string, store: Store = this.store): Promise<string> {
    const dek = await this.dataKey(scope.organizationId, store);
    return `v2:${scope.organizationId}:${gcmSeal(dek, Buffer.from(plaintext, 'utf8'), scope.id)}`;
  }

  async open(scope: SealScope, sealed: string, store: Store = this.store): Promise<string> {
    const parts = sealed.split(':');
    if (parts[0] === 'v1' && parts.length === 4) {
      const key = this.provider.legacyKey?.();
      if (!key) throw new Error(`a v1 sealed value needs the file master key; provider ${this.provider.name} has none`);
      return gcmOpen(key, parts[1], parts[2], parts[3], scope.id).toString('utf8');
    }
    if (parts[0] === 'v2' && parts.length === 5) {
      if (parts[1] !== scope.organizationId) throw new Error('sealed value belongs to another organization');
      const dek = await this.dataKey(scope.organizationId, store, false);
      return gcmOpen(dek, parts[2], parts[3], parts[4], scope.id).toString('utf8');
    }
    throw new Error('unrecognised sealed value');
  }

  async sealJson(scope: SealScope, value: unknown, store?: Store): Promise<string> {
    return this.seal(scope, JSON.stringify(value), store);
  }

  async openJson<T>(scope: SealScope, sealed: string, store?: Store): Promise<T> {
    return JSON.parse(await this.open(scope, sealed, store)) as T;
  }

  /** Makes sure the organization has a data key (call before a transaction that seals). */
  async ensureKey(organizationId: string): Promise<void> {
    await this.dataKey(organizationId, this.store);
  }

  private async dataKey(organizationId: string, store: Store, create = true): Promise<Buffer> {
    const cached = this.deks.get(organizationId);
    if (cached) return cached;
    const row = await store.organizationKeys.get(organizationId);
    if (row) {
      const dek = await this.provider.unwrap(row.wrappedKey, row.keyId, organizationId);
      if (store === this.store) this.deks.set(organizationId, dek);
      return dek;
    }
    if (!create) throw new Error(`organization ${organizationId} has no data key`);
    if (store !== this.store) {
      // Inside a caller's transaction: create it there, so it commits or rolls back with the
      // values it seals; cache it only once read back through the platform store.
      return this.createIn(store, organizationId);
    }
    let pending = this.creating.get(organizationId);
    if (!pending) {
      pending = this.createIn(this.store, organizationId).finally(() => this.creating.delete(organizationId));
      this.creating.set(organizationId, pending);
    }
    const dek = await pending;
    this.deks.set(organizationId, dek);
    return dek;
  }

  private async createIn(store: Store, organizationId: string): Promise<Buffer> {
    const fresh = randomBytes(32);
    const wrapped = await this.provider.wrap(fresh, organizationId);
    // Insert-if-absent, then read the winner: a concurrent creator's key is used, not ours.
    const row = await store.organizationKeys.createIfAbsent({ organizationId, provider: this.provider.name, keyId: this.provider.keyId, wrappedKey: wrapped });
    return this.provider.unwrap(row.wrappedKey, row.keyId, organizationId);
  }
}
