/**
 * The router's client side: pooled keep-alive HTTP/1.1 connections to backends with a small,
 * strict response parser. Node's http.ClientRequest + Agent cost about half of the router's
 * time per request (measured: a proxy on raw sockets ran ~2× the requests/s of one on
 * http.request, and undici's Pool was no faster than http.request here), so the hot path does
 * without them. Upgrades (WebSocket) still use http.request: they are rare and long-lived.
 *
 * One request at a time per connection (no pipelining). Framing follows RFC 9112 §6.3; anything
 * ambiguous (Transfer-Encoding with Content-Length, conflicting lengths, malformed chunks, an
 * oversized head, bytes after the response) fails the request with 502 and the connection is
 * never reused, so a hostile app cannot desynchronise a pooled connection.
 */
import net from 'node:net';
import type { Socket } from 'node:net';
import type { Backend } from './table.ts';
import { DROPPED_RESPONSE_HEADERS } from './headers.ts';

/** What a connection reports to the request it is serving. */
export interface UpstreamHandler {
  /** Final (non-1xx) status and headers, hop-by-hop headers removed. */
  onResponseHead(status: number, headers: string[]): void;
  /** A piece of the (de-chunked) body; return false to ask for a pause (backpressure). */
  onResponseData(chunk: Buffer): boolean;
  /** The body is complete; `last` is a final piece not yet passed to onResponseData. */
  onResponseEnd(last: Buffer | null): void;
  /**
   * No response head will come. `connectFailed`: the TCP connection never opened (nothing was
   * sent). `reusedSilent`: a pooled connection closed before a single response byte arrived.
   */
  onUpstreamFailure(err: NodeJS.ErrnoException, connectFailed: boolean, reusedSilent: boolean): void;
  /** The connection broke after the head: the body is truncated. */
  onResponseAbort(err: NodeJS.ErrnoException): void;
}

export interface OutgoingRequest {
  method: string;
  path: string;
  /** Flat [name, value, …] list, as built by scanRequestHeaders. */
  headers: string[];
  /** Request body source, or null. */
  body: NodeJS.ReadableStream | null;
  /** Frame the body with chunked encoding (the headers must say so). */
  chunked: boolean;
}

const MAX_HEAD = 64 * 1024;
const MAX_CHUNK_LINE = 4 * 1024;
const CRLFCRLF = Buffer.from('\r\n\r\n');

const enum Phase {
  Idle,
  Head,
  Length,
  ChunkSize,
  ChunkData,
  ChunkDataEnd,
  Trailers,
  UntilClose,
}

function protocolError(message: string): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`bad response from backend: ${message}`);
  err.code = 'EPROTO';
  return err;
}

function closedError(): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error('backend closed the connection');
  err.code = 'ECONNRESET';
  return err;
}

export interface PoolOptions {
  connectTimeoutMs: number;
  /** Idle time after which a pooled connection is closed when the backend gave no Keep-Alive hint. */
  idleMs: number;
  /** At most this many idle connections are kept per backend. */
  maxIdlePerBackend: number;
  /**
   * Opens a connection to another node's router (backends with `via`): TLS, ready at
   * 'secureConnect' (cluster.ts). Pooled like any other connection.
   */
  connectVia?: (backend: Backend) => Socket;
}

/** Keep-alive pools for all backends (the idle stack lives on each Backend object). */
export class UpstreamPool {
  private readonly live = new Set<UpstreamConn>();
  private closing = false;

  constructor(readonly opts: PoolOptions) {}

  /**
   * An idle connection to `backend` (most recently used first) or a new one. Connections idle
   * for over a second are not used for requests that could not be retried if the backend
   * happened to close it at that moment (`retrySafe` false).
   */
  acquire(backend: Backend, now: number, retrySafe: boolean): UpstreamConn {
    const idle = backend.idle;
    while (idle.length > 0) {
      const conn = idle[idle.length - 1];
      if (!conn.socket.writable || conn.socket.readableEnded) {
        // The backend already closed it; its 'close' event has not run yet.
        idle.pop();
        conn.destroy();
        continue;
      }
      if (now - conn.idleSince >= conn.idleLimitMs) {
        // The top is the newest; if it has expired, all below it have too.
        for (const c of idle.splice(0)) c.destroy();
        break;
      }
      if (!retrySafe && now - conn.idleSince > 1_000) break;
      idle.pop();
      conn.reused = true;
      return conn;
    }
    const conn = new UpstreamConn(this, backend);
    this.live.add(conn);
    return conn;
  }

  /** Called by a connection that finished a response cleanly. */
  release(conn: UpstreamConn): void {
    const idle = conn.backend.idle;
    if (this.closing || conn.backend.removed || idle.length >= this.opts.maxIdlePerBackend) {
      conn.destroy();
      return;
    }
    conn.idleSince = Date.now();
    idle.push(conn);
  }

  forget(conn: UpstreamConn): void {
    this.live.delete(conn);
    const idle = conn.backend.idle;
    const i = idle.indexOf(conn);
    if (i >= 0) idle.splice(i, 1);
  }

  /** Closes idle connections that outlived their idle limit. */
  sweep(backends: Iterable<Backend>, now = Date.now()): void {
    for (const b of backends) {
      const idle = b.idle;
      let n = 0;
      while (n < idle.length && now - idle[n].idleSince >= idle[n].idleLimitMs) n++;
      if (n > 0) for (const c of idle.splice(0, n)) c.destroy();
    }
  }

  /** Closes the idle connections of a backend that left the route table. */
  dropBackend(backend: Backend): void {
    for (const c of backend.idle.splice(0)) c.destroy();
  }

  /** Stop pooling; close idle connections now (busy ones close when their response ends). */
  closeIdle(): void {
    this.closing = true;
    for (const c of this.live) if (c.isIdle()) c.destroy();
  }

  destroyAll(): void {
    this.closing = true;
    for (const c of this.live) c.destroy();
  }

  get size(): number {
    return this.live.size;
  }
}

export class UpstreamConn {
  readonly socket: Socket;
  private connected = false;
  private connectTimer: NodeJS.Timeout | null = null;
  /** True while serving a request on a connection taken from the pool. */
  reused = false;
  idleSince = 0;
  idleLimitMs: number;
  private handler: UpstreamHandler | null = null;
  private lastError: NodeJS.ErrnoException | null = null;

  // Request side.
  private pending: OutgoingRequest | null = null;
  private requestDone = true;
  private bodySource: NodeJS.ReadableStream | null = null;
  private onBodyData: ((chunk: Buffer) => void) | null = null;
  private onBodyEnd: (() => void) | null = null;

  // Response side.
  private phase = Phase.Idle;
  private isHeadRequest = false;
  private headBuf: Buffer | null = null;
  private gotBytes = false;
  private keepAlive = true;
  private remaining = 0;
  private line = '';

  constructor(private readonly pool: UpstreamPool, readonly backend: Backend) {
    this.idleLimitMs = pool.opts.idleMs;
    const via = backend.via !== null ? pool.opts.connectVia : undefined;
    const socket = via ? via(backend) : net.connect({ host: backend.host, port: backend.port, noDelay: true });
    this.socket = socket;
    const ms = pool.opts.connectTimeoutMs;
    this.connectTimer = setTimeout(() => {
      const err: NodeJS.ErrnoException = new Error(`connect timed out after ${ms} ms`);
      err.code = 'ETIMEDOUT';
      socket.destroy(err);
    }, ms);
    // Over TLS "connected" means the handshake (and the peer's identity check) succeeded: until
    // then nothing was sent, so a refused peer is a connect failure like a refused port.
    socket.on(via ? 'secureConnect' : 'connect', () => this.onConnect());
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('end', () => this.onEnd());
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.lastError = err;
    });
    socket.on('close', () => this.onClose());
    socket.on('drain', () => {
      if (this.bodySource !== null) this.bodySource.resume();
    });
  }

  isIdle(): boolean {
    return this.handler === null;
  }

  /** Sends a request; the response is reported to `handler`. */
  send(handler: UpstreamHandler, req: OutgoingRequest): void {
    this.handler = handler;
    this.phase = Phase.Head;
    this.isHeadRequest = req.method === 'HEAD';
    this.headBuf = null;
    this.gotBytes = false;
    this.keepAlive = true;
    const h = req.headers;
    let head = `${req.method} ${req.path} HTTP/1.1\r\n`;
    for (let i = 0; i < h.length; i += 2) head += `${h[i]}: ${h[i + 1]}\r\n`;
    // Written at once even while connecting: net buffers it, and nothing leaves if connect fails.
    this.socket.write(`${head}\r\n`, 'latin1');
    if (req.body === null) {
      this.requestDone = true;
      return;
    }
    this.requestDone = false;
    this.pending = req;
    // The body is read only once connected, so a refused connection can be retried elsewhere.
    if (this.connected) this.pumpBody();
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  /** Abandons the exchange (client gone, or after an error): the connection is not reused. */
  destroy(): void {
    this.handler = null;
    this.detachBody();
    this.socket.destroy();
  }

  private onConnect(): void {
    this.connected = true;
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
    }
    this.socket.setKeepAlive(true, 30_000);
    if (this.pending !== null && this.handler !== null) this.pumpBody();
  }

  private pumpBody(): void {
    const req = this.pending!;
    this.pending = null;
    const body = req.body!;
    const socket = this.socket;
    this.bodySource = body;
    this.onBodyData = req.chunked
      ? (chunk: Buffer) => {
        if (chunk.length === 0) return;
        socket.cork();
        socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
        socket.write(chunk);
        const ok = socket.write('\r\n', 'latin1');
        socket.uncork();
        if (!ok) body.pause();
      }
      : (chunk: Buffer) => {
        if (!socket.write(chunk)) body.pause();
      };
    this.onBodyEnd = () => {
      if (req.chunked) socket.write('0\r\n\r\n', 'latin1');
      this.requestDone = true;
      this.detachBody();
    };
    body.on('data', this.onBodyData);
    body.on('end', this.onBodyEnd);
  }

  private detachBody(): void {
    if (this.bodySource === null) return;
    if (this.onBodyData) this.bodySource.off('data', this.onBodyData);
    if (this.onBodyEnd) this.bodySource.off('end', this.onBodyEnd);
    // Let an unsent remainder drain into nothing, so the client connection is not left stalled.
    this.bodySource.resume();
    this.bodySource = null;
    this.onBodyData = null;
    this.onBodyEnd = null;
    this.pending = null;
  }

  private onData(d: Buffer): void {
    if (this.handler === null) {
      // Bytes on an idle connection: the backend is not speaking HTTP/1.1 as agreed.
      this.destroy();
      return;
    }
    this.gotBytes = true;
    let buf = d;
    while (buf.length > 0 && this.handler !== null) {
      switch (this.phase) {
        case Phase.Head: {
          const data = this.headBuf === null ? buf : Buffer.concat([this.headBuf, buf]);
          const end = data.indexOf(CRLFCRLF);
          if (end < 0) {
            if (data.length > MAX_HEAD) return this.fail(protocolError('response head too large'));
            this.headBuf = data;
            return;
          }
          this.headBuf = null;
          if (end > MAX_HEAD) return this.fail(protocolError('response head too large'));
          buf = data.subarray(end + 4);
          if (!this.parseHead(data.toString('latin1', 0, end))) return;
          if ((this.phase as Phase) === Phase.Idle) return this.finish(null, buf);
          break;
        }
        case Phase.Length: {
          if (buf.length >= this.remaining) {
            const last = buf.subarray(0, this.remaining);
            const rest = buf.subarray(this.remaining);
            this.remaining = 0;
            return this.finish(last, rest);
          }
          this.remaining -= buf.length;
          if (!this.handler.onResponseData(buf)) this.pause();
          return;
        }
        case Phase.UntilClose:
          if (!this.handler.onResponseData(buf)) this.pause();
          return;
        case Phase.ChunkSize:
        case Phase.Trailers: {
          const nl = buf.indexOf(10);
          if (nl < 0) {
            this.line += buf.toString('latin1');
            if (this.line.length > MAX_CHUNK_LINE) return this.fail(protocolError('chunk line too long'));
            return;
          }
          const line = this.line + buf.toString('latin1', 0, nl + 1);
          this.line = '';
          buf = buf.subarray(nl + 1);
          if (line.length > MAX_CHUNK_LINE || line.charCodeAt(line.length - 2) !== 13) return this.fail(protocolError('malformed chunk line'));
          if (this.phase === Phase.Trailers) {
            if (line.length === 2) return this.finish(null, buf);
            break; // trailer fields are dropped (not forwarded)
          }
          const semi = line.indexOf(';');
          const hex = (semi >= 0 ? line.slice(0, semi) : line.slice(0, -2)).trim();
          if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) return this.fail(protocolError('malformed chunk size'));
          const size = parseInt(hex, 16);
          if (size === 0) this.phase = Phase.Trailers;
          else {
            this.remaining = size;
            this.phase = Phase.ChunkData;
          }
          break;
        }
        case Phase.ChunkData: {
          const n = Math.min(this.remaining, buf.length);
          const part = n === buf.length ? buf : buf.subarray(0, n);
          buf = buf.subarray(n);
          this.remaining -= n;
          if (this.remaining === 0) {
            this.phase = Phase.ChunkDataEnd;
            this.remaining = 2;
          }
          if (!this.handler.onResponseData(part)) this.pause();
          break;
        }
        case Phase.ChunkDataEnd: {
          // Expect CRLF after the data, possibly split over reads.
          const expected = this.remaining === 2 ? 13 : 10;
          if (buf[0] !== expected) return this.fail(protocolError('missing CRLF after chunk'));
          buf = buf.subarray(1);
          if (--this.remaining === 0) this.phase = Phase.ChunkSize;
          break;
        }
        default:
          return this.fail(protocolError('unexpected bytes'));
      }
    }
  }

  /** Parses a response head; returns false if it failed the exchange. */
  private parseHead(head: string): boolean {
    const lines = head.split('\r\n');
    const statusLine = lines[0];
    const v11 = statusLine.startsWith('HTTP/1.1 ');
    if (!v11 && !statusLine.startsWith('HTTP/1.0 ')) return this.failed(protocolError('bad status line'));
    const status = Number(statusLine.slice(9, 12));
    if (!Number.isInteger(status) || status < 100 || status > 999 || (statusLine.length > 12 && statusLine.charCodeAt(12) !== 32)) {
      return this.failed(protocolError('bad status code'));
    }
    if (status < 200) {
      if (status === 101) return this.failed(protocolError('unexpected 101'));
      return true; // interim (100 Continue, 103 Early Hints): skip, the final head follows
    }
    const out: string[] = [];
    let contentLength = -1;
    let chunked = false;
    let transferEncoding = false;
    let connectionTokens: string | null = null;
    let keepAliveHint = -1;
    for (let i = 1; i < lines.length; i++) {
      const l = lines[i];
      const colon = l.indexOf(':');
      if (colon <= 0) return this.failed(protocolError('malformed header line'));
      const name = l.slice(0, colon);
      const value = l.slice(colon + 1).trim();
      const lower = name.toLowerCase();
      switch (lower) {
        case 'content-length': {
          if (!/^\d{1,15}$/.test(value)) return this.failed(protocolError('bad Content-Length'));
          const n = Number(value);
          if (contentLength >= 0 && contentLength !== n) return this.failed(protocolError('conflicting Content-Length'));
          if (contentLength < 0) out.push(name, value);
          contentLength = n;
          break;
        }
        case 'transfer-encoding':
          transferEncoding = true;
          chunked = /(?:^|,)\s*chunked\s*$/i.test(value);
          break;
        case 'connection':
          connectionTokens = connectionTokens === null ? value : `${connectionTokens},${value}`;
          break;
        case 'keep-alive': {
          const m = /(?:^|[,\s])timeout=(\d+)/i.exec(value);
          if (m) keepAliveHint = Number(m[1]) * 1000;
          break;
        }
        default:
          if (!DROPPED_RESPONSE_HEADERS.has(lower)) out.push(name, value);
      }
    }
    if (transferEncoding && contentLength >= 0) return this.failed(protocolError('both Transfer-Encoding and Content-Length'));
    let headers = out;
    if (!v11) this.keepAlive = false;
    if (connectionTokens !== null) {
      const extra: string[] = [];
      for (const t of connectionTokens.split(',')) {
        const token = t.trim().toLowerCase();
        if (token === 'close') this.keepAlive = false;
        else if (token !== '' && token !== 'keep-alive') extra.push(token);
      }
      if (extra.length > 0) {
        headers = [];
        for (let i = 0; i < out.length; i += 2) if (!extra.includes(out[i].toLowerCase())) headers.push(out[i], out[i + 1]);
      }
    }
    if (keepAliveHint >= 0) {
      // Leave a second of margin before the backend's own idle timeout.
      this.idleLimitMs = Math.min(this.pool.opts.idleMs, Math.max(0, keepAliveHint - 1_000));
      if (this.idleLimitMs === 0) this.keepAlive = false;
    }
    if (this.isHeadRequest || status === 204 || status === 304) this.phase = Phase.Idle;
    else if (transferEncoding) {
      if (chunked) this.phase = Phase.ChunkSize;
      else {
        this.phase = Phase.UntilClose;
        this.keepAlive = false;
      }
    } else if (contentLength >= 0) {
      this.remaining = contentLength;
      this.phase = contentLength === 0 ? Phase.Idle : Phase.Length;
    } else {
      this.phase = Phase.UntilClose;
      this.keepAlive = false;
    }
    this.handler!.onResponseHead(status, headers);
    return this.handler !== null;
  }

  /** The response is complete. `rest` holds bytes after it (which forbid reuse). */
  private finish(last: Buffer | null, rest: Buffer | null): void {
    const handler = this.handler!;
    this.handler = null;
    this.phase = Phase.Idle;
    this.reused = false;
    if (this.keepAlive && this.requestDone && (rest === null || rest.length === 0) && !this.socket.destroyed) {
      this.socket.resume();
      this.pool.release(this);
    } else {
      this.detachBody();
      this.socket.destroy();
    }
    handler.onResponseEnd(last !== null && last.length > 0 ? last : null);
  }

  private failed(err: NodeJS.ErrnoException): false {
    this.fail(err);
    return false;
  }

  private fail(err: NodeJS.ErrnoException): void {
    const handler = this.handler;
    const beforeHead = this.phase === Phase.Head;
    this.destroy();
    if (handler === null) return;
    if (beforeHead) handler.onUpstreamFailure(err, false, false);
    else handler.onResponseAbort(err);
  }

  private onEnd(): void {
    if (this.handler === null) this.destroy(); // an idle connection the backend closed
    else if (this.phase === Phase.UntilClose) this.finish(null, null);
  }

  private onClose(): void {
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer);
      this.connectTimer = null;
    }
    this.pool.forget(this);
    const handler = this.handler;
    if (handler === null) return;
    this.handler = null;
    this.detachBody();
    const err = this.lastError ?? closedError();
    if (this.phase === Phase.Head) handler.onUpstreamFailure(err, !this.connected, this.reused && !this.gotBytes);
    else handler.onResponseAbort(err);
  }
}
