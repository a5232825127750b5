/**
 * The typed client of the ShellWeGo API. Every request and response type comes from the route
 * table in @shellwego/core: adding a route there makes it callable here with no code change.
 */
import { fillPath, routes } from '@shellwego/core';
import type { RouteBody, RouteDef, RouteName, RouteParams, RouteQuery, RouteResponse, Routes } from '@shellwego/core';
import { ShellWeGoApiError, ShellWeGoNetworkError } from './errors.ts';
import { parseSse } from './sse.ts';
import type { SseMessage } from './sse.ts';

export const SDK_VERSION = '0.1.0';

// ---------- types derived from the route table ----------

/** Routes answered with one JSON document. */
export type CallRouteName = {
  [N in RouteName]: Routes[N] extends { stream: 'sse' } ? never : Routes[N] extends { upload: object } ? never : N;
}[RouteName];
/** Routes whose request body is a raw upload (source tarballs). */
export type UploadRouteName = { [N in RouteName]: Routes[N] extends { upload: object } ? N : never }[RouteName];
/** Lists answered a page at a time (`Link: <…>; rel="next"` while more follow). */
export type PagedRouteName = { [N in RouteName]: Routes[N] extends { paged: true } ? N : never }[RouteName];
/** Routes answered with a server-sent-events stream. */
export type StreamRouteName = { [N in RouteName]: Routes[N] extends { stream: 'sse' } ? N : never }[RouteName];

/** A request part: absent when the route has none, optional when all its fields are, else required. */
type Part<K extends string, T> = [T] extends [undefined]
  ? { [P in K]?: undefined }
  : // eslint-disable-next-line @typescript-eslint/no-empty-object-type
    {} extends NonNullable<T>
    ? { [P in K]?: T }
    : { [P in K]: T };

interface RequestExtras {
  signal?: AbortSignal;
}

export type CallOptions<N extends RouteName> = Part<'params', RouteParams<N>> & Part<'query', RouteQuery<N>> & Part<'body', RouteBody<N>> & RequestExtras;
export type UploadRequest<N extends RouteName> = Part<'params', RouteParams<N>> & Part<'query', RouteQuery<N>>;
export type StreamOptions<N extends RouteName> = Part<'params', RouteParams<N>> & Part<'query', RouteQuery<N>> & RequestExtras;

/** The options argument may be left out when nothing in it is required. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
type OptionalWhenEmpty<O> = {} extends O ? [options?: O] : [options: O];

export interface UploadOptions {
  /** Defaults to the route's declared content type. */
  contentType?: string;
  /** Byte length of the body; sent as Content-Length. Known for Buffers; give it for streams when you know it. */
  size?: number;
  /** Called with the running total of bytes handed to the connection. */
  onProgress?: (sentBytes: number) => void;
  signal?: AbortSignal;
}

export interface ClientOptions {
  /** e.g. `http://127.0.0.1:8080`; a path prefix (`https://host/api`) is kept. */
  baseUrl: string;
  token?: string;
  /** Defaults to the global fetch (Node ≥ 18). */
  fetch?: typeof fetch;
  /** Sent as User-Agent, e.g. `shellwego-cli/0.1.0`. */
  userAgent?: string;
}

export interface ShellWeGoClient {
  readonly baseUrl: string;
  readonly token: string | undefined;
  /** One JSON request/response round trip. */
  call<N extends CallRouteName>(name: N, ...options: OptionalWhenEmpty<CallOptions<N>>): Promise<RouteResponse<N>>;
  /**
   * Every item of a paged list: follows the `next` links from the first page (`query.limit` is
   * the page size) and returns the pages joined, in order.
   */
  list<N extends PagedRouteName>(name: N, ...options: OptionalWhenEmpty<CallOptions<N>>): Promise<RouteResponse<N>>;
  /** Streams `body` as the raw request body (chunked unless the size is known). */
  upload<N extends UploadRouteName>(name: N, request: UploadRequest<N>, body: AsyncIterable<Uint8Array | string> | Uint8Array, options?: UploadOptions): Promise<RouteResponse<N>>;
  /**
   * Server-sent events of a stream route. The request is made when iteration starts; errors
   * (HTTP or network) are thrown from the first `next()`. Iteration ends when the server closes
   * the stream or `signal` aborts; breaking out of the loop closes the connection.
   */
  stream<N extends StreamRouteName>(name: N, ...options: OptionalWhenEmpty<StreamOptions<N>>): AsyncIterable<SseMessage>;
}

// ---------- implementation ----------

type AnyRequest = { params?: unknown; query?: unknown; body?: unknown; signal?: AbortSignal };

const UPLOAD_CHUNK = 64 * 1024;

export function createClient(options: ClientOptions): ShellWeGoClient {
  const baseUrl = options.baseUrl.replace(/\/+$/, '');
  if (!/^https?:\/\//i.test(baseUrl)) throw new TypeError(`the API URL must start with http:// or https:// (got '${options.baseUrl}')`);
  const doFetch = options.fetch ?? globalThis.fetch;
  const token = options.token;
  const userAgent = options.userAgent ?? `shellwego-sdk/${SDK_VERSION}`;

  function route(name: string): RouteDef {
    const def = (routes as Record<string, RouteDef>)[name];
    if (!def) throw new TypeError(`unknown route '${name}'`);
    return def;
  }

  function urlFor(def: RouteDef, req: AnyRequest): string {
    let url = baseUrl + fillPath(def.path, req.params as Record<string, string | number> | undefined);
    const qs = encodeQuery(req.query);
    if (qs) url += `?${qs}`;
    return url;
  }

  function headers(extra: Record<string, string>): Record<string, string> {
    const h: Record<string, string> = { 'user-agent': userAgent, ...extra };
    if (token) h.authorization = `Bearer ${token}`;
    return h;
  }

  async function send(name: string, def: RouteDef, url: string, init: RequestInit & { duplex?: 'half' }): Promise<Response> {
    let res: Response;
    try {
      res = await doFetch(url, { method: def.method, ...init });
    } catch (err) {
      if (isAbort(err, init.signal)) throw err;
      // A failure we raised ourselves while producing the upload body is not a network error.
      const own = findOwnError(err);
      if (own) throw own;
      throw new ShellWeGoNetworkError(baseUrl, err);
    }
    if (!res.ok) throw await errorFrom(res, name);
    return res;
  }

  async function readJson(res: Response, name: string): Promise<unknown> {
    if (res.status === 204) return undefined;
    const text = await res.text();
    if (text === '') return undefined;
    try {
      return JSON.parse(text);
    } catch {
      throw new ShellWeGoApiError(res.status, 'invalid_response', `the API answered ${name} with something that is not JSON: ${snippet(text)}`, null, name);
    }
  }

  const client: ShellWeGoClient = {
    baseUrl,
    token,

    async call(name: string, ...args: unknown[]) {
      const req = (args[0] ?? {}) as AnyRequest;
      const def = route(name);
      if (def.stream) throw new TypeError(`${name} is a stream route: use client.stream()`);
      if (def.upload) throw new TypeError(`${name} takes an upload: use client.upload()`);
      const init: RequestInit = { headers: headers({ accept: 'application/json' }), signal: req.signal };
      // Routes with a body always get a JSON one, so `{}` reaches routes whose fields are all optional.
      if (def.body) {
        init.body = JSON.stringify(req.body ?? {});
        (init.headers as Record<string, string>)['content-type'] = 'application/json';
      }
      const res = await send(name, def, urlFor(def, req), init);
      return readJson(res, name) as never;
    },

    async list(name: string, ...args: unknown[]) {
      const req = (args[0] ?? {}) as AnyRequest;
      const def = route(name);
      if (!def.paged) throw new TypeError(`${name} is not a paged list: use client.call()`);
      const items: unknown[] = [];
      const seen = new Set<string>();
      let url: string | null = urlFor(def, req);
      while (url !== null) {
        // A server that points back at a page already read would make this loop forever.
        if (seen.has(url)) throw new ShellWeGoApiError(200, 'invalid_response', `the API's next link for ${name} repeats ${url}`, null, name);
        seen.add(url);
        const res = await send(name, def, url, { headers: headers({ accept: 'application/json' }), signal: req.signal });
        const page = await readJson(res, name);
        if (!Array.isArray(page)) throw new ShellWeGoApiError(res.status, 'invalid_response', `the API answered ${name} with something that is not a list`, null, name);
        items.push(...(page as unknown[]));
        const next = nextLink(res.headers.get('link'));
        url = next === null ? null : new URL(next, url).href;
      }
      return items as never;
    },

    async upload(name: string, request: unknown, body: AsyncIterable<Uint8Array | string> | Uint8Array, opts: UploadOptions = {}) {
      const req = (request ?? {}) as AnyRequest;
      const def = route(name);
      if (!def.upload) throw new TypeError(`${name} does not take an upload: use client.call()`);
      const size = opts.size ?? (body instanceof Uint8Array ? body.byteLength : undefined);
      const h: Record<string, string> = { accept: 'application/json', 'content-type': opts.contentType ?? def.upload.contentType };
      if (size !== undefined) h['content-length'] = String(size);
      const res = await send(name, def, urlFor(def, req), {
        headers: headers(h),
        // Node's fetch takes async iterables; the DOM typing of BodyInit does not know that.
        body: countingBody(body, size, opts.onProgress) as unknown as BodyInit,
        duplex: 'half',
        signal: opts.signal,
      });
      return readJson(res, name) as never;
    },

    stream(name: string, ...args: unknown[]): AsyncIterable<SseMessage> {
      const req = (args[0] ?? {}) as AnyRequest;
      const def = route(name);
      if (def.stream !== 'sse') throw new TypeError(`${name} is not a stream route: use client.call()`);
      return {
        [Symbol.asyncIterator]: () => streamMessages(name, def, req)[Symbol.asyncIterator](),
      };
    },
  };

  async function* streamMessages(name: string, def: RouteDef, req: AnyRequest): AsyncGenerator<SseMessage> {
    const signal = req.signal;
    if (signal?.aborted) return;
    let res: Response;
    try {
      res = await send(name, def, urlFor(def, req), { headers: headers({ accept: 'text/event-stream' }), signal });
    } catch (err) {
      if (isAbort(err, signal)) return;
      throw err;
    }
    const type = res.headers.get('content-type') ?? '';
    if (!type.startsWith('text/event-stream')) {
      await res.body?.cancel().catch(() => {});
      throw new ShellWeGoApiError(res.status, 'invalid_response', `the API answered ${name} with '${type || 'no content type'}' instead of an event stream`, null, name);
    }
    if (!res.body) return;
    const reader = res.body.getReader();
    const chunks = async function* () {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        yield value;
      }
    };
    try {
      yield* parseSse(chunks());
    } catch (err) {
      if (isAbort(err, signal)) return;
      throw new ShellWeGoNetworkError(baseUrl, err);
    } finally {
      // Reached on break/return too: closes the connection instead of leaving it to the GC.
      await reader.cancel().catch(() => {});
    }
  }

  return client;
}

/** Query objects become `a=1&b=x`; arrays repeat the key; undefined and null are left out. */
export function encodeQuery(query: unknown): string {
  if (!query || typeof query !== 'object') return '';
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query as Record<string, unknown>)) {
    if (v === undefined || v === null) continue;
    for (const item of Array.isArray(v) ? v : [v]) {
      if (item === undefined || item === null) continue;
      qs.append(k, item instanceof Date ? item.toISOString() : String(item));
    }
  }
  return qs.toString();
}

/** Marks errors raised while producing an upload body, so they surface as themselves. */
const OWN = Symbol('shellwego.ownError');

function findOwnError(err: unknown): Error | undefined {
  for (let e = err as { cause?: unknown } | undefined, depth = 0; e && depth < 5; depth++, e = e.cause as typeof e) {
    if ((e as Record<symbol, unknown>)[OWN]) return e as Error;
  }
  return undefined;
}

async function* countingBody(body: AsyncIterable<Uint8Array | string> | Uint8Array, size: number | undefined, onProgress?: (sent: number) => void): AsyncGenerator<Uint8Array> {
  let sent = 0;
  const emit = (n: number) => {
    sent += n;
    onProgress?.(sent);
  };
  if (body instanceof Uint8Array) {
    for (let i = 0; i < body.byteLength; i += UPLOAD_CHUNK) {
      const chunk = body.subarray(i, i + UPLOAD_CHUNK);
      yield chunk;
      emit(chunk.byteLength);
    }
    if (body.byteLength === 0) onProgress?.(0);
  } else {
    for await (const c of body) {
      const chunk = typeof c === 'string' ? Buffer.from(c) : c;
      if (size !== undefined && sent + chunk.byteLength > size) throw ownError(`the upload is larger than the ${size} bytes declared`);
      yield chunk;
      emit(chunk.byteLength);
    }
  }
  // A short body with a declared Content-Length would be sent truncated; refuse instead.
  if (size !== undefined && sent !== size) throw ownError(`the upload ended after ${sent} of the ${size} bytes declared`);
}

function ownError(message: string): Error {
  const e = new Error(message);
  (e as unknown as Record<symbol, unknown>)[OWN] = true;
  return e;
}

function isAbort(err: unknown, signal: AbortSignal | undefined | null): boolean {
  return Boolean(signal?.aborted) || (err as { name?: string })?.name === 'AbortError';
}

async function errorFrom(res: Response, name: string): Promise<ShellWeGoApiError> {
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
    if (body && typeof body.error === 'object' && body.error && typeof body.error.message === 'string') {
      const code = typeof body.error.code === 'string' ? body.error.code : `http_${res.status}`;
      return new ShellWeGoApiError(res.status, code, body.error.message, body.error.details, name);
    }
  } catch {}
  // Not the platform's error shape: a proxy in between, or not a ShellWeGo API at all.
  const what = `${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
  return new ShellWeGoApiError(res.status, `http_${res.status}`, text ? `the API answered ${what}: ${snippet(text)}` : `the API answered ${what}`, null, name);
}

function snippet(text: string): string {
  const one = text.replace(/\s+/g, ' ').trim();
  return one.length > 200 ? `${one.slice(0, 200)}…` : one;
}

/** The target of `rel="next"` in a Link header (RFC 8288), or null. */
export function nextLink(header: string | null): string | null {
  if (!header) return null;
  for (const part of header.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>(.*)$/.exec(part);
    if (m && /;\s*rel\s*=\s*"?(?:[^";]*\s)?next(?:\s[^";]*)?"?\s*(?:;|$)/i.test(m[2]!)) return m[1]!;
  }
  return null;
}
