import { randomBytes } from 'node:crypto';

// Crockford base32: sortable, case-insensitive, no ambiguous letters.
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

/**
 * One ID scheme for every entity: `<prefix>_<10 chars time><16 chars random>`.
 * Time-prefixed so IDs sort by creation, which keeps listings stable without extra indexes.
 */
export function newId(prefix: IdPrefix): string {
  let t = Date.now();
  let time = '';
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const bytes = randomBytes(16);
  let rand = '';
  for (const b of bytes) rand += ALPHABET[b % 32];
  return `${prefix}_${time}${rand}`;
}

export type IdPrefix =
  | 'org' | 'usr' | 'mem' | 'tok' | 'app' | 'bld' | 'rel' | 'ins' | 'evt' | 'nod' | 'dep' | 'aud'
  | 'whk' | 'dom' | 'crt' | 'jtk' | 'vol';
