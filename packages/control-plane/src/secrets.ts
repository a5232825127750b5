import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * Seals config values with AES-256-GCM under the platform master key, so the database never
 * holds a plaintext secret. Format: `v1:<iv b64>:<tag b64>:<ciphertext b64>`.
 * (Per-organization data keys wrapped by the master key come with the secrets work in issue 3;
 * the sealed format is versioned so they slot in.)
 */
export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  static fromKey(key: Buffer): SecretBox {
    if (key.length !== 32) throw new Error('master key must be 32 bytes');
    return new SecretBox(key);
  }

  /** Loads the key file, creating it (mode 0600) on first start. */
  static async fromFile(path: string): Promise<SecretBox> {
    try {
      const raw = (await readFile(path, 'utf8')).trim();
      return SecretBox.fromKey(Buffer.from(raw, 'base64'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await mkdir(dirname(path), { recursive: true });
      const key = randomBytes(32);
      await writeFile(path, key.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
      return SecretBox.fromKey(key);
    }
  }

  seal(plaintext: string, aad = ''): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    if (aad) cipher.setAAD(Buffer.from(aad));
    const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return `v1:${iv.toString('base64')}:${cipher.getAuthTag().toString('base64')}:${ct.toString('base64')}`;
  }

  open(sealed: string, aad = ''): string {
    const [v, iv, tag, ct] = sealed.split(':');
    if (v !== 'v1' || !iv || !tag || ct === undefined) throw new Error('unrecognised sealed value');
    const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv, 'base64'));
    if (aad) decipher.setAAD(Buffer.from(aad));
    decipher.setAuthTag(Buffer.from(tag, 'base64'));
    return Buffer.concat([decipher.update(Buffer.from(ct, 'base64')), decipher.final()]).toString('utf8');
  }

  sealJson(value: unknown, aad = ''): string {
    return this.seal(JSON.stringify(value), aad);
  }

  openJson<T>(sealed: string, aad = ''): T {
    return JSON.parse(this.open(sealed, aad)) as T;
  }
}
