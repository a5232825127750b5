/**
 * Test helpers: real HTTP backends on loopback, a router wired to an in-process bus, a plain HTTP
 * client, and a small RFC 6455 WebSocket client/server (the `ws` package is not installed in
 * this workspace; the framing here is the real protocol over real sockets).
 */
import http from 'node:http';
import https from 'node:https';
import type tls from 'node:tls';
import type { IncomingHttpHeaders, IncomingMessage, RequestListener, Server } from 'node:http';
import net from 'node:net';
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { InProcessBus } from '@shellwego/bus';
import { subjects } from '@shellwego/core';
import type { RouteTableMessage } from '@shellwego/core';
import { createRouter } from './router.ts';
import type { Router, RouterOptions } from './router.ts';

export interface Backend {
  server: Server;
  port: number;
  address: string;
  close(): Promise<void>;
}

export async function startBackend(handler: RequestListener): Promise<Backend> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    server, port, address: `127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** A loopback address nothing listens on (connections are refused). */
export async function deadAddress(): Promise<string> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return `127.0.0.1:${port}`;
}

/**
 * A loopback address whose connects hang: a child process listens with backlog 1 and then blocks
 * its event loop, so the kernel's accept queue fills (with filler connections) and further
 * SYNs are dropped — what a firewalled or overloaded host looks like.
 */
export async function hangingAddress(): Promise<{ address: string; close(): void }> {
  const script = "const s=require('net').createServer();s.listen({port:0,host:'127.0.0.1',backlog:1},()=>{process.stdout.write(s.address().port+'\\n');setTimeout(()=>Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0,60000),20)})";
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
    child.once('error', reject);
  });
  await new Promise((resolve) => setTimeout(resolve, 100));
  const fillers: Socket[] = [];
  for (let i = 0; i < 3; i++) {
    const f = net.connect(port, '127.0.0.1');
    f.on('error', () => {});
    fillers.push(f);
  }
  await new Promise((resolve) => setTimeout(resolve, 100));
  return {
    address: `127.0.0.1:${port}`,
    close: () => {
      for (const f of fillers) f.destroy();
      child.kill('SIGKILL');
    },
  };
}

export interface TestRouter {
  router: Router;
  bus: InProcessBus;
  port: number;
  /** Publishes a table (as the control plane would) and waits until the router has handled it. */
  publish(table: RouteTableMessage): Promise<void>;
  close(): Promise<void>;
}

export async function startRouter(opts: Partial<RouterOptions> = {}): Promise<TestRouter> {
  const bus = new InProcessBus();
  const router = await createRouter({ bus, host: '127.0.0.1', port: 0, ...opts });
  return {
    router, bus, port: router.port,
    async publish(table) {
      await bus.publish(subjects.routes, table);
      await bus.drain();
    },
    async close() {
      await router.close();
      await bus.close();
    },
  };
}

export function table(version: number, routes: Record<string, { appName?: string; backends: string[] }>): RouteTableMessage {
  const out: RouteTableMessage = { version, routes: {} };
  for (const [host, r] of Object.entries(routes)) {
    const appName = r.appName ?? host.split('.')[0];
    out.routes[host] = { appId: `app_${appName}`, appName, backends: r.backends.map((address, i) => ({ instanceId: `${appName}-${i}`, address })) };
  }
  return out;
}

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

/** `tls`: over TLS with these options (a cluster listener: client certificate, CA). */
export function request(port: number, opts: { method?: string; path?: string; headers?: Record<string, string>; body?: Buffer | string; agent?: http.Agent | false; tls?: tls.ConnectionOptions } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = (opts.tls ? https : http).request({ host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path ?? '/', headers: opts.headers, agent: opts.agent ?? false, ...opts.tls }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text: body.toString('utf8') });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Sends raw bytes and collects everything until the server closes (or `ms` passes). */
export function rawExchange(port: number, data: string, ms = 2_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => s.destroy(), ms);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', reject);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    s.write(data);
  });
}

// ---- WebSocket (RFC 6455), enough for text echo and close --------------------------------

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export function encodeFrame(opcode: number, payload: Buffer, mask: boolean): Buffer {
  const len = payload.length;
  const head: number[] = [0x80 | opcode];
  const m = mask ? 0x80 : 0;
  if (len < 126) head.push(m | len);
  else if (len < 65536) head.push(m | 126, len >> 8, len & 0xff);
  else throw new Error('frame too large for this helper');
  if (!mask) return Buffer.concat([Buffer.from(head), payload]);
  const key = randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= key[i % 4];
  return Buffer.concat([Buffer.from(head), key, body]);
}

/** Incremental frame parser. */
export class FrameReader {
  private buf = Buffer.alloc(0);
  push(chunk: Buffer): { opcode: number; payload: Buffer }[] {
    this.buf = Buffer.concat([this.buf, chunk]);
    const frames: { opcode: number; payload: Buffer }[] = [];
    for (;;) {
      if (this.buf.length < 2) break;
      const opcode = this.buf[0] & 0x0f;
      const masked = (this.buf[1] & 0x80) !== 0;
      let len = this.buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) break;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        throw new Error('64-bit frames not supported by this helper');
      }
      const need = off + (masked ? 4 : 0) + len;
      if (this.buf.length < need) break;
      let payload = Buffer.from(this.buf.subarray(off + (masked ? 4 : 0), need));
      if (masked) {
        const key = this.buf.subarray(off, off + 4);
        payload = Buffer.from(payload.map((b, i) => b ^ key[i % 4]));
      }
      frames.push({ opcode, payload });
      this.buf = this.buf.subarray(need);
    }
    return frames;
  }
}

/** Makes an http.Server answer WebSocket upgrades with an echo service ("echo:" + text). */
export function attachWsEcho(server: Server, seen?: (req: IncomingMessage) => void): { sockets: Set<Socket> } {
  const sockets = new Set<Socket>();
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    seen?.(req);
    const key = req.headers['sec-websocket-key'];
    if (typeof key !== 'string' || String(req.headers.upgrade).toLowerCase() !== 'websocket') {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.on('end', () => socket.end()); // peer gone: finish our side too (as ws servers do)
    const accept = createHash('sha1').update(key + GUID).digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    const reader = new FrameReader();
    const onData = (chunk: Buffer): void => {
      for (const f of reader.push(chunk)) {
        if (f.opcode === 0x1 || f.opcode === 0x2) socket.write(encodeFrame(f.opcode, Buffer.concat([Buffer.from('echo:'), f.payload]), false));
        else if (f.opcode === 0x8) {
          socket.end(encodeFrame(0x8, f.payload, false));
        }
      }
    };
    if (head.length) onData(head);
    socket.on('data', onData);
  });
  return { sockets };
}

export interface WsClient {
  socket: Socket;
  response: IncomingMessage;
  send(text: string): void;
  /** Next text message from the server. */
  next(): Promise<string>;
  /** Sends a close frame and resolves when the TCP connection has closed. */
  close(): Promise<{ closeFrame: boolean }>;
  closed: Promise<void>;
}

export function wsConnect(port: number, host: string, path = '/', extraHeaders: Record<string, string> = {}, tlsOpts?: tls.ConnectionOptions): Promise<WsClient> {
  return new Promise((resolve, reject) => {
    const key = randomBytes(16).toString('base64');
    const req = (tlsOpts ? https : http).request({
      host: '127.0.0.1', port, path, agent: false, ...tlsOpts,
      headers: { Host: host, Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Key': key, 'Sec-WebSocket-Version': '13', ...extraHeaders },
    });
    req.on('error', reject);
    req.on('response', (res) => reject(Object.assign(new Error(`no upgrade: ${res.statusCode}`), { status: res.statusCode, headers: res.headers })));
    req.on('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
      const expected = createHash('sha1').update(key + GUID).digest('base64');
      if (res.headers['sec-websocket-accept'] !== expected) return reject(new Error('bad Sec-WebSocket-Accept'));
      const reader = new FrameReader();
      const queue: string[] = [];
      const waiters: ((s: string) => void)[] = [];
      let sawClose = false;
      const onData = (chunk: Buffer): void => {
        for (const f of reader.push(chunk)) {
          if (f.opcode === 0x8) {
            sawClose = true;
            continue;
          }
          const text = f.payload.toString('utf8');
          const w = waiters.shift();
          if (w) w(text);
          else queue.push(text);
        }
      };
      socket.on('data', onData);
      socket.on('error', () => {});
      if (head.length) onData(head);
      const closed = new Promise<void>((r) => socket.once('close', () => r()));
      resolve({
        socket, response: res, closed,
        send: (text) => void socket.write(encodeFrame(0x1, Buffer.from(text), true)),
        next: () => new Promise<string>((r) => {
          const q = queue.shift();
          if (q !== undefined) r(q);
          else waiters.push(r);
        }),
        close: async () => {
          socket.write(encodeFrame(0x8, Buffer.from([0x03, 0xe8]), true));
          await closed;
          return { closeFrame: sawClose };
        },
      });
    });
    req.end();
  });
}
