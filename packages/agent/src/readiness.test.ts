import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { canConnect, httpCheck, probe, Thresholds } from './readiness.ts';

async function server(handler: http.RequestListener): Promise<{ port: number; close: () => Promise<void> }> {
  const s = http.createServer(handler);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { port: (s.address() as AddressInfo).port, close: () => new Promise((r) => { s.closeAllConnections(); s.close(() => r()); }) };
}

test('http check: 2xx and 3xx pass; 5xx, 404, refused and a hung server fail with the reason', async () => {
  const hung: http.ServerResponse[] = [];
  const s = await server((req, res) => {
    if (req.url === '/ok') res.end('ok');
    else if (req.url === '/moved') res.writeHead(302, { location: '/ok' }).end();
    else if (req.url === '/boom') res.writeHead(503).end('down');
    else if (req.url === '/hang') hung.push(res);
    else res.writeHead(404).end();
  });
  try {
    assert.deepEqual(await httpCheck('127.0.0.1', s.port, '/ok', 1000), { ok: true });
    assert.deepEqual(await httpCheck('127.0.0.1', s.port, '/moved', 1000), { ok: true });
    assert.deepEqual(await httpCheck('127.0.0.1', s.port, '/boom', 1000), { ok: false, why: 'GET /boom answered 503' });
    assert.deepEqual(await httpCheck('127.0.0.1', s.port, '/nope', 1000), { ok: false, why: 'GET /nope answered 404' });
    assert.deepEqual(await httpCheck('127.0.0.1', s.port, '/hang', 200), { ok: false, why: 'GET /hang timed out after 200 ms' });
  } finally {
    await s.close();
  }
  const refused = await httpCheck('127.0.0.1', s.port, '/ok', 1000);
  assert.equal(refused.ok, false);
  assert.match((refused as { why: string }).why, /ECONNREFUSED/);
});

test('default probe is a TCP connect; an HTTP readiness uses its path', async () => {
  const s = await server((req, res) => res.writeHead(req.url === '/health' ? 200 : 500).end());
  try {
    assert.equal(await canConnect('127.0.0.1', s.port), true);
    assert.deepEqual(await probe(undefined, '127.0.0.1', s.port), { ok: true });
    const readiness = { type: 'http' as const, path: '/health', intervalMs: 100, timeoutMs: 500, healthyThreshold: 1, unhealthyThreshold: 2 };
    assert.deepEqual(await probe(readiness, '127.0.0.1', s.port), { ok: true });
    assert.equal((await probe({ ...readiness, path: '/' }, '127.0.0.1', s.port)).ok, false);
  } finally {
    await s.close();
  }
});

test('thresholds: verdicts change only after N results in a row', () => {
  const t = new Thresholds(2, 3);
  assert.equal(t.record(true), null);
  assert.equal(t.record(true), 'healthy');
  assert.equal(t.record(true), null, 'already healthy: no new verdict');
  assert.equal(t.record(false), null);
  assert.equal(t.record(false), null);
  assert.equal(t.record(true), null, 'a pass resets the failure count');
  assert.equal(t.record(false), null);
  assert.equal(t.record(false), null);
  assert.equal(t.record(false), 'unhealthy');
  assert.equal(t.record(true), null);
  assert.equal(t.record(true), 'healthy');
});
