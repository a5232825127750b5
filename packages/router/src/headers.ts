import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';

const REQUEST_ID_RE = /^[A-Za-z0-9\-_.]{1,128}$/;

/** Keeps a well-formed incoming X-Request-Id (≤128 chars of [A-Za-z0-9-_.]); otherwise a new UUID. */
export function requestIdFrom(incoming: string | undefined): string {
  return incoming !== undefined && REQUEST_ID_RE.test(incoming) ? incoming : randomUUID();
}

/** Connection tokens that are not header names of their own. */
function isPlainConnectionToken(token: string): boolean {
  return token === '' || token === 'keep-alive' || token === 'close' || token === 'upgrade';
}

/** Header names listed in a Connection header (hop-by-hop by declaration), lowercased. */
export function declaredHopHeaders(connection: string): string[] | null {
  let extra: string[] | null = null;
  for (const part of connection.split(',')) {
    const token = part.trim().toLowerCase();
    if (isPlainConnectionToken(token)) continue;
    (extra ??= []).push(token);
  }
  return extra;
}

export function dropNamed(raw: string[], names: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    if (!names.includes(raw[i].toLowerCase())) out.push(raw[i], raw[i + 1]);
  }
  return out;
}

/** What the router learns about a request while copying its headers. */
export interface ScannedRequest {
  /** Headers for the backend as a flat [name, value, …] list (Node's rawHeaders format). */
  headers: string[];
  /** Raw Host header value (first one). */
  host: string | undefined;
  requestId: string;
  /** The request carries a body (non-zero Content-Length or any Transfer-Encoding). */
  hasBody: boolean;
  /** The body arrives chunked and is forwarded chunked. */
  chunked: boolean;
  /** Upgrade header value when the client asked for a protocol switch. */
  upgrade: string | undefined;
  /** From another node's router only (cluster.ts): the instance it names and its cluster token. */
  instanceId: string | undefined;
  token: string | undefined;
}

export interface ForwardContext {
  remoteAddress: string;
  proto: 'http' | 'https';
  localPort: string;
}

/**
 * Copies request headers for the backend in one pass over rawHeaders: drops hop-by-hop headers
 * (and any named in Connection), appends to X-Forwarded-For, sets X-Forwarded-Proto/Host/Port and
 * X-Request-Id. Host is passed through unchanged so the app sees its own domain. `Expect` is not
 * forwarded: Node's server already answered `100 Continue` to the client.
 */
export function scanRequestHeaders(raw: string[], ctx: ForwardContext | null, forUpgrade: boolean): ScannedRequest {
  // ctx null: the request comes from another node's router (cluster.ts), which already set
  // X-Forwarded-* and X-Request-Id; the two cluster headers are read here and never passed on.
  const client = ctx !== null;
  let out: string[] = [];
  let host: string | undefined;
  let connection: string | undefined;
  let xff: string | undefined;
  let incomingId: string | undefined;
  let instanceId: string | undefined;
  let token: string | undefined;
  let chunked = false;
  let transferEncoding = '';
  let hasBody = false;
  let upgrade: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const value = raw[i + 1];
    switch (name.toLowerCase()) {
      case 'host':
        if (host === undefined) {
          host = value;
          out.push(name, value);
        }
        break;
      case 'connection':
        connection = connection === undefined ? value : `${connection}, ${value}`;
        break;
      case 'content-length':
        if (value !== '0') hasBody = true;
        out.push(name, value);
        break;
      case 'transfer-encoding':
        // Node's parser only accepts requests whose final coding is chunked.
        transferEncoding = transferEncoding === '' ? value : `${transferEncoding}, ${value}`;
        chunked = true;
        hasBody = true;
        break;
      case 'x-forwarded-for':
        if (client) xff = xff === undefined ? value : `${xff}, ${value}`;
        else out.push(name, value);
        break;
      case 'x-request-id':
        if (incomingId === undefined) {
          incomingId = value;
          if (!client) out.push(name, value);
        }
        break;
      case 'upgrade':
        upgrade = value;
        break;
      case 'x-forwarded-proto':
      case 'x-forwarded-host':
      case 'x-forwarded-port':
        if (!client) out.push(name, value);
        break;
      case 'x-shellwego-instance': // router-to-router headers are never taken from a client
        if (!client) instanceId ??= value;
        break;
      case 'x-shellwego-cluster-token':
        if (!client) token ??= value;
        break;
      case 'keep-alive':
      case 'proxy-connection':
      case 'proxy-authorization':
      case 'proxy-authenticate':
      case 'te':
      case 'trailer':
      case 'expect':
        break;
      default:
        out.push(name, value);
    }
  }
  if (connection !== undefined) {
    const extra = declaredHopHeaders(connection);
    if (extra) out = dropNamed(out, extra);
  }
  const requestId = requestIdFrom(incomingId);
  if (client) {
    out.push(
      'X-Forwarded-For', xff === undefined ? ctx.remoteAddress : `${xff}, ${ctx.remoteAddress}`,
      'X-Forwarded-Proto', ctx.proto,
      'X-Forwarded-Port', ctx.localPort,
      'X-Request-Id', requestId,
    );
    if (host !== undefined) out.push('X-Forwarded-Host', host);
  } else if (incomingId === undefined) {
    out.push('X-Request-Id', requestId);
  }
  // Node hands over the body de-chunked; the upstream client chunks it again.
  if (chunked) out.push('Transfer-Encoding', transferEncoding);
  if (forUpgrade && upgrade !== undefined) out.push('Connection', 'Upgrade', 'Upgrade', upgrade);
  return { headers: out, host, requestId, hasBody, chunked, upgrade, instanceId, token };
}

/**
 * Response headers never passed to the client, besides Connection, Keep-Alive and
 * Transfer-Encoding (which each reader handles itself): hop-by-hop headers, and the backend's
 * own X-Request-Id (the router sets its own). One list for both response paths.
 */
export const DROPPED_RESPONSE_HEADERS: ReadonlySet<string> = new Set(['proxy-connection', 'proxy-authenticate', 'te', 'trailer', 'upgrade', 'x-request-id']);

/**
 * Copies a backend's response headers for the client: drops hop-by-hop headers (Node frames the
 * body itself) and the backend's own X-Request-Id, then adds the router's X-Request-Id.
 */
export function responseHeaders(raw: string[], requestId: string, closing: boolean): string[] {
  let out: string[] = [];
  let connection: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const lower = name.toLowerCase();
    switch (lower) {
      case 'connection':
        connection = raw[i + 1];
        break;
      case 'keep-alive':
      case 'transfer-encoding':
        break;
      default:
        if (!DROPPED_RESPONSE_HEADERS.has(lower)) out.push(name, raw[i + 1]);
    }
  }
  if (connection !== undefined) {
    const extra = declaredHopHeaders(connection);
    if (extra) out = dropNamed(out, extra);
  }
  out.push('X-Request-Id', requestId);
  if (closing) out.push('Connection', 'close');
  return out;
}

/** Headers of a 101 response for the client: the backend's, with our X-Request-Id. */
export function switchingHeaders(raw: string[], requestId: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i].toLowerCase();
    if (lower === 'x-request-id' || lower === 'keep-alive' || lower === 'transfer-encoding') continue;
    out.push(raw[i], raw[i + 1]);
  }
  out.push('X-Request-Id', requestId);
  return out;
}

/** Serialises a status line and flat header list for a raw socket (upgrade path). */
export function rawResponseHead(status: number, reason: string, headers: string[]): string {
  let head = `HTTP/1.1 ${status} ${reason}\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${head}\r\n`;
}

const kForward = Symbol('shellwego.forward');
type TaggedSocket = Socket & { [kForward]?: ForwardContext };

/** Per-socket facts for X-Forwarded-*, computed once per client connection. */
export function forwardContext(socket: Socket, proto: 'http' | 'https'): ForwardContext {
  const tagged = socket as TaggedSocket;
  let ctx = tagged[kForward];
  if (ctx === undefined) {
    let remote = socket.remoteAddress ?? '';
    if (remote.startsWith('::ffff:')) remote = remote.slice(7);
    ctx = { remoteAddress: remote, proto, localPort: String(socket.localPort ?? '') };
    tagged[kForward] = ctx;
  }
  return ctx;
}
