/**
 * The client against a local node:http server answering with canned responses: this tests the
 * client layer (encoding, error mapping, streaming), not the platform.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { once } from 'node:events';
import { createClient, encodeQuery, nextLink } from './client.ts';
import { ShellWeGoApiError, ShellWeGoNetworkError } from './errors.ts';

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

type Handler = (req: IncomingMessage, res: ServerResponse, seen: Seen) => unknown;
let handler: Handler = (_req, res) => res.end('{}');
const seen: Seen[] = [];
const closed: string[] = [];
let baseUrl = '';
const server = createServer(async (req, res) => {
  const chunks: Buffer[] = [];
  // Stream routes are GETs: answer them without waiting for a body.
  try {
    if (req.method !== 'GET') for await (const c of req) chunks.push(c as Buffer);
  } catch {
    return; // the client gave up mid-upload (tested on purpose)
  }
  const s: Seen = { method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks) };
  seen.push(s);
  res.on('close', () => closed.push(req.url!));
  await handler(req, res, s);
});

before(async () => {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  baseUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});

function json(res: ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const last = () => seen[seen.length - 1];

test('call: path params are encoded, query serialized, token and JSON body sent', async () => {
  handler = (_req, res) => json(res, 200, [{ ts: 't', source: 'app', instanceId: null, type: 'web.1', line: 'hi' }]);
  const c = createClient({ baseUrl: `${baseUrl}/`, token: 'tok_secret' });
  const lines = await c.call('logs', { params: { app: 'my app/../x' }, query: { lines: 5 } });
  assert.equal(lines[0].line, 'hi');
  assert.equal(last().method, 'GET');
  assert.equal(last().url, '/v1/apps/my%20app%2F..%2Fx/logs?lines=5');
  assert.equal(last().headers.authorization, 'Bearer tok_secret');
  assert.match(String(last().headers['user-agent']), /^shellwego-sdk\//);
  assert.equal(last().headers['content-type'], undefined, 'no body, no content type');

  handler = (_req, res) => json(res, 201, { id: 'app_1', name: 'hello' });
  const app = await c.call('createApp', { body: { name: 'hello', plan: 'free' } });
  assert.equal(app.name, 'hello');
  assert.equal(last().method, 'POST');
  assert.equal(last().headers['content-type'], 'application/json');
  assert.deepEqual(JSON.parse(last().body.toString()), { name: 'hello', plan: 'free' });

  // A route whose body fields are all optional still gets a JSON body.
  handler = (_req, res) => json(res, 200, { restarted: 2 });
  assert.deepEqual(await c.call('restart', { params: { app: 'hello' } }), { restarted: 2 });
  assert.deepEqual(JSON.parse(last().body.toString()), {});

  handler = (_req, res) => json(res, 200, { deleted: true });
  await c.call('deleteApp', { params: { app: 'hello' } });
  assert.equal(last().method, 'DELETE');
  assert.equal(last().body.length, 0);
  assert.equal(last().headers['content-type'], undefined);
});

test('call: no token means no Authorization header; a base URL path prefix is kept', async () => {
  handler = (_req, res) => json(res, 200, { ok: true, version: '1' });
  const c = createClient({ baseUrl: `${baseUrl}/prefix` });
  assert.deepEqual(await c.call('health'), { ok: true, version: '1' });
  assert.equal(last().url, '/prefix/v1/health');
  assert.equal(last().headers.authorization, undefined);
});

test('call: missing path parameters fail before any request', async () => {
  const c = createClient({ baseUrl });
  const n = seen.length;
  await assert.rejects(c.call('getApp', { params: {} as { app: string } }), /missing path parameter 'app'/);
  assert.equal(seen.length, n);
});

test('errors: the platform error body becomes ShellWeGoApiError', async () => {
  handler = (_req, res) => json(res, 404, { error: { code: 'not_found', message: "app 'nope' not found", details: { x: 1 } } });
  const c = createClient({ baseUrl, token: 't' });
  const err = await c.call('getApp', { params: { app: 'nope' } }).catch((e: unknown) => e);
  assert.ok(err instanceof ShellWeGoApiError);
  assert.equal(err.status, 404);
  assert.equal(err.code, 'not_found');
  assert.equal(err.message, "app 'nope' not found");
  assert.deepEqual(err.details, { x: 1 });
  assert.equal(err.route, 'getApp');
});

test('errors: a non-JSON error (a proxy in between) still gives status and a code', async () => {
  handler = (_req, res) => {
    res.writeHead(502, { 'content-type': 'text/html' });
    res.end('<html><body>Bad   Gateway</body></html>');
  };
  const err = await createClient({ baseUrl }).call('health').catch((e: unknown) => e);
  assert.ok(err instanceof ShellWeGoApiError);
  assert.equal(err.status, 502);
  assert.equal(err.code, 'http_502');
  assert.match(err.message, /502 Bad Gateway: <html><body>Bad Gateway/);
});

test('errors: a 2xx that is not JSON is an invalid_response', async () => {
  handler = (_req, res) => res.end('not json');
  const err = await createClient({ baseUrl }).call('health').catch((e: unknown) => e);
  assert.ok(err instanceof ShellWeGoApiError);
  assert.equal(err.code, 'invalid_response');
});

test('errors: nothing listening gives a clear network error', async () => {
  const probe = createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as { port: number }).port;
  probe.close();
  await once(probe, 'close');
  const url = `http://127.0.0.1:${port}`;
  const err = await createClient({ baseUrl: url }).call('health').catch((e: unknown) => e);
  assert.ok(err instanceof ShellWeGoNetworkError);
  assert.equal(err.code, 'unreachable');
  assert.equal(err.errno, 'ECONNREFUSED');
  assert.equal(err.message, `cannot reach the API at ${url}: ECONNREFUSED — is the platform running? (\`npm start\`)`);
});

test('errors: a custom fetch is used, and a non-http base URL is refused', async () => {
  let called = '';
  const fake = (async (url: string) => {
    called = url;
    return new Response(JSON.stringify({ ok: true, version: 'x' }), { status: 200 });
  }) as typeof fetch;
  assert.deepEqual(await createClient({ baseUrl: 'http://api.test', fetch: fake }).call('health'), { ok: true, version: 'x' });
  assert.equal(called, 'http://api.test/v1/health');
  assert.throws(() => createClient({ baseUrl: 'api.test:8080' }), /must start with http/);
});

test('encodeQuery leaves out undefined and repeats arrays', () => {
  assert.equal(encodeQuery({ a: 1, b: undefined, c: ['x', 'y z'], d: null }), 'a=1&c=x&c=y+z');
  assert.equal(encodeQuery(undefined), '');
});

// ---------- streams ----------

const SSE_HEAD = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('stream: events split at awkward places across writes arrive whole; the iterator ends when the server closes', async () => {
  const payload = [
    ': connected\n\n',
    'event: line\ndata: {"line":"compiling ✓"}\n\n',
    ': ping\n\n',
    'event: line\ndata: {"line":"two\\nlines"}\r\n\r\n',
    'event: end\ndata: {"state":"succeeded",\ndata: "releaseVersion":3}\n\n',
  ].join('');
  const bytes = Buffer.from(payload);
  // Cut inside the field name, inside the multi-byte ✓, between CR and LF, right before the blank line.
  const cuts = [3, 20, payload.indexOf('✓') + 1, payload.indexOf('\r\n') + 1, bytes.length - 1];
  handler = async (_req, res) => {
    res.writeHead(200, SSE_HEAD);
    let from = 0;
    for (const cut of [...cuts, bytes.length]) {
      res.write(bytes.subarray(from, cut));
      from = cut;
      await sleep(5);
    }
    res.end();
  };
  const c = createClient({ baseUrl, token: 't' });
  const got = [];
  for await (const m of c.stream('buildLog', { params: { app: 'a', build: 'b' } })) got.push(m);
  assert.deepEqual(got, [
    { event: 'line', data: { line: 'compiling ✓' } },
    { event: 'line', data: { line: 'two\nlines' } },
    { event: 'end', data: { state: 'succeeded', releaseVersion: 3 } },
  ]);
  assert.equal(last().url, '/v1/apps/a/builds/b/log');
  assert.equal(last().headers.accept, 'text/event-stream');
  assert.equal(last().headers.authorization, 'Bearer t');
});

test('stream: query is sent; an HTTP error is thrown from the first next()', async () => {
  handler = (_req, res) => json(res, 403, { error: { code: 'forbidden', message: 'the token lacks apps:read', details: null } });
  const c = createClient({ baseUrl, token: 't' });
  const it = c.stream('followLogs', { params: { app: 'a' }, query: { lines: 0 } });
  const n = seen.length;
  await assert.rejects(
    (async () => {
      for await (const _ of it) assert.fail('no events expected');
    })(),
    (e: unknown) => e instanceof ShellWeGoApiError && e.status === 403 && e.code === 'forbidden',
  );
  assert.equal(seen.length, n + 1);
  assert.equal(last().url, '/v1/apps/a/logs/stream?lines=0');
});

test('stream: a response that is not an event stream is refused', async () => {
  handler = (_req, res) => json(res, 200, []);
  const c = createClient({ baseUrl, token: 't' });
  await assert.rejects(
    (async () => {
      for await (const _ of c.stream('followEvents')) assert.fail('no events expected');
    })(),
    /instead of an event stream/,
  );
});

test('stream: breaking out of the loop closes the connection; abort ends iteration quietly', async () => {
  handler = async (req, res) => {
    res.writeHead(200, SSE_HEAD);
    for (let i = 0; !res.destroyed && i < 500; i++) {
      res.write(`event: event\ndata: {"n":${i}}\n\n`);
      await sleep(10);
    }
    res.end();
  };
  const c = createClient({ baseUrl, token: 't' });
  for await (const m of c.stream('followAppEvents', { params: { app: 'brk' } })) {
    assert.deepEqual(m, { event: 'event', data: { n: 0 } });
    break;
  }
  for (let i = 0; i < 100 && !closed.includes('/v1/apps/brk/events/stream'); i++) await sleep(10);
  assert.ok(closed.includes('/v1/apps/brk/events/stream'), 'the server saw the connection close');

  const ac = new AbortController();
  const got: unknown[] = [];
  for await (const m of c.stream('followAppEvents', { params: { app: 'abort' }, signal: ac.signal })) {
    got.push(m.data);
    if (got.length === 3) ac.abort();
  }
  assert.deepEqual(got, [{ n: 0 }, { n: 1 }, { n: 2 }]);
});

// ---------- uploads ----------

test('upload: a Buffer is sent with Content-Length, the route content type, and progress', async () => {
  handler = (_req, res, s) => json(res, 202, { id: 'bld_1', state: 'pending', sha: createHash('sha256').update(s.body).digest('hex') });
  const data = Buffer.alloc(300 * 1024 + 17, 7);
  const progress: number[] = [];
  const c = createClient({ baseUrl, token: 't' });
  const build = await c.upload('createBuild', { params: { app: 'hello' } }, data, { onProgress: (n) => progress.push(n) });
  assert.equal(build.id, 'bld_1');
  assert.equal((build as unknown as { sha: string }).sha, createHash('sha256').update(data).digest('hex'));
  assert.equal(last().method, 'POST');
  assert.equal(last().url, '/v1/apps/hello/builds');
  assert.equal(last().headers['content-type'], 'application/gzip');
  assert.equal(last().headers['content-length'], String(data.length));
  assert.ok(progress.length >= 5, `progress reported in steps: ${progress.join(',')}`);
  assert.deepEqual(progress, [...progress].sort((a, b) => a - b), 'progress only grows');
  assert.equal(progress[progress.length - 1], data.length);
});

test('upload: a Readable streams (chunked without a size, with Content-Length when given)', async () => {
  handler = (_req, res, s) => json(res, 202, { bytes: s.body.length });
  const c = createClient({ baseUrl, token: 't' });
  const parts = () => Readable.from([Buffer.from('a'.repeat(1000)), Buffer.from('b'.repeat(2000)), 'c'.repeat(3)]);

  const r1 = await c.upload('createBuild', { params: { app: 'x' } }, parts());
  assert.deepEqual(r1, { bytes: 3003 });
  assert.equal(last().headers['transfer-encoding'], 'chunked');

  const progress: number[] = [];
  const r2 = await c.upload('createBuild', { params: { app: 'x' } }, parts(), { size: 3003, contentType: 'application/x-gzip', onProgress: (n) => progress.push(n) });
  assert.deepEqual(r2, { bytes: 3003 });
  assert.equal(last().headers['content-length'], '3003');
  assert.equal(last().headers['content-type'], 'application/x-gzip');
  assert.deepEqual(progress, [1000, 3000, 3003]);
});

test('upload: a stream shorter than its declared size is refused rather than sent truncated', async () => {
  handler = (_req, res, s) => json(res, 202, { bytes: s.body.length });
  const c = createClient({ baseUrl, token: 't' });
  await assert.rejects(
    c.upload('createBuild', { params: { app: 'x' } }, Readable.from([Buffer.alloc(10)]), { size: 20 }),
    /ended after 10 of the 20 bytes declared/,
  );
});

test('upload: the API refusing the upload surfaces as ShellWeGoApiError', async () => {
  handler = (_req, res) => json(res, 413, { error: { code: 'payload_too_large', message: 'upload is 9 bytes; the limit is 1', details: null } });
  const c = createClient({ baseUrl, token: 't' });
  await assert.rejects(c.upload('createBuild', { params: { app: 'x' } }, Buffer.from('123456789')), (e: unknown) => e instanceof ShellWeGoApiError && e.code === 'payload_too_large');
});

// ---------- types (checked by tsc, not at run time) ----------

test('request types come from the route table', () => {
  const c = createClient({ baseUrl: 'http://types.invalid' });
  const never = () => {
    void c.call('me');
    void c.call('me', {});
    void c.call('rollback', { params: { app: 'a' } });
    void c.call('scale', { params: { app: 'a' }, body: { quantities: { web: 2 } } });
    // @ts-expect-error createApp needs a body
    void c.call('createApp');
    // @ts-expect-error getApp needs params
    void c.call('getApp', {});
    // @ts-expect-error stream routes are not call()able
    void c.call('buildLog', { params: { app: 'a', build: 'b' } });
    // @ts-expect-error upload routes are not call()able
    void c.call('createBuild', { params: { app: 'a' } });
    // @ts-expect-error wrong body field type
    void c.call('scale', { params: { app: 'a' }, body: { quantities: { web: 'two' } } });
    const typed: Promise<{ restarted: number }> = c.call('restart', { params: { app: 'a' } });
    void typed;
  };
  assert.equal(typeof never, 'function');
});

test('list: follows rel="next" links (relative, under a path prefix) and joins the pages', async () => {
  handler = (req, res) => {
    const u = new URL(req.url!, 'http://x');
    const after = u.searchParams.get('after');
    const page = after === null ? ['a', 'b'] : after === 'b' ? ['c', 'd'] : ['e'];
    if (page[page.length - 1] !== 'e') res.setHeader('link', `<apps?limit=2&after=${page[page.length - 1]}>; rel="next"`);
    json(res, 200, page.map((name) => ({ name })));
  };
  const c = createClient({ baseUrl: `${baseUrl}/prefix`, token: 't' });
  const items = await c.list('listApps', { query: { limit: 2 } });
  assert.deepEqual(items.map((a) => a.name), ['a', 'b', 'c', 'd', 'e']);
  assert.deepEqual(seen.slice(-3).map((s) => s.url), ['/prefix/v1/apps?limit=2', '/prefix/v1/apps?limit=2&after=b', '/prefix/v1/apps?limit=2&after=d']);
  assert.ok(seen.slice(-3).every((s) => s.headers.authorization === 'Bearer t'));
});

test('list: a next link that points back at a page already read is an error, not a loop', async () => {
  handler = (_req, res) => {
    res.setHeader('link', '<apps?limit=2>; rel="next"');
    json(res, 200, [{ name: 'a' }]);
  };
  const c = createClient({ baseUrl, token: 't' });
  await assert.rejects(c.list('listApps', { query: { limit: 2 } }), (err: unknown) => err instanceof ShellWeGoApiError && /repeats/.test(err.message));
  await assert.rejects(c.list('getApp' as never, { params: { app: 'x' } } as never), TypeError);
});

test('nextLink reads rel="next" among other links and parameters', () => {
  assert.equal(nextLink(null), null);
  assert.equal(nextLink('<a?x=1>; rel="next"'), 'a?x=1');
  assert.equal(nextLink('<p1>; rel="prev", <p3>; rel="next"'), 'p3');
  assert.equal(nextLink('<p3>; title="x"; rel="last next"'), 'p3');
  assert.equal(nextLink('<p1>; rel="prev"'), null);
  assert.equal(nextLink('<p1>; rel="nextish"'), null);
});
