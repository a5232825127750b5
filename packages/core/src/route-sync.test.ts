import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AssignmentsAssembler, CertificatesAssembler, RouteTableAssembler, routeTableDelta, splitAssignments, splitCertificates, splitRouteTable, splitStatusReport } from './route-sync.ts';
import { isStatusReport } from './messages.ts';
import type { AssignmentsMessage, CertificatesMessage, InstanceSpec, InstanceStatusMessage, InstanceStatusReport, RouteTableMessage } from './messages.ts';

function bigTable(version: number, hosts: number, tag = 'a'): RouteTableMessage {
  const routes: RouteTableMessage['routes'] = {};
  for (let i = 0; i < hosts; i++) {
    routes[`app-${i}.example.test`] = { appId: `app_${i}`, appName: `app-${i}`, backends: [0, 1, 2].map((n) => ({ instanceId: `ins_${tag}_${i}_${n}`, address: `10.0.${n}.${i % 250}:8080`, nodeId: `nod_${n}` })) };
  }
  return { version, routes, nodes: { nod_1: '10.1.0.1:7000' }, clusterToken: 'token-0123456789abcdef' };
}

test('a table that fits goes whole; a large one in chunks, each under the limit, that add up to it', () => {
  const small = bigTable(1, 3);
  assert.deepEqual(splitRouteTable(small), [small]);
  const big = bigTable(2, 5_000);
  assert.ok(Buffer.byteLength(JSON.stringify(big)) > 1024 * 1024);
  const chunks = splitRouteTable(big, 64 * 1024);
  assert.ok(chunks.length > 16);
  for (const [i, c] of chunks.entries()) {
    assert.ok(Buffer.byteLength(JSON.stringify(c)) <= 64 * 1024);
    assert.deepEqual(c.chunk, { index: i, count: chunks.length });
    assert.equal(c.version, 2);
    assert.deepEqual(c.nodes, big.nodes);
    assert.equal(c.clusterToken, big.clusterToken);
  }
  assert.equal(chunks.reduce((n, c) => n + Object.keys(c.routes).length, 0), 5_000);
});

test('chunks assemble in any order into the whole table, and only when all arrived', () => {
  const big = bigTable(7, 2_000);
  const chunks = splitRouteTable(big, 32 * 1024);
  const a = new RouteTableAssembler();
  const order = chunks.map((_, i) => i).reverse();
  [order[0], order[3]] = [order[3], order[0]];
  let out: ReturnType<RouteTableAssembler['accept']> = 'ignored';
  for (const [n, i] of order.entries()) {
    out = a.accept(chunks[i], null);
    if (n < order.length - 1) assert.equal(out, 'pending');
  }
  assert.ok(typeof out === 'object');
  assert.deepEqual(out.table, big);
});

test('a missing chunk means no table; a newer version abandons the older incomplete one', () => {
  const older = splitRouteTable(bigTable(10, 1_000, 'old'), 32 * 1024);
  const newer = splitRouteTable(bigTable(11, 1_000, 'new'), 32 * 1024);
  const a = new RouteTableAssembler();
  for (const c of older.slice(1)) assert.equal(a.accept(c, null), 'pending', 'chunk 0 never came: nothing to swap in');
  assert.equal(a.accept(newer[0], null), 'pending');
  assert.equal(a.accept(older[0], null), 'ignored', 'the older version was abandoned');
  let out: ReturnType<RouteTableAssembler['accept']> = 'ignored';
  for (const c of newer.slice(1)) out = a.accept(c, null);
  assert.ok(typeof out === 'object');
  assert.equal(out.table.version, 11);
  assert.equal(Object.keys(out.table.routes).length, 1_000);
  assert.equal(out.table.routes['app-5.example.test'].backends[0].instanceId, 'ins_new_5_0');
});

test('a delta carries changed and removed hosts and applies on its base only; a gap asks for the full table', () => {
  const v1 = bigTable(1, 100);
  const routes = { ...v1.routes };
  delete routes['app-3.example.test'];
  routes['app-4.example.test'] = { ...routes['app-4.example.test'], backends: [] };
  routes['new.example.test'] = { appId: 'app_new', appName: 'new', backends: [{ instanceId: 'ins_n', address: '10.9.9.9:8080' }] };
  const v2: RouteTableMessage = { ...v1, version: 2, routes, nodes: { nod_1: '10.1.0.2:7000' } };
  const delta = routeTableDelta(v1, v2)!;
  assert.deepEqual(delta.delta, { base: 1, removed: ['app-3.example.test'] });
  assert.deepEqual(Object.keys(delta.routes).sort(), ['app-4.example.test', 'new.example.test']);
  const a = new RouteTableAssembler();
  const out = a.accept(JSON.parse(JSON.stringify(delta)), v1);
  assert.ok(typeof out === 'object');
  assert.deepEqual(out.table, v2);
  // The router holds version 1 but the delta is based on 2 (it missed one): no table, ask for the full one.
  const v3 = { ...v2, version: 3, routes: { ...v2.routes, 'three.example.test': v2.routes['new.example.test'] } };
  assert.equal(a.accept(routeTableDelta(v2, v3), v1), 'gap');
  assert.equal(a.accept(routeTableDelta(v2, v3), null), 'gap', 'no table yet: ask for the full one');
  assert.equal(a.accept(routeTableDelta(v1, v2), v3), 'ignored', 'an older delta than the table held changes nothing');
  // A delta too large for one message is refused: the full table goes instead.
  assert.equal(routeTableDelta({ version: 0, routes: {} }, bigTable(1, 5_000), 64 * 1024), null);
});

test('certificates: a few go whole; many go in chunks, applied only all together, the newest version winning', () => {
  const certs = (version: number, n: number, tag: string): CertificatesMessage => ({
    version, certificates: Array.from({ length: n }, (_, i) => ({ hostnames: [`d${i}.example.test`], certPem: `${tag}-cert-${i}-`.padEnd(3000, 'c'), keyPem: 'k'.repeat(1700), notAfter: '2030-01-01T00:00:00Z' })),
  });
  const few = certs(1, 2, 'a');
  assert.deepEqual(splitCertificates(few), [few]);
  const older = splitCertificates(certs(2, 400, 'old'));
  const newer = splitCertificates(certs(3, 400, 'new'));
  assert.ok(older.length >= 8);
  for (const c of newer) assert.ok(Buffer.byteLength(JSON.stringify(c)) <= 256 * 1024);
  const a = new CertificatesAssembler();
  assert.deepEqual(a.accept(few), { message: few });
  for (const c of older.slice(0, -1)) assert.equal(a.accept(c), 'pending', 'the last chunk of version 2 never comes');
  for (const c of newer.slice(1).reverse()) assert.equal(a.accept(c), 'pending');
  assert.equal(a.accept(older.at(-1)), 'ignored', 'version 2 was abandoned for 3');
  const out = a.accept(newer[0]);
  assert.ok(typeof out === 'object');
  assert.equal(out.message.version, 3);
  assert.equal(out.message.certificates.length, 400);
  assert.ok(out.message.certificates.every((c, i) => c.certPem.startsWith(`new-cert-${i}-`)));
});

function assignments(generation: number, count: number): AssignmentsMessage {
  const instances: InstanceSpec[] = [];
  for (let i = 0; i < count; i++) {
    instances.push({
      instanceId: `ins_${generation}_${i}`, appId: `app_${i}`, appName: `app-${i}`, organizationId: 'org_1', releaseId: `rel_${i}`, releaseVersion: 1,
      processType: 'web', index: 1, command: 'node server.js', env: { PORT: '8080', SECRETISH: 'x'.repeat(40) }, artifactDigest: 'a'.repeat(64),
      limits: { memoryMb: 256, cpus: 0.5, pids: 128 }, port: 8080, restartGeneration: 0,
    } as InstanceSpec);
  }
  return { nodeId: 'nod_1', generation, instances };
}

test('assignments: a set that fits goes whole; thousands go in chunks under the limit, acted on only when all arrived', () => {
  const small = assignments(1, 3);
  assert.deepEqual(splitAssignments(small), [small]);
  const big = assignments(2, 5_000);
  assert.ok(Buffer.byteLength(JSON.stringify(big)) > 1024 * 1024, 'over NATS max_payload as one message');
  const chunks = splitAssignments(big);
  assert.ok(chunks.length > 4);
  for (const c of chunks) {
    assert.ok(Buffer.byteLength(JSON.stringify(c)) <= 256 * 1024);
    assert.equal(c.generation, 2);
    assert.equal(c.nodeId, 'nod_1');
  }

  const a = new AssignmentsAssembler();
  assert.deepEqual(a.accept(small), { message: small }, 'a whole set passes through');
  // Out of order, a chunk repeated: nothing until the last one, then the whole set in order.
  const order = chunks.map((_, i) => i).reverse();
  for (const i of order.slice(0, -1)) assert.equal(a.accept(chunks[i]), 'pending');
  assert.equal(a.accept(chunks[order[1]!]), 'pending');
  const done = a.accept(chunks[order[order.length - 1]!]);
  assert.ok(typeof done === 'object');
  assert.deepEqual(done.message, big);

  // A newer generation abandons an incomplete older one; the older one's late chunks are ignored.
  const next = splitAssignments(assignments(3, 5_000));
  assert.equal(a.accept(chunks[0]), 'pending');
  for (const c of next.slice(0, -1)) assert.equal(a.accept(c), 'pending');
  assert.equal(a.accept(chunks[1]), 'ignored');
  const third = a.accept(next[next.length - 1]);
  assert.ok(typeof third === 'object' && third.message.instances.length === 5_000 && third.message.generation === 3);
  assert.equal(a.accept({ nodeId: 'nod_1', generation: 4, instances: 'nope', chunk: { index: 0, count: 2 } }), 'ignored');
});

test('status reports: one message per node while it fits; thousands split into reports of their own, none lost or repeated', () => {
  const status = (i: number): InstanceStatusMessage => ({
    nodeId: 'nod_1', instanceId: `ins_${String(i).padStart(24, '0')}`, state: 'running', exitCode: null, signal: null, oomKilled: false, restarts: 0,
    address: `10.89.0.${i % 250}:5000`, startedAt: '2026-12-05T06:00:00.000Z', at: '2026-12-05T06:00:10.000Z', restartGeneration: 0,
    lastLog: ['x'.repeat(200)],
  });
  const small: InstanceStatusReport = { nodeId: 'nod_1', statuses: [status(1), status(2)] };
  assert.deepEqual(splitStatusReport(small), [small]);
  assert.ok(isStatusReport(small));
  assert.equal(isStatusReport(status(1)), false, 'a single status is not a report');

  const big: InstanceStatusReport = { nodeId: 'nod_1', statuses: Array.from({ length: 5_000 }, (_, i) => status(i)) };
  assert.ok(Buffer.byteLength(JSON.stringify(big)) > 1024 * 1024, 'over NATS max_payload as one message');
  const parts = splitStatusReport(big);
  assert.ok(parts.length > 4);
  for (const p of parts) {
    assert.ok(Buffer.byteLength(JSON.stringify(p)) <= 256 * 1024);
    assert.equal(p.nodeId, 'nod_1');
  }
  assert.deepEqual(parts.flatMap((p) => p.statuses), big.statuses);

  // One status over the limit by itself (last lines of escaped control bytes) goes alone; the report does not fail.
  const noisy = { ...status(9), lastLog: ['\u0001'.repeat(60_000)] };
  const mixed = splitStatusReport({ nodeId: 'nod_1', statuses: [status(1), noisy, status(2)] });
  assert.deepEqual(mixed.map((p) => p.statuses.map((s) => s.instanceId)), [[status(1).instanceId, status(2).instanceId], [noisy.instanceId]]);
  assert.deepEqual(splitStatusReport({ nodeId: 'nod_1', statuses: [noisy] }), [{ nodeId: 'nod_1', statuses: [noisy] }]);
});
