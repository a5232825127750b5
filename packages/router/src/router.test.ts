import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { InProcessBus } from '@shellwego/bus';
import { subjects } from '@shellwego/core';
import { createRouter } from './router.ts';
import { attachWsEcho, deadAddress, hangingAddress, rawExchange, request, startBackend, startRouter, table, wsConnect } from './test-helpers.ts';
import type { Backend, TestRouter } from './test-helpers.ts';

const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of closers.reverse()) await c();
});

async function backend(name: string, extra?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean): Promise<Backend> {
  const b = await startBackend((req, res) => {
    if (extra?.(req, res)) return;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ name, method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders }));
  });
  closers.push(b.close);
  return b;
}

async function router(opts: Parameters<typeof startRouter>[0] = {}): Promise<TestRouter> {
  const r = await startRouter(opts);
  closers.push(r.close);
  return r;
}

function until(cond: () => boolean, ms = 2_000): Promise<void> {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) return resolve();
      if (Date.now() > deadline) return reject(new Error('condition not met in time'));
      setTimeout(tick, 5);
    };
    tick();
  });
}

describe('routing by Host', () => {
  test('routes by Host, case-insensitive, port stripped; unknown → 404; no instances → 503', async () => {
    const a = await backend('a');
    const b = await backend('b');
    const r = await router();
    await r.publish(table(1, { 'hello.localhost': { backends: [a.address] }, 'other.localhost': { backends: [b.address] }, 'idle.localhost': { backends: [] } }));

    const viaPort = await request(r.port, { headers: { Host: 'hello.localhost:8000' }, path: '/x?y=1' });
    assert.equal(viaPort.status, 200);
    assert.equal(JSON.parse(viaPort.text).name, 'a');
    assert.equal(JSON.parse(viaPort.text).url, '/x?y=1');
    assert.equal(JSON.parse(viaPort.text).headers.host, 'hello.localhost:8000', 'Host passed through unchanged');
    assert.equal(JSON.parse((await request(r.port, { headers: { Host: 'OTHER.localhost' } })).text).name, 'b');

    const missing = await request(r.port, { headers: { Host: 'nope.localhost' } });
    assert.equal(missing.status, 404);
    assert.equal(missing.headers['x-shellwego-error'], 'no_such_app');
    assert.match(missing.text, /no app at nope\.localhost/);
    assert.match(String(missing.headers['x-request-id']), /^[0-9a-f-]{36}$/);

    const idle = await request(r.port, { headers: { Host: 'idle.localhost' } });
    assert.equal(idle.status, 503);
    assert.equal(idle.headers['x-shellwego-error'], 'no_running_instances');
  });

  test('asks for the route table on start and applies what comes back', async () => {
    const bus = new InProcessBus();
    const a = await backend('a');
    let asked = 0;
    bus.subscribe(subjects.routesRequest, async () => {
      asked++;
      await bus.publish(subjects.routes, table(7, { 'hello.localhost': { backends: [a.address] } }));
    });
    const rt = await createRouter({ bus, host: '127.0.0.1', port: 0 });
    closers.push(async () => {
      await rt.close();
      await bus.close();
    });
    await bus.drain();
    await bus.drain();
    assert.equal(asked, 1);
    assert.equal(rt.table().version, 7);
    assert.equal((await request(rt.port, { headers: { Host: 'hello.localhost' } })).status, 200);
  });

  test('re-asks for the table until one arrives, then when it is stale', async () => {
    const bus = new InProcessBus();
    let asked = 0;
    bus.subscribe(subjects.routesRequest, () => {
      asked++;
    });
    const rt = await createRouter({ bus, host: '127.0.0.1', port: 0, staleAfterMs: 100 });
    closers.push(async () => {
      await rt.close();
      await bus.close();
    });
    await until(() => asked >= 3, 3_000);
  });
});

describe('backends', () => {
  test('round-robin across three backends', async () => {
    const bs = await Promise.all(['a', 'b', 'c'].map((n) => backend(n)));
    const r = await router();
    await r.publish(table(1, { 'rr.localhost': { backends: bs.map((b) => b.address) } }));
    const counts: Record<string, number> = {};
    const agent = new http.Agent({ keepAlive: true });
    for (let i = 0; i < 30; i++) {
      const res = await request(r.port, { headers: { Host: 'rr.localhost' }, agent });
      const name = JSON.parse(res.text).name as string;
      counts[name] = (counts[name] ?? 0) + 1;
    }
    agent.destroy();
    assert.deepEqual(counts, { a: 10, b: 10, c: 10 });
  });

  test('a dead backend is skipped (request retried, still 200) and marked unhealthy', async () => {
    const a = await backend('a');
    const dead = await deadAddress();
    const registry = new Registry();
    const r = await router({ metrics: registry });
    await r.publish(table(1, { 'hello.localhost': { backends: [dead, a.address] } }));
    for (let i = 0; i < 10; i++) {
      const res = await request(r.port, { headers: { Host: 'hello.localhost' }, method: i % 2 ? 'POST' : 'GET', body: i % 2 ? 'payload' : undefined });
      assert.equal(res.status, 200);
      assert.equal(JSON.parse(res.text).name, 'a');
    }
    const text = await registry.metrics();
    assert.match(text, /shellwego_router_backend_retries_total 1\b/, 'the dead backend is tried once, then skipped while marked');
  });

  test('POST body after a refused connection reaches the next backend intact', async () => {
    const a = await backend('a', (req, res) => {
      const h = createHash('sha256');
      req.on('data', (c: Buffer) => h.update(c));
      req.on('end', () => res.end(h.digest('hex')));
      return true;
    });
    const dead = await deadAddress();
    const r = await router();
    await r.publish(table(1, { 'hello.localhost': { backends: [dead, a.address] } }));
    const body = randomBytes(200_000);
    const res = await request(r.port, { method: 'POST', headers: { Host: 'hello.localhost' }, body });
    assert.equal(res.status, 200);
    assert.equal(res.text, createHash('sha256').update(body).digest('hex'));
  });

  test('all backends down → 502 backend_unavailable', async () => {
    const r = await router();
    await r.publish(table(1, { 'hello.localhost': { backends: [await deadAddress(), await deadAddress()] } }));
    const res = await request(r.port, { headers: { Host: 'hello.localhost' } });
    assert.equal(res.status, 502);
    assert.equal(res.headers['x-shellwego-error'], 'backend_unavailable');
  });

  test('a connect that hangs times out and the next backend answers', async () => {
    const hanging = await hangingAddress();
    closers.push(async () => hanging.close());
    const a = await backend('a');
    const r = await router({ connectTimeoutMs: 200 });
    await r.publish(table(1, { 'hello.localhost': { backends: [hanging.address, a.address] } }));
    const t0 = Date.now();
    const res = await request(r.port, { headers: { Host: 'hello.localhost' } });
    assert.equal(res.status, 200);
    assert.equal(JSON.parse(res.text).name, 'a');
    assert.ok(Date.now() - t0 >= 150 && Date.now() - t0 < 2_000, `took ${Date.now() - t0} ms`);
  });

  test('a backend that dies mid-response cuts the client response (no hang, no crash)', async () => {
    const a = await backend('a', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('partial');
      setTimeout(() => res.socket?.destroy(), 50);
      return true;
    });
    const r = await router();
    await r.publish(table(1, { 'hello.localhost': { backends: [a.address] } }));
    await assert.rejects(request(r.port, { headers: { Host: 'hello.localhost' } }));
    assert.equal((await request(r.port, { headers: { Host: 'nope.localhost' } })).status, 404, 'router still serving');
  });

  test('backend errors that are not connect failures give 502 without retrying elsewhere', async () => {
    let hits = 0;
    const broken = await backend('broken', (req) => {
      hits++;
      req.socket.destroy();
      return true;
    });
    const good = await backend('good');
    const r = await router();
    await r.publish(table(1, { 'hello.localhost': { backends: [broken.address, good.address] } }));
    const res = await request(r.port, { method: 'POST', headers: { Host: 'hello.localhost' }, body: 'x' });
    assert.equal(res.status, 502);
    assert.equal(res.headers['x-shellwego-error'], 'backend_unavailable');
    assert.equal(hits, 1);
  });
});

describe('streaming and headers', () => {
  test('1 MB POST body is streamed to the backend intact (content-length and chunked)', async () => {
    const a = await backend('a', (req, res) => {
      const h = createHash('sha256');
      let n = 0;
      req.on('data', (c: Buffer) => {
        h.update(c);
        n += c.length;
      });
      req.on('end', () => res.end(JSON.stringify({ n, sha: h.digest('hex'), te: req.headers['transfer-encoding'] ?? null, cl: req.headers['content-length'] ?? null })));
      return true;
    });
    const r = await router();
    await r.publish(table(1, { 'hello.localhost': { backends: [a.address] } }));
    const body = randomBytes(1024 * 1024);
    const sha = createHash('sha256').update(body).digest('hex');
    const res = await request(r.port, { method: 'POST', headers: { Host: 'hello.localhost', 'content-type': 'application/octet-stream' }, body });
    assert.deepEqual(JSON.parse(res.text), { n: body.length, sha, te: null, cl: String(body.length) });

    const chunked = await new Promise<string>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: r.port, method: 'PUT', path: '/', agent: false, headers: { Host: 'hello.localhost' } }, (resp) => {
        let d = '';
        resp.on('data', (c) => (d += c));
        resp.on('end', () => resolve(d));
      });
      req.on('error', reject);
      for (let i = 0; i < 16; i++) req.write(body.subarray(i * 65536, (i + 1) * 65536));
      req.end();
    });
    assert.deepEqual(JSON.parse(chunked), { n: body.length, sha, te: 'chunked', cl: null });
  });

  test('responses stream: the first chunk arrives before the backend has finished', async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const a = await backend('a', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first;');
      void released.then(() => res.end('second'));
      return true;
    });
    const r = await router();
    await r.publish(table(1, { 'hello.localhost': { backends: [a.address] } }));
    const result = await new Promise<{ chunks: string[]; te: string | undefined }>((resolve, reject) => {
      const chunks: string[] = [];
      http.get({ host: '127.0.0.1', port: r.port, agent: false, headers: { Host: 'hello.localhost' } }, (res) => {
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          chunks.push(c);
          if (chunks.length === 1) release();
        });
        res.on('end', () => resolve({ chunks, te: res.headers['transfer-encoding'] }));
      }).on('error', reject);
    });
    assert.equal(result.te, 'chunked');
    assert.deepEqual(result.chunks, ['first;', 'second']);
  });

  test('X-Forwarded-* and X-Request-Id are set; hop-by-hop headers are dropped', async () => {
    const a = await backend('a', (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'keep-alive': 'timeout=99', 'x-request-id': 'from-backend', 'x-app': 'yes' });
      res.end(JSON.stringify(req.headers));
      return true;
    });
    const r = await router();
    await r.publish(table(1, { 'hello.localhost': { backends: [a.address] } }));
    const res = await request(r.port, {
      headers: {
        Host: 'hello.localhost:8000', 'X-Forwarded-For': '203.0.113.9', 'X-Forwarded-Proto': 'https', 'X-Request-Id': 'abc-123_x.y',
        Connection: 'keep-alive, X-Secret', 'X-Secret': 'hop', 'Keep-Alive': 'timeout=5', 'Proxy-Authorization': 'Basic eA==', TE: 'trailers', 'X-Kept': 'end-to-end',
      },
    });
    const seen = JSON.parse(res.text) as Record<string, string>;
    assert.equal(seen['x-forwarded-for'], '203.0.113.9, 127.0.0.1');
    assert.equal(seen['x-forwarded-proto'], 'http');
    assert.equal(seen['x-forwarded-host'], 'hello.localhost:8000');
    assert.equal(seen['x-forwarded-port'], String(r.port));
    assert.equal(seen['x-request-id'], 'abc-123_x.y');
    assert.equal(seen['x-kept'], 'end-to-end');
    for (const h of ['x-secret', 'proxy-authorization', 'te']) assert.equal(seen[h], undefined, h);
    assert.equal(res.headers['x-request-id'], 'abc-123_x.y', 'request id echoed to the client, replacing the backend one');
    assert.equal(res.headers['x-app'], 'yes');
    assert.equal(res.headers['keep-alive'] === 'timeout=99', false, 'backend keep-alive not relayed');

    for (const bad of ['has space', 'x'.repeat(129), 'semi;colon']) {
      const r2 = await request(r.port, { headers: { Host: 'hello.localhost', 'X-Request-Id': bad } });
      const id = JSON.parse(r2.text)['x-request-id'] as string;
      assert.notEqual(id, bad);
      assert.match(id, /^[0-9a-f-]{36}$/);
      assert.equal(r2.headers['x-request-id'], id);
    }
    const long = 'y'.repeat(128);
    assert.equal(JSON.parse((await request(r.port, { headers: { Host: 'hello.localhost', 'X-Request-Id': long } })).text)['x-request-id'], long);
    const plain = JSON.parse((await request(r.port, { headers: { Host: 'hello.localhost' } })).text) as Record<string, string>;
    assert.equal(plain['x-forwarded-for'], '127.0.0.1');
  });

  test('HEAD, 204 and 304 pass through without bodies', async () => {
    const a = await backend('a', (req, res) => {
      if (req.url === '/204') res.writeHead(204).end();
      else if (req.url === '/304') res.writeHead(304, { etag: '"x"' }).end();
      else res.writeHead(200, { 'content-length': '5' }).end(req.method === 'HEAD' ? undefined : 'hello');
      return true;
    });
    const r = await router();
    await r.publish(table(1, { 'hello.localhost': { backends: [a.address] } }));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const head = await request(r.port, { method: 'HEAD', headers: { Host: 'hello.localhost' }, agent });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], '5');
    assert.equal(head.body.length, 0);
    assert.equal((await request(r.port, { path: '/204', headers: { Host: 'hello.localhost' }, agent })).status, 204);
    const nm = await request(r.port, { path: '/304', headers: { Host: 'hello.localhost' }, agent });
    assert.equal(nm.status, 304);
    assert.equal(nm.headers.etag, '"x"');
    assert.equal((await request(r.port, { headers: { Host: 'hello.localhost' }, agent })).text, 'hello');
    agent.destroy();
  });
});

describe('malformed requests', () => {
  test('bad or missing Host and garbage requests get 400, the router keeps serving', async () => {
    const a = await backend('a');
    const r = await router();
    await r.publish(table(1, { 'hello.localhost': { backends: [a.address] } }));
    const badHost = await rawExchange(r.port, 'GET / HTTP/1.1\r\nHost: bad host!\r\nConnection: close\r\n\r\n');
    assert.match(badHost, /^HTTP\/1\.1 400 /);
    assert.match(badHost, /x-shellwego-error: bad_request/i);
    const noHost = await rawExchange(r.port, 'GET / HTTP/1.0\r\n\r\n');
    assert.match(noHost, /^HTTP\/1\.1 400 /);
    const noHost11 = await rawExchange(r.port, 'GET / HTTP/1.1\r\nConnection: close\r\n\r\n');
    assert.match(noHost11, /^HTTP\/1\.1 400 /);
    const twoHosts = await rawExchange(r.port, 'GET / HTTP/1.1\r\nHost: hello.localhost:x\r\nConnection: close\r\n\r\n');
    assert.match(twoHosts, /^HTTP\/1\.1 400 /);
    const garbage = await rawExchange(r.port, '\x16\x03\x01\x02\x00garbage\r\n\r\n');
    assert.match(garbage, /^HTTP\/1\.1 400 /);
    const badTarget = await rawExchange(r.port, 'GET nothttp HTTP/1.1\r\nHost: hello.localhost\r\nConnection: close\r\n\r\n');
    assert.match(badTarget, /^HTTP\/1\.1 400 /);
    const absolute = await rawExchange(r.port, 'GET http://hello.localhost/abs?q=1 HTTP/1.1\r\nHost: hello.localhost\r\nConnection: close\r\n\r\n');
    assert.match(absolute, /^HTTP\/1\.1 200 /);
    assert.match(absolute, /"url":"\/abs\?q=1"/);
    const hugeHeader = await rawExchange(r.port, `GET / HTTP/1.1\r\nHost: hello.localhost\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    assert.match(hugeHeader, /^HTTP\/1\.1 431 /);
    assert.equal((await request(r.port, { headers: { Host: 'hello.localhost' } })).status, 200);
  });

  test('a client that disconnects mid-request does not disturb the router', async () => {
    let aborted = false;
    const a = await backend('a', (req, res) => {
      req.on('close', () => {
        if (!res.writableEnded) aborted = true;
      });
      return true; // never answers
    });
    const r = await router();
    await r.publish(table(1, { 'hello.localhost': { backends: [a.address] } }));
    const s = net.connect(r.port, '127.0.0.1');
    s.write('POST / HTTP/1.1\r\nHost: hello.localhost\r\nContent-Length: 100\r\n\r\nabc');
    await new Promise((resolve) => setTimeout(resolve, 100));
    s.destroy();
    await until(() => aborted);
    assert.equal((await request(r.port, { headers: { Host: 'nope.localhost' } })).status, 404);
  });
});

describe('route table updates', () => {
  test('an in-flight response completes whole after its backend leaves the table', async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let started!: () => void;
    const inFlight = new Promise<void>((r) => (started = r));
    const slow = await backend('slow', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('a'.repeat(50_000));
      started();
      void released.then(() => res.end('b'.repeat(50_000)));
      return true;
    });
    const fresh = await backend('fresh');
    const r = await router();
    await r.publish(table(1, { 'hello.localhost': { backends: [slow.address] } }));
    const pending = request(r.port, { headers: { Host: 'hello.localhost' } });
    await inFlight;
    await r.publish(table(2, { 'hello.localhost': { backends: [fresh.address] } }));
    assert.equal(r.router.table().version, 2);
    assert.equal(JSON.parse((await request(r.port, { headers: { Host: 'hello.localhost' } })).text).name, 'fresh');
    release();
    const res = await pending;
    assert.equal(res.status, 200);
    assert.equal(res.text, 'a'.repeat(50_000) + 'b'.repeat(50_000));
  });

  test('a table with a lower version (out-of-order delivery) is ignored', async () => {
    const a = await backend('a');
    const b = await backend('b');
    const r = await router();
    await r.publish(table(5, { 'hello.localhost': { backends: [a.address] } }));
    await r.publish(table(4, { 'hello.localhost': { backends: [b.address] }, 'new.localhost': { backends: [b.address] } }));
    assert.equal(r.router.table().version, 5);
    assert.equal(JSON.parse((await request(r.port, { headers: { Host: 'hello.localhost' } })).text).name, 'a');
    assert.equal((await request(r.port, { headers: { Host: 'new.localhost' } })).status, 404);
    await r.publish({ version: 6, routes: 'nonsense' } as never);
    assert.equal(r.router.table().version, 5, 'malformed table ignored');
    await r.publish(table(6, { 'hello.localhost': { backends: [b.address] } }));
    assert.equal(JSON.parse((await request(r.port, { headers: { Host: 'hello.localhost' } })).text).name, 'b');
  });

  test('table() returns a copy', async () => {
    const r = await router();
    await r.publish(table(1, { 'hello.localhost': { backends: ['127.0.0.1:9'] } }));
    const t = r.router.table();
    t.routes['hello.localhost'].backends.length = 0;
    assert.equal(r.router.table().routes['hello.localhost'].backends.length, 1);
  });
});

describe('WebSocket', () => {
  test('echo through the router, both directions, close propagates to the backend', async () => {
    const a = await backend('a');
    let seenHeaders: http.IncomingHttpHeaders = {};
    const ws = attachWsEcho(a.server, (req) => (seenHeaders = req.headers));
    const dead = await deadAddress();
    const r = await router();
    await r.publish(table(1, { 'chat.localhost': { backends: [dead, a.address] } }));
    const client = await wsConnect(r.port, 'chat.localhost:8000', '/socket', { 'X-Request-Id': 'ws-1' });
    assert.equal(client.response.headers['x-request-id'], 'ws-1');
    assert.equal(seenHeaders['x-forwarded-for'], '127.0.0.1');
    assert.equal(seenHeaders['x-forwarded-host'], 'chat.localhost:8000');
    assert.equal(seenHeaders.upgrade, 'websocket');
    for (const text of ['hello', 'x'.repeat(10_000), 'ünïcödé']) {
      client.send(text);
      assert.equal(await client.next(), `echo:${text}`);
    }
    assert.equal(ws.sockets.size, 1);
    const { closeFrame } = await client.close();
    assert.ok(closeFrame, 'close frame relayed back');
    await until(() => ws.sockets.size === 0);
  });

  test('backend closing the connection closes the client side', async () => {
    const a = await backend('a');
    const ws = attachWsEcho(a.server);
    const r = await router();
    await r.publish(table(1, { 'chat.localhost': { backends: [a.address] } }));
    const client = await wsConnect(r.port, 'chat.localhost');
    client.send('ping');
    assert.equal(await client.next(), 'echo:ping');
    for (const s of ws.sockets) s.destroy();
    await client.closed;
  });

  test('close() ends open WebSocket connections', async () => {
    const a = await backend('a');
    const ws = attachWsEcho(a.server);
    const r = await startRouter();
    await r.publish(table(1, { 'chat.localhost': { backends: [a.address] } }));
    const client = await wsConnect(r.port, 'chat.localhost');
    client.send('hi');
    assert.equal(await client.next(), 'echo:hi');
    const t0 = Date.now();
    await r.close();
    await client.closed;
    await until(() => ws.sockets.size === 0);
    assert.ok(Date.now() - t0 < 2_000);
  });

  test('upgrade errors: unknown host 404, no backends 503, backend declining is relayed', async () => {
    const plain = await backend('plain', (req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain' }).end('upgrade refused');
      return true;
    });
    const r = await router();
    await r.publish(table(1, { 'idle.localhost': { backends: [] }, 'plain.localhost': { backends: [plain.address] }, 'dead.localhost': { backends: [await deadAddress()] } }));
    await assert.rejects(wsConnect(r.port, 'nope.localhost'), (e: { status: number; headers: http.IncomingHttpHeaders }) => e.status === 404 && e.headers['x-shellwego-error'] === 'no_such_app');
    await assert.rejects(wsConnect(r.port, 'idle.localhost'), (e: { status: number }) => e.status === 503);
    await assert.rejects(wsConnect(r.port, 'dead.localhost'), (e: { status: number }) => e.status === 502);
    await assert.rejects(wsConnect(r.port, 'plain.localhost'), (e: { status: number }) => e.status === 426);
  });
});

describe('observability', () => {
  test('access log: one JSON line per request with the agreed fields', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
        cb();
      },
    });
    const logger = pino({ level: 'info' }, sink);
    const a = await backend('a');
    const r = await router({ logger });
    await r.publish(table(1, { 'hello.localhost': { backends: [a.address] } }));
    const res = await request(r.port, { path: '/p?q=1', headers: { Host: 'Hello.localhost:8000', 'X-Request-Id': 'log-1' } });
    await request(r.port, { headers: { Host: 'nope.localhost' } });
    await until(() => lines.filter((l) => l.msg === 'request').length === 2);
    const [ok, missing] = lines.filter((l) => l.msg === 'request');
    assert.equal(ok.method, 'GET');
    assert.equal(ok.host, 'hello.localhost');
    assert.equal(ok.path, '/p?q=1');
    assert.equal(ok.status, 200);
    assert.equal(ok.bytes, res.body.length);
    assert.equal(ok.backend, a.address);
    assert.equal(ok.requestId, 'log-1');
    assert.equal(ok.appName, 'hello');
    assert.equal(typeof ok.durationMs, 'number');
    assert.equal(missing.status, 404);
    assert.equal(missing.backend, null);
  });

  test('Prometheus metrics: requests by status class and a latency histogram', async () => {
    const registry = new Registry();
    const a = await backend('a');
    const r = await router({ metrics: registry });
    await r.publish(table(1, { 'hello.localhost': { backends: [a.address] } }));
    for (let i = 0; i < 3; i++) await request(r.port, { headers: { Host: 'hello.localhost' } });
    await request(r.port, { headers: { Host: 'nope.localhost' } });
    await until(() => true);
    const text = await registry.metrics();
    assert.match(text, /shellwego_router_requests_total\{code="2xx"\} 3/);
    assert.match(text, /shellwego_router_requests_total\{code="4xx"\} 1/);
    assert.match(text, /shellwego_router_request_duration_seconds_count 4/);
    assert.match(text, /shellwego_router_request_duration_seconds_bucket\{le="\+Inf"\} 4/);
    assert.match(text, /shellwego_router_errors_total\{code="no_such_app"\} 1/);
  });
});

describe('close()', () => {
  test('lets an in-flight request finish, refuses new connections, then resolves', async () => {
    let started!: () => void;
    const inFlight = new Promise<void>((r) => (started = r));
    const slow = await backend('slow', (_req, res) => {
      started();
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('part1-');
      setTimeout(() => res.end('part2'), 300);
      return true;
    });
    const r = await startRouter();
    await r.publish(table(1, { 'hello.localhost': { backends: [slow.address] } }));
    const idleAgent = new http.Agent({ keepAlive: true });
    const pending = request(r.port, { headers: { Host: 'hello.localhost' } });
    await inFlight;
    const t0 = Date.now();
    const closing = r.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    await assert.rejects(request(r.port, { headers: { Host: 'hello.localhost' }, agent: idleAgent }), /ECONNREFUSED/);
    const res = await pending;
    assert.equal(res.status, 200);
    assert.equal(res.text, 'part1-part2');
    await closing;
    assert.ok(Date.now() - t0 < 2_000);
    idleAgent.destroy();
  });

  test('bounded: a request that never finishes is cut after drainTimeoutMs', async () => {
    const stuck = await backend('stuck', (_req, res) => {
      res.writeHead(200);
      res.write('never ends');
      return true;
    });
    const r = await startRouter({ drainTimeoutMs: 200 });
    await r.publish(table(1, { 'hello.localhost': { backends: [stuck.address] } }));
    const pending = request(r.port, { headers: { Host: 'hello.localhost' } });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const t0 = Date.now();
    await r.close();
    assert.ok(Date.now() - t0 < 1_500);
    await assert.rejects(pending);
  });

  test('idle keep-alive connections are closed', async () => {
    const a = await backend('a');
    const r = await startRouter();
    await r.publish(table(1, { 'hello.localhost': { backends: [a.address] } }));
    const s = net.connect(r.port, '127.0.0.1');
    await new Promise((resolve) => s.once('connect', resolve));
    s.write('GET / HTTP/1.1\r\nHost: hello.localhost\r\n\r\n');
    await new Promise((resolve) => s.once('data', resolve));
    const closed = new Promise((resolve) => s.once('close', resolve));
    s.on('error', () => {});
    await r.close();
    await closed;
  });
});
