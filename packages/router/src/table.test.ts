import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HostCache, RouteTable, normalizeHost, parseAddress, pickBackend } from './table.ts';

test('normalizeHost lowercases, strips the port and a trailing dot, refuses junk', () => {
  assert.equal(normalizeHost('Hello.LocalHost:8000'), 'hello.localhost');
  assert.equal(normalizeHost('hello.localhost'), 'hello.localhost');
  assert.equal(normalizeHost('hello.localhost.'), 'hello.localhost');
  assert.equal(normalizeHost('hello.localhost:'), 'hello.localhost');
  assert.equal(normalizeHost('[::1]:8080'), '[::1]');
  assert.equal(normalizeHost('127.0.0.1:80'), '127.0.0.1');
  for (const bad of [undefined, '', 'a b', 'host:port', 'x:123456', '[::1', '[zz]', 'a/b', 'a..b', '<script>', 'é.com', ':80']) {
    assert.equal(normalizeHost(bad), null, String(bad));
  }
});

test('HostCache memoises and stays bounded', () => {
  const cache = new HostCache();
  assert.equal(cache.get('A.example:1'), 'a.example');
  assert.equal(cache.get('A.example:1'), 'a.example');
  assert.equal(cache.get(undefined), null);
  for (let i = 0; i < 3000; i++) cache.get(`h${i}.example`);
  assert.equal(cache.get('bad host'), null);
});

test('parseAddress accepts ip:port, name:port and [v6]:port only', () => {
  assert.deepEqual(parseAddress('10.0.0.2:5000'), { host: '10.0.0.2', port: 5000 });
  assert.deepEqual(parseAddress('localhost:80'), { host: 'localhost', port: 80 });
  assert.deepEqual(parseAddress('[fd00::1]:8080'), { host: 'fd00::1', port: 8080 });
  for (const bad of ['10.0.0.2', '10.0.0.2:0', '10.0.0.2:70000', ':80', 'fd00::1:80', '[fd00::1]80', 'a:b']) assert.equal(parseAddress(bad), null, bad);
});

const msg = (version: number, backends: string[], host = 'hello.example') => ({
  version,
  routes: { [host]: { appId: 'app_1', appName: 'hello', backends: backends.map((address, i) => ({ instanceId: `i${i}`, address })) } },
});

test('apply: newer versions replace, older and equal are ignored, junk is refused', () => {
  const t = new RouteTable(60_000);
  assert.equal(t.version, null);
  assert.equal(t.apply(msg(5, ['127.0.0.1:1000'])).result, 'applied');
  assert.equal(t.apply(msg(3, ['127.0.0.1:2000'])).result, 'stale');
  assert.equal(t.apply(msg(5, ['127.0.0.1:2000'])).result, 'stale');
  assert.equal(t.lookup('hello.example')!.backends[0].address, '127.0.0.1:1000');
  assert.equal(t.apply(msg(6, ['127.0.0.1:2000'])).result, 'applied');
  assert.equal(t.lookup('hello.example')!.backends[0].address, '127.0.0.1:2000');
  for (const junk of [null, 'x', { version: 'a', routes: {} }, { version: 9 }, { version: 9, routes: [] }]) {
    assert.equal(t.apply(junk).result, 'invalid');
  }
  assert.equal(t.version, 6);
});

test('apply: a lower version is accepted once the held table is stale (control plane restarted)', () => {
  const t = new RouteTable(1_000);
  t.apply(msg(40, ['127.0.0.1:1000']), 10_000);
  assert.equal(t.apply(msg(1, ['127.0.0.1:2000']), 10_500).result, 'stale');
  assert.equal(t.apply(msg(1, ['127.0.0.1:2000']), 11_001).result, 'applied');
  assert.equal(t.version, 1);
});

test('apply: a copy of the held version keeps the table fresh (no re-request, no lower version taken)', () => {
  const t = new RouteTable(1_000);
  t.apply(msg(40, ['127.0.0.1:1000']), 10_000);
  assert.equal(t.apply(msg(40, ['127.0.0.1:1000']), 10_900).result, 'stale');
  assert.equal(t.age(11_500), 600);
  assert.equal(t.apply(msg(1, ['127.0.0.1:2000']), 11_500).result, 'stale', 'the control plane that sent 40 is alive');
  assert.equal(t.version, 40);
});

test('apply: bad backends and hosts are dropped, hosts normalised, health survives a new version', () => {
  const t = new RouteTable(60_000);
  t.apply({
    version: 1,
    routes: {
      'Hello.Example': { appId: 'a', appName: 'hello', backends: [{ instanceId: 'i0', address: '127.0.0.1:1000' }, { instanceId: 'i2', address: 'nope' }, 7] },
      'bad host': { appId: 'b', appName: 'bad', backends: [] },
      'broken.example': { appId: 3 },
    },
  });
  const route = t.lookup('hello.example')!;
  assert.equal(route.backends.length, 1);
  assert.equal(t.lookup('broken.example'), undefined);
  route.backends[0].unhealthyUntil = 123;
  t.apply(msg(2, ['127.0.0.1:1000', '127.0.0.1:1001']));
  const again = t.lookup('hello.example')!;
  assert.equal(again.backends[0].unhealthyUntil, 123, 'same backend object carried over');
  assert.equal(again.backends[1].unhealthyUntil, 0);
  assert.equal(t.snapshot().version, 2);
});

test('pickBackend: round-robin, skips unhealthy and tried, falls back when all are marked', () => {
  const t = new RouteTable(60_000);
  t.apply(msg(1, ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3']));
  const r = t.lookup('hello.example')!;
  const seq = Array.from({ length: 6 }, () => pickBackend(r, 0, null)!.port);
  assert.deepEqual(seq, [1, 2, 3, 1, 2, 3]);
  r.backends[1].unhealthyUntil = 100;
  const seq2 = Array.from({ length: 4 }, () => pickBackend(r, 50, null)!.port);
  assert.deepEqual(seq2, [1, 3, 1, 3]);
  assert.deepEqual([pickBackend(r, 150, null)!.port, pickBackend(r, 150, null)!.port], [1, 2], 'mark expired');
  assert.equal(pickBackend(r, 50, [r.backends[0], r.backends[2]])!.port, 2, 'all others tried: the marked one is still tried');
  assert.equal(pickBackend(r, 50, r.backends.slice()), undefined);
  for (const b of r.backends) b.unhealthyUntil = 1_000;
  assert.ok(pickBackend(r, 50, null));
});

test('pickBackend: weights split traffic smoothly in proportion; weight 0 only as a last resort', () => {
  const t = new RouteTable(60_000);
  t.apply({
    version: 1,
    routes: {
      'w.example': {
        appId: 'a', appName: 'w',
        backends: [{ instanceId: 'new', address: '127.0.0.1:1', weight: 10 * 3 }, ...[2, 3, 4].map((p) => ({ instanceId: `old${p}`, address: `127.0.0.1:${p}`, weight: 90 }))],
      },
    },
  });
  const r = t.lookup('w.example')!;
  const counts = new Map<number, number>();
  for (let i = 0; i < 1000; i++) {
    const p = pickBackend(r, 0, null)!.port;
    counts.set(p, (counts.get(p) ?? 0) + 1);
  }
  // 30 : 90 : 90 : 90 → the new backend gets exactly 10% of picks.
  assert.equal(counts.get(1), 100);
  assert.equal((counts.get(2) ?? 0) + (counts.get(3) ?? 0) + (counts.get(4) ?? 0), 900);
  // Never two picks of the low-weight backend in a row (smooth, not bursty).
  const seq = Array.from({ length: 40 }, () => pickBackend(r, 0, null)!.port);
  assert.ok(!seq.some((p, i) => p === 1 && seq[i + 1] === 1));

  t.apply({ version: 2, routes: { 'w.example': { appId: 'a', appName: 'w', backends: [{ instanceId: 'z', address: '127.0.0.1:1', weight: 0 }, { instanceId: 'y', address: '127.0.0.1:2', weight: 1 }] } } });
  const r2 = t.lookup('w.example')!;
  assert.deepEqual(Array.from({ length: 3 }, () => pickBackend(r2, 0, null)!.port), [2, 2, 2]);
  assert.equal(pickBackend(r2, 0, [r2.backends[1]])!.port, 1, 'the zero-weight backend still beats refusing');
  // Junk weights are ignored (plain round-robin), not trusted.
  t.apply({ version: 3, routes: { 'w.example': { appId: 'a', appName: 'w', backends: [{ instanceId: 'z', address: '127.0.0.1:1', weight: -5 }, { instanceId: 'y', address: '127.0.0.1:2', weight: 'x' }] } } });
  assert.equal(t.lookup('w.example')!.weights, null);
});
