// The deployer's periodic pass across processes: what it republishes for parts that missed a
// message (split mode over NATS), and what a restarted control plane concludes about nodes.
// Real in-process bus and SQLite store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { newId, subjects } from '@shellwego/core';
import type { AssignmentsMessage, HeartbeatMessage, RouteTableMessage } from '@shellwego/core';
import { InProcessBus } from '@shellwego/bus';
import { openSqliteStore } from '@shellwego/store';
import { EventRecorder } from '../events.ts';
import { LogStore } from '../logs.ts';
import { FileKeyProvider, SecretBox } from '../secrets.ts';
import { Deployer } from './deployer.ts';

async function setup(lastHeartbeatAt: string) {
  const dir = await mkdtemp(join(tmpdir(), 'swg-deployer-'));
  const store = await openSqliteStore(':memory:');
  const bus = new InProcessBus();
  const secrets = new SecretBox(FileKeyProvider.fromKey(Buffer.alloc(32, 5)), store);
  const org = await store.organizations.create({ id: newId('org'), name: 'acme' });
  await store.nodes.upsert({ id: 'nod_1', name: 'n1', state: 'ready', isolation: 'sandbox', cpus: 1, memoryMb: 4096, lastHeartbeatAt });
  const deployer = new Deployer({
    store, bus, secrets, events: new EventRecorder(store, bus), logs: new LogStore(join(dir, 'logs')),
    settings: { baseDomain: 'localhost', routerPort: 8000, routerScheme: 'http', dataDir: dir, maxUploadBytes: 1 << 20, version: 'test' },
    logger: pino({ level: 'silent' }),
  }, 60_000);
  deployer.start(); // as the leading control plane (the periodic pass is 60 s away: the tests drive it)
  const tables: RouteTableMessage[] = [];
  const assignments: AssignmentsMessage[] = [];
  bus.subscribe<RouteTableMessage>(subjects.routes, (m) => { tables.push(m); });
  bus.subscribe<AssignmentsMessage>(subjects.assignments('nod_1'), (m) => { assignments.push(m); });
  const cleanup = async () => {
    await deployer.stop();
    await bus.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  };
  return { store, bus, org, deployer, tables, assignments, cleanup };
}

test('every pass republishes the route table: unchanged → same version (routers ignore it), changed → a newer one', async () => {
  const { store, bus, org, deployer, tables, assignments, cleanup } = await setup(new Date().toISOString());
  try {
    await store.apps.create({ id: newId('app'), organizationId: org.id, name: 'one', plan: 'standard' });
    await deployer.reconcileAll();
    await deployer.reconcileAll();
    await bus.drain();
    assert.equal(tables.length, 2, 'a router that missed the first copy gets the second');
    assert.equal(tables[1].version, tables[0].version);
    assert.deepEqual(tables[1].routes, tables[0].routes);
    assert.ok(tables[0].routes['one.localhost']);
    // Assignments are level-triggered too, each with a newer generation.
    assert.equal(assignments.length, 2);
    assert.ok(assignments[1].generation > assignments[0].generation);

    await store.apps.create({ id: newId('app'), organizationId: org.id, name: 'two', plan: 'standard' });
    await deployer.reconcileAll();
    await bus.drain();
    assert.equal(tables.length, 3);
    assert.ok(tables[2].version > tables[1].version);
    assert.ok(tables[2].routes['two.localhost']);
  } finally {
    await cleanup();
  }
});

test('a restarted deployer does not mark a node down for heartbeats sent while it was not listening', async () => {
  const { store, deployer, cleanup } = await setup(new Date(Date.now() - 10 * 60_000).toISOString());
  try {
    await deployer.reconcileAll();
    assert.equal((await store.nodes.byId('nod_1'))?.state, 'ready');
  } finally {
    await cleanup();
  }
});

test('a restarted control plane numbers after its previous life: agents and routers accept it at once', async () => {
  const first = await setup(new Date().toISOString());
  try {
    await first.store.apps.create({ id: newId('app'), organizationId: first.org.id, name: 'one', plan: 'standard' });
    await first.deployer.reconcileAll();
    await first.bus.drain();
  } finally {
    await first.cleanup();
  }
  const second = await setup(new Date().toISOString());
  try {
    await second.store.apps.create({ id: newId('app'), organizationId: second.org.id, name: 'one', plan: 'standard' });
    await second.deployer.reconcileAll();
    await second.bus.drain();
    assert.ok(second.tables[0].version > first.tables[0].version, 'route table versions keep growing across restarts');
    assert.ok(second.assignments[0].generation > first.assignments[0].generation, 'assignment generations keep growing across restarts');
  } finally {
    await second.cleanup();
  }
});

test('a control plane that does not lead writes nothing and asks the leader to reconcile, over the bus', async () => {
  const s = await setup(new Date().toISOString());
  try {
    const app = await s.store.apps.create({ id: newId('app'), organizationId: s.org.id, name: 'one', plan: 'standard' });
    const requests: unknown[] = [];
    s.bus.subscribe(subjects.reconcileRequest, (m) => { requests.push(m); });
    const follower = new Deployer({
      store: s.store, bus: s.bus, secrets: new SecretBox(FileKeyProvider.fromKey(Buffer.alloc(32, 5)), s.store), events: new EventRecorder(s.store, s.bus),
      logs: new LogStore(join(tmpdir(), 'swg-follower-logs')), settings: { baseDomain: 'localhost', routerPort: 8000, routerScheme: 'http', dataDir: tmpdir(), maxUploadBytes: 1 << 20, version: 'test' },
      logger: pino({ level: 'silent' }),
    }, 60_000);
    const tablesBefore = s.tables.length;
    await follower.reconcileApp(s.org.id, app.id);
    await follower.publishRoutes(true);
    await s.bus.drain();
    assert.deepEqual(requests, [{ organizationId: s.org.id, appId: app.id }, { organizationId: null, appId: null }]);
    // The leader (started in setup) took both requests: it published the table, the follower did not.
    assert.ok(s.tables.length > tablesBefore);
    assert.ok(s.tables.at(-1)!.routes['one.localhost'], 'the leader reconciled the app the follower was asked about');
  } finally {
    await s.cleanup();
  }
});

test('two control planes placing at once (a deposed leader still finishing its pass): a node is never promised more than it holds', async () => {
  const s = await setup(new Date().toISOString());
  // Room for 8 instances of the standard plan (512 MB, 1 CPU) by memory; CPUs (8 × 4) would take 32.
  await s.store.nodes.upsert({ id: 'nod_1', name: 'n1', state: 'ready', isolation: 'sandbox', cpus: 8, memoryMb: 4096, lastHeartbeatAt: new Date().toISOString() });
  const secrets = new SecretBox(FileKeyProvider.fromKey(Buffer.alloc(32, 5)), s.store);
  const other = new Deployer({
    store: s.store, bus: s.bus, secrets, events: new EventRecorder(s.store, s.bus), logs: new LogStore(join(tmpdir(), 'swg-other-logs')),
    settings: { baseDomain: 'localhost', routerPort: 8000, routerScheme: 'http', dataDir: tmpdir(), maxUploadBytes: 1 << 20, version: 'test' },
    logger: pino({ level: 'silent' }),
  }, 60_000);
  other.start(); // also believes it leads
  try {
    const user = await s.store.users.create({ id: newId('usr'), email: 'cas@example.com', passwordHash: 'h', platformAdmin: false });
    const apps = [];
    for (const name of ['left', 'right']) {
      const app = await s.store.apps.create({ id: newId('app'), organizationId: s.org.id, name, plan: 'standard' });
      const build = await s.store.builds.create({ id: newId('bld'), appId: app.id, organizationId: s.org.id, sourceDigest: 'b'.repeat(64), createdBy: user.id });
      const release = await s.store.releases.create({
        id: newId('rel'), appId: app.id, organizationId: s.org.id, buildId: build.id, description: 'test', processTypes: { web: 'x' },
        artifactDigest: 'a'.repeat(64), configSealed: await secrets.sealJson(app, {}), configKeys: [], createdBy: user.id,
      });
      await s.store.apps.update(s.org.id, app.id, { currentReleaseId: release.id });
      await s.store.formation.upsert(s.org.id, app.id, 'web', { quantity: 6, command: 'x' });
      apps.push(app);
    }
    // Both read the node as empty, then place 6 instances each at the same time.
    await Promise.all([s.deployer.reconcileApp(s.org.id, apps[0].id), other.reconcileApp(s.org.id, apps[1].id)]);
    const rows = (await Promise.all(apps.map((a) => s.store.instances.listByApp(s.org.id, a.id)))).flat();
    assert.equal(rows.length, 12);
    assert.equal(rows.filter((i) => i.nodeId === 'nod_1').length, 8);
    const pending = rows.filter((i) => i.nodeId === null);
    assert.equal(pending.length, 4);
    for (const i of pending) assert.match(i.placement ?? '', /^no node fits: n1 needs 512 MB, has 0 MB free/);
    assert.equal((await s.store.scheduling.allocations()).get('nod_1')?.memoryMb, 4096);
  } finally {
    await other.stop();
    await s.cleanup();
  }
});

test('a ready node that comes back on another cluster endpoint gets a pass at once (routers learn where to dial it)', async () => {
  const { store, bus, deployer, tables, cleanup } = await setup(new Date().toISOString());
  try {
    const beat = (clusterEndpoint: string): HeartbeatMessage => ({
      nodeId: 'nod_1', name: 'n1', isolation: 'sandbox', capacity: { cpus: 1, memoryMb: 4096 }, instances: 0, at: new Date().toISOString(), clusterEndpoint,
    });
    const settle = async () => {
      await bus.drain();
      await new Promise((r) => setTimeout(r, 300)); // the pass is scheduled 50 ms out
      await deployer.reconcileAll(); // and waits for one in flight
      await bus.drain();
    };
    await bus.publish(subjects.heartbeat('nod_1'), beat('10.0.0.1:8001'));
    await settle();
    assert.equal((await store.nodes.byId('nod_1'))?.clusterEndpoint, '10.0.0.1:8001');
    const before = tables.length;
    await bus.publish(subjects.heartbeat('nod_1'), beat('10.0.0.1:8001'));
    await bus.drain();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(tables.length, before, 'the same endpoint: no extra pass');
    await bus.publish(subjects.heartbeat('nod_1'), beat('10.0.0.1:9001'));
    await bus.drain();
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(tables.length > before, 'a new endpoint: a pass republished the table');
    assert.equal((await store.nodes.byId('nod_1'))?.clusterEndpoint, '10.0.0.1:9001');
  } finally {
    await cleanup();
  }
});

test('a heartbeat of a removed node (its NATS user revoked) does not bring it back; an unknown node without one joins', async () => {
  const { store, bus, cleanup } = await setup(new Date().toISOString());
  try {
    await store.natsUsers.add({ userKey: 'UREMOVED', nodeId: 'nod_gone' });
    await store.natsUsers.revokeNode('nod_gone', new Date().toISOString());
    const beat = (nodeId: string): HeartbeatMessage => ({ nodeId, name: nodeId, isolation: 'sandbox', capacity: { cpus: 1, memoryMb: 1024 }, instances: 0, at: new Date().toISOString() });
    await bus.publish(subjects.heartbeat('nod_gone'), beat('nod_gone'));
    await bus.publish(subjects.heartbeat('nod_new'), beat('nod_new'));
    await bus.drain();
    assert.equal(await store.nodes.byId('nod_gone'), undefined);
    assert.equal((await store.nodes.byId('nod_new'))?.state, 'ready');
  } finally {
    await cleanup();
  }
});
