/**
 * What an inbound delivery proves and says, as pure functions (no I/O): signature checks over
 * the raw bytes and the parts of GitHub's and GitLab's push payloads a deploy needs.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { WebhookProvider } from '@shellwego/store';

type Headers = Record<string, string | string[] | undefined>;

function header(h: Headers, name: string): string | undefined {
  const v = h[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** Constant-time equality of two strings (length differences end early, which reveals nothing secret). */
function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

/** GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`. */
export function verifyGithubSignature(secret: string, rawBody: Buffer, signature: string | undefined): boolean {
  if (!signature || !signature.startsWith('sha256=')) return false;
  const expected = 'sha256=' + createHmac('sha256', secret).update(rawBody).digest('hex');
  return safeEqual(expected, signature.trim().toLowerCase());
}

/** GitLab: `X-Gitlab-Token` carries the secret itself. */
export function verifyGitlabToken(secret: string, token: string | undefined): boolean {
  return token !== undefined && token.length > 0 && safeEqual(secret, token);
}

export function verifySignature(provider: WebhookProvider, secret: string, rawBody: Buffer, headers: Headers): boolean {
  return provider === 'github'
    ? verifyGithubSignature(secret, rawBody, header(headers, 'x-hub-signature-256'))
    : verifyGitlabToken(secret, header(headers, 'x-gitlab-token'));
}

/** A delivery id names one delivery for replay protection; bounded and printable. */
export function deliveryId(provider: WebhookProvider, headers: Headers): string | undefined {
  const raw = provider === 'github'
    ? header(headers, 'x-github-delivery')
    : header(headers, 'x-gitlab-event-uuid') ?? header(headers, 'idempotency-key');
  const id = raw?.trim();
  return id && /^[\x21-\x7e]{1,200}$/.test(id) ? id : undefined;
}

export type Delivery =
  | { kind: 'ping'; event: string }
  | { kind: 'push'; event: string; ref: string; sha: string; pusher: string }
  | { kind: 'other'; event: string };

export class PayloadError extends Error {}

/**
 * The event of a verified delivery. GitHub may send the payload as JSON or as a form field
 * `payload=<json>` (its "application/x-www-form-urlencoded" content type); both are read.
 */
export function parseDelivery(provider: WebhookProvider, headers: Headers, rawBody: Buffer): Delivery {
  const event = (provider === 'github' ? header(headers, 'x-github-event') : header(headers, 'x-gitlab-event'))?.trim() ?? '';
  if (!event) throw new PayloadError(`missing ${provider === 'github' ? 'X-GitHub-Event' : 'X-Gitlab-Event'} header`);
  if (provider === 'github' && event === 'ping') return { kind: 'ping', event };
  const isPush = provider === 'github' ? event === 'push' : event === 'Push Hook';
  if (!isPush) return { kind: 'other', event };
  const body = payloadJson(headers, rawBody);
  const ref = typeof body.ref === 'string' ? body.ref : '';
  const sha = typeof body.after === 'string' ? body.after.toLowerCase() : '';
  if (!ref.startsWith('refs/')) throw new PayloadError('push payload has no ref');
  if (!/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(sha)) throw new PayloadError('push payload has no valid "after" commit');
  const who = provider === 'github' ? (body.pusher as { name?: unknown } | undefined)?.name : body.user_username ?? body.user_name;
  const pusher = typeof who === 'string' ? who.replace(/[^\w.@+-]/g, '').slice(0, 80) : '';
  return { kind: 'push', event, ref, sha, pusher };
}

function payloadJson(headers: Headers, rawBody: Buffer): Record<string, unknown> {
  let text = rawBody.toString('utf8');
  if (/^application\/x-www-form-urlencoded\b/i.test(header(headers, 'content-type') ?? '')) {
    text = new URLSearchParams(text).get('payload') ?? '';
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new PayloadError('payload is not valid JSON');
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new PayloadError('payload is not a JSON object');
  return v as Record<string, unknown>;
}

/** A branch deletion pushes the all-zero commit: nothing to deploy. */
export function isDeletion(sha: string): boolean {
  return /^0+$/.test(sha);
}
