/** Pure helpers of git's smart-HTTP protocol and of the git endpoint's authentication. */

export type GitService = 'git-upload-pack' | 'git-receive-pack';

export const GIT_SERVICES: readonly GitService[] = ['git-upload-pack', 'git-receive-pack'];

export function isGitService(s: unknown): s is GitService {
  return typeof s === 'string' && (GIT_SERVICES as readonly string[]).includes(s);
}

/** One pkt-line: 4 hex digits of length (including themselves), then the payload. */
export function pktLine(payload: string | Buffer): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  if (data.length > 65516) throw new RangeError(`pkt-line payload too long: ${data.length} bytes`);
  return Buffer.concat([Buffer.from((data.length + 4).toString(16).padStart(4, '0'), 'ascii'), data]);
}

export const FLUSH_PKT = Buffer.from('0000', 'ascii');

/** The preamble of a smart-HTTP ref advertisement (`GET info/refs?service=...`). */
export function serviceAdvertisement(service: GitService): Buffer {
  return Buffer.concat([pktLine(`# service=${service}\n`), FLUSH_PKT]);
}

/** Splits a buffer of pkt-lines; `null` stands for a flush packet. Throws on malformed input. */
export function parsePktLines(buf: Buffer): (Buffer | null)[] {
  const out: (Buffer | null)[] = [];
  let i = 0;
  while (i < buf.length) {
    if (i + 4 > buf.length) throw new Error('truncated pkt-line length');
    const hex = buf.subarray(i, i + 4).toString('ascii');
    if (!/^[0-9a-f]{4}$/i.test(hex)) throw new Error(`invalid pkt-line length '${hex}'`);
    const len = parseInt(hex, 16);
    if (len === 0) {
      out.push(null);
      i += 4;
      continue;
    }
    if (len < 4 || i + len > buf.length) throw new Error(`invalid pkt-line length ${len}`);
    out.push(buf.subarray(i + 4, i + len));
    i += len;
  }
  return out;
}

/**
 * The password of an HTTP Basic `Authorization` header (the username is ignored: git asks for
 * one, any will do). Returns null when the header is missing, not Basic, or has no password.
 */
export function basicAuthPassword(header: string | undefined): string | null {
  const m = /^Basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(header ?? '');
  if (!m) return null;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  const password = decoded.slice(colon + 1);
  return password.length ? password : null;
}

/** The `Authorization` header the API's `authenticate()` understands, from a git request's. */
export function bearerFromGitAuth(header: string | undefined): string | undefined {
  const password = basicAuthPassword(header);
  if (password) return `Bearer ${password}`;
  // Also accept a bearer token directly (e.g. `git -c http.extraHeader="Authorization: Bearer ..."`).
  if (/^Bearer\s+\S+$/i.test(header ?? '')) return header;
  return undefined;
}

export const ZERO_SHA = '0000000000000000000000000000000000000000';

export interface RefUpdate {
  oldSha: string;
  newSha: string;
  ref: string;
}

/** Parses pre-receive hook input: one `<old> <new> <ref>` per line. */
export function parseRefUpdates(text: string): RefUpdate[] {
  return text.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
    const [oldSha, newSha, ref] = l.split(/\s+/);
    if (!oldSha || !newSha || !ref) throw new Error(`malformed ref update line: ${l}`);
    return { oldSha, newSha, ref };
  });
}

/**
 * Which update of a push deploys: one to `refs/heads/main`, else one to `refs/heads/master`
 * when the repository has no main (and the push doesn't create it). Deletions never deploy.
 */
export function deployUpdate(updates: RefUpdate[], repoHasMain: boolean): RefUpdate | null {
  const live = updates.filter((u) => !/^0+$/.test(u.newSha));
  const main = live.find((u) => u.ref === 'refs/heads/main');
  if (main) return main;
  const createsMain = updates.some((u) => u.ref === 'refs/heads/main');
  if (repoHasMain || createsMain) return null;
  return live.find((u) => u.ref === 'refs/heads/master') ?? null;
}
