/**
 * The router's backend client against hand-written HTTP/1.1 backends (raw TCP), for the framing
 * cases a Node http server never produces: split reads, trailers, interim responses,
 * close-delimited bodies, and malformed or hostile responses.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { request, startBackend, startRouter, table } from './test-helpers.ts';
import type { TestRouter } from './test-helpers.ts';

const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of closers.reverse()) await c();
});

interface RawBackend {
  address: string;
  connections: number;
  open: Set<Socket>;
}

/**
 * A TCP backend: `onRequest` gets each request head (one per request; bodies are not expected)
 * and the socket to answer on.
 */
async function rawBackend(onRequest: (head: string, socket: Socket, n: number) => void): Promise<RawBackend> {
  const state: RawBackend = { address: '', connections: 0, open: new Set() };
  let n = 0;
  const server = net.createServer((socket) => {
    state.connections++;
    state.open.add(socket);
    socket.on('close', () => state.open.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    socket.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      let end: number;
      while ((end = buf.indexOf('\r\n\r\n')) >= 0) {
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        onRequest(head, socket, n++);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  closers.push(() => new Promise<void>((resolve) => {
    for (const s of state.open) s.destroy();
    server.close(() => resolve());
  }));
  return state;
}

async function routerFor(address: string, opts: Parameters<typeof startRouter>[0] = {}): Promise<TestRouter> {
  const r = await startRouter(opts);
  closers.push(r.close);
  await r.publish(table(1, { 'raw.localhost': { backends: [address] } }));
  return r;
}

const get = (r: TestRouter, agent?: http.Agent, method = 'GET') => request(r.port, { method, headers: { Host: 'raw.localhost' }, agent });

/** Writes `data` one small piece per tick, to exercise every parser state across reads. */
async function dribble(socket: Socket, data: string, piece = 1): Promise<void> {
  for (let i = 0; i < data.length; i += piece) {
    socket.write(data.slice(i, i + piece), 'latin1');
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe('response framing', () => {
  test('content-length body, head and body split into single bytes', async () => {
    const b = await rawBackend((_h, s) => void dribble(s, 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world'));
    const r = await routerFor(b.address);
    const res = await get(r);
    assert.equal(res.status, 200);
    assert.equal(res.text, 'hello world');
    assert.equal(res.headers['content-length'], '11');
  });

  test('chunked body with extensions and trailers, dribbled; re-chunked to the client', async () => {
    const wire = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Sum: abc\r\n\r\n';
    const b = await rawBackend((_h, s) => void dribble(s, wire, 3));
    const r = await routerFor(b.address);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < 3; i++) {
      const res = await get(r, agent);
      assert.equal(res.text, 'hello 0123456789');
      assert.equal(res.headers['transfer-encoding'], 'chunked');
      assert.equal(res.headers.trailer, undefined);
    }
    agent.destroy();
    assert.equal(b.connections, 1, 'the backend connection was reused after each chunked response');
  });

  test('close-delimited body (no length) is read to the end; connection not reused', async () => {
    const b = await rawBackend((_h, s) => {
      s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ');
      setTimeout(() => s.end('close'), 20);
    });
    const r = await routerFor(b.address);
    assert.equal((await get(r)).text, 'until close');
    assert.equal((await get(r)).text, 'until close');
    assert.equal(b.connections, 2);
  });

  test('HTTP/1.0 response and Connection: close are not reused', async () => {
    const b = await rawBackend((_h, s, n) => {
      s.write(n % 2 ? 'HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok' : 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok');
    });
    const r = await routerFor(b.address);
    for (let i = 0; i < 4; i++) assert.equal((await get(r)).text, 'ok');
    assert.equal(b.connections, 4);
  });

  test('interim 100/103 responses are skipped; the final one is relayed', async () => {
    const b = await rawBackend((_h, s) => {
      s.write('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n');
      setTimeout(() => s.write('HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone'), 10);
    });
    const r = await routerFor(b.address);
    const res = await get(r);
    assert.equal(res.status, 201);
    assert.equal(res.text, 'done');
  });

  test('HEAD response with Content-Length and no body; 204/304 without length', async () => {
    const b = await rawBackend((head, s) => {
      if (head.startsWith('HEAD')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n');
      else if (head.includes(' /204 ')) s.write('HTTP/1.1 204 No Content\r\n\r\n');
      else s.write('HTTP/1.1 304 Not Modified\r\nETag: "1"\r\n\r\n');
    });
    const r = await routerFor(b.address);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const head = await get(r, agent, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], '1000');
    assert.equal((await request(r.port, { path: '/204', headers: { Host: 'raw.localhost' }, agent })).status, 204);
    assert.equal((await request(r.port, { path: '/304', headers: { Host: 'raw.localhost' }, agent })).status, 304);
    agent.destroy();
    assert.equal(b.connections, 1);
  });

  test('hop-by-hop response headers are dropped, including those named in Connection', async () => {
    const b = await rawBackend((_h, s) => {
      s.write('HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=30\r\nX-Internal: secret\r\nProxy-Authenticate: Basic\r\nX-Request-Id: theirs\r\nX-App: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n');
    });
    const r = await routerFor(b.address);
    const res = await request(r.port, { headers: { Host: 'raw.localhost', 'X-Request-Id': 'mine' } });
    assert.equal(res.headers['x-internal'], undefined);
    assert.equal(res.headers['proxy-authenticate'], undefined);
    assert.equal(res.headers['x-request-id'], 'mine');
    assert.equal(res.headers['x-app'], '1');
    assert.deepEqual(res.headers['set-cookie'], ['a=1', 'b=2']);
  });
});

describe('hostile or broken backends → 502, connection never reused', () => {
  const cases: [string, string][] = [
    ['Transfer-Encoding with Content-Length', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n'],
    ['conflicting Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!'],
    ['non-numeric Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello'],
    ['bad status line', 'HTTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'],
    ['unexpected 101', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n'],
    ['header line without colon', 'HTTP/1.1 200 OK\r\nbroken header\r\nContent-Length: 0\r\n\r\n'],
    ['obs-fold continuation', 'HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n'],
    ['bare LF inside a header value', 'HTTP/1.1 200 OK\r\nX-A: 1\nX-B: 2\r\nContent-Length: 0\r\n\r\n'],
    ['not HTTP at all', 'SSH-2.0-OpenSSH_9.2\r\n\r\n'],
  ];
  for (const [name, wire] of cases) {
    test(name, async () => {
      const b = await rawBackend((_h, s) => s.write(wire));
      const r = await routerFor(b.address);
      const res = await get(r);
      assert.equal(res.status, 502, res.text);
      assert.equal(res.headers['x-shellwego-error'], 'backend_unavailable');
      await get(r);
      assert.equal(b.connections, 2, 'a fresh connection for the next request');
    });
  }

  test('malformed chunk size after the head cuts the client response', async () => {
    const b = await rawBackend((_h, s) => s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n'));
    const r = await routerFor(b.address);
    await assert.rejects(get(r));
  });

  test('bytes after the response: the client gets the response, the connection is dropped', async () => {
    const b = await rawBackend((_h, s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled'));
    const r = await routerFor(b.address);
    assert.equal((await get(r)).text, 'ok');
    assert.equal((await get(r)).text, 'ok');
    assert.equal(b.connections, 2);
  });

  test('an oversized response head is refused', async () => {
    const b = await rawBackend((_h, s) => s.write(`HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(70_000)}\r\nContent-Length: 0\r\n\r\n`));
    const r = await routerFor(b.address);
    assert.equal((await get(r)).status, 502);
  });

  test('a truncated content-length body cuts the client response', async () => {
    const b = await rawBackend((_h, s) => {
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this');
      setTimeout(() => s.destroy(), 20);
    });
    const r = await routerFor(b.address);
    await assert.rejects(get(r));
  });
});

describe('keep-alive pool', () => {
  test('sequential requests share one backend connection', async () => {
    const a = await startBackend((_req, res) => res.end('x'));
    closers.push(a.close);
    let connections = 0;
    a.server.on('connection', () => connections++);
    const r = await routerFor(a.address);
    for (let i = 0; i < 20; i++) assert.equal((await get(r)).text, 'x');
    assert.equal(connections, 1);
  });

  test('keep-alive race: a pooled connection closed by the backend is retried for GET', async () => {
    // Answers the first request on each connection, then closes the connection silently as soon
    // as the next request arrives on it (the race a proxy meets when an app's idle timeout fires).
    const b = await rawBackend((_h, s) => {
      const served = (s as Socket & { served?: boolean }).served;
      if (served) return void s.destroy();
      (s as Socket & { served?: boolean }).served = true;
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
    const r = await routerFor(b.address);
    for (let i = 0; i < 3; i++) assert.equal((await get(r)).status, 200);
    const post = await request(r.port, { method: 'POST', headers: { Host: 'raw.localhost' }, body: 'x' });
    assert.equal(post.status, 502, 'a POST that may have been received is not resent');
  });

  test('Keep-Alive: timeout=1 from the backend means no reuse', async () => {
    const b = await rawBackend((_h, s) => s.write('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\nok'));
    const r = await routerFor(b.address);
    for (let i = 0; i < 3; i++) assert.equal((await get(r)).text, 'ok');
    assert.equal(b.connections, 3);
  });

  test('idle connections are closed after upstreamIdleMs, and when the backend leaves the table', async () => {
    const b = await rawBackend((_h, s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'));
    const r = await routerFor(b.address, { upstreamIdleMs: 300 });
    await get(r);
    assert.equal(b.open.size, 1);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.equal(b.open.size, 0, 'swept after the idle limit');

    await get(r);
    assert.equal(b.open.size, 1);
    await r.publish(table(2, { 'raw.localhost': { backends: [] } }));
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(b.open.size, 0, 'closed when the backend left the table');
  });

  test('a client aborting a large download closes the backend connection', async () => {
    let closed = false;
    const a = await startBackend((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const block = Buffer.alloc(64 * 1024);
      const pump = (): void => {
        while (res.write(block));
      };
      res.on('drain', pump);
      res.on('close', () => (closed = true));
      pump();
    });
    closers.push(a.close);
    const r = await routerFor(a.address);
    await new Promise<void>((resolve) => {
      http.get({ host: '127.0.0.1', port: r.port, agent: false, headers: { Host: 'raw.localhost' } }, (res) => {
        let n = 0;
        res.on('data', (c: Buffer) => {
          n += c.length;
          if (n > 1_000_000) {
            res.destroy();
            resolve();
          }
        });
      });
    });
    const deadline = Date.now() + 2_000;
    while (!closed && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.ok(closed);
  });

  test('a 20 MB response to a slow reader arrives intact (backpressure)', async () => {
    const body = randomBytes(20 * 1024 * 1024);
    const a = await startBackend((_req, res) => {
      res.writeHead(200, { 'content-length': body.length });
      res.end(body);
    });
    closers.push(a.close);
    const r = await routerFor(a.address);
    const digest = await new Promise<string>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: r.port, agent: false, headers: { Host: 'raw.localhost' } }, (res) => {
        const h = createHash('sha256');
        let n = 0;
        res.on('data', (c: Buffer) => {
          h.update(c);
          n += c.length;
          if (n < 2_000_000) {
            res.pause();
            setTimeout(() => res.resume(), 1);
          }
        });
        res.on('end', () => resolve(h.digest('hex')));
        res.on('error', reject);
      });
    });
    assert.equal(digest, createHash('sha256').update(body).digest('hex'));
  });
});
