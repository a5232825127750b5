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
import type { AssignmentsMessage, HeartbeatMessage, InstanceStatusMessage, InstanceStatusReport, RouteTableMessage } from '@shellwego/core';
import { InProcessBus } from '@shellwego/bus';
import { openSqliteStore } from '@shellwego/store';
import { EventRecorder } from '../events.ts';
import { LogStore } from '../logs.ts';
import { FileKeyProvider, SecretBox } from '../secrets.ts';
import { Deployer } from './deployer.ts';

async function setup(lastHeartbeatAt: string, catchUpGraceMs?: number) {
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
  }, 60_000, undefined, catchUpGraceMs);
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

test('a pass publishes the route table when it changed (as a delta); assignments go to every node that does not report what it holds', async () => {
  const { store, bus, org, deployer, tables, assignments, cleanup } = await setup(new Date().toISOString());
  try {
    await store.apps.create({ id: newId('app'), organizationId: org.id, name: 'one', plan: 'standard' });
    await deployer.reconcileAll();
    await deployer.reconcileAll();
    await bus.drain();
    // Unchanged, the table is not sent again by the next pass: routers catch up by heartbeat (next test) or keepalive.
    assert.equal(tables.length, 1);
    assert.ok(tables[0].routes['one.localhost']);
    // nod_1 has sent no heartbeat saying which generation it holds: every pass sends its set, each with a newer generation.
    assert.equal(assignments.length, 2);
    assert.ok(assignments[1].generation > assignments[0].generation);

    await store.apps.create({ id: newId('app'), organizationId: org.id, name: 'two', plan: 'standard' });
    await deployer.reconcileAll();
    await bus.drain();
    assert.equal(tables.length, 2);
    assert.ok(tables[1].version > tables[0].version);
    assert.equal(tables[1].delta?.base, tables[0].version, 'a change goes as a delta on the version before');
    assert.deepEqual(Object.keys(tables[1].routes), ['two.localhost']);
  } finally {
    await cleanup();
  }
});

test('a node behind what was sent to it (lost message, restarted agent) gets it again at its heartbeat; one up to date gets nothing more', async () => {
  const { store, bus, org, deployer, tables, assignments, cleanup } = await setup(new Date().toISOString(), 0);
  try {
    const beat = (assignmentsGeneration: number | null, routesVersion: number | null): HeartbeatMessage => ({
      nodeId: 'nod_1', name: 'n1', isolation: 'sandbox', capacity: { cpus: 1, memoryMb: 4096 }, instances: 0, at: new Date().toISOString(), assignmentsGeneration, routesVersion,
    });
    const heard = async (m: HeartbeatMessage) => {
      await bus.publish(subjects.heartbeat('nod_1'), m);
      await bus.drain();
      await new Promise((r) => setTimeout(r, 200)); // a catch-up goes out with the next publish tick (50 ms)
      await bus.drain();
    };
    await store.apps.create({ id: newId('app'), organizationId: org.id, name: 'one', plan: 'standard' });
    await deployer.reconcileAll();
    await bus.drain();
    const [sets, table] = [assignments.length, tables.at(-1)!];
    const sent = assignments.at(-1)!.generation;

    await heard(beat(sent, table.version));
    assert.equal(assignments.length, sets, 'up to date: nothing sent');
    assert.equal(tables.length, 1);

    // The agent and its router restarted (they hold nothing): the set again (newer generation), the table whole (same version).
    await heard(beat(null, null));
    assert.equal(assignments.length, sets + 1);
    assert.ok(assignments.at(-1)!.generation > sent);
    assert.deepEqual(assignments.at(-1)!.instances, assignments[sets - 1].instances);
    assert.equal(tables.length, 2);
    assert.equal(tables[1].version, table.version);
    assert.equal(tables[1].delta, undefined, 'whole, not a delta');

    // Reporting now: a pass leaves its unchanged set alone.
    await heard(beat(assignments.at(-1)!.generation, table.version));
    await deployer.reconcileAll();
    await bus.drain();
    assert.equal(assignments.length, sets + 1);
    assert.equal(tables.length, 2);

    // Holding newer ones than ours (another control plane led meanwhile, its clock ahead): ours must pass them, or they are refused.
    const theirs = assignments.at(-1)!.generation + 1e9;
    await heard(beat(theirs, table.version + 1e9));
    assert.ok(assignments.at(-1)!.generation > theirs);
    assert.ok(tables.at(-1)!.version > table.version + 1e9);

    // Numbers no control plane issued (a rogue node): ignored, so no later number is pushed out of range.
    const [setsNow, tablesNow] = [assignments.length, tables.length];
    await heard(beat(1e300, 1e300));
    await heard({ ...beat(null, null), assignmentsGeneration: 'x' as unknown as number, routesVersion: -5 });
    assert.equal(assignments.length, setsNow);
    assert.equal(tables.length, tablesNow);
    await store.apps.create({ id: newId('app'), organizationId: org.id, name: 'two', plan: 'standard' });
    await deployer.reconcileAll();
    await bus.drain();
    assert.ok(tables.at(-1)!.version < 1e300 && Number.isSafeInteger(tables.at(-1)!.version));
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
  const { store, bus, deployer, assignments, cleanup } = await setup(new Date().toISOString());
  try {
    const beat = (clusterEndpoint: string): HeartbeatMessage => ({
      nodeId: 'nod_1', name: 'n1', isolation: 'sandbox', capacity: { cpus: 1, memoryMb: 4096 }, instances: 0, at: new Date().toISOString(), clusterEndpoint,
    });
    // Observed through the node's assignments: its heartbeats here do not say what it holds, so a pass sends its set.
    const settle = async () => {
      await bus.drain();
      await new Promise((r) => setTimeout(r, 300)); // the pass is scheduled 50 ms out
      await deployer.reconcileAll(); // and waits for one in flight
      await bus.drain();
    };
    await bus.publish(subjects.heartbeat('nod_1'), beat('10.0.0.1:8001'));
    await settle();
    assert.equal((await store.nodes.byId('nod_1'))?.clusterEndpoint, '10.0.0.1:8001');
    const before = assignments.length;
    await bus.publish(subjects.heartbeat('nod_1'), beat('10.0.0.1:8001'));
    await bus.drain();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(assignments.length, before, 'the same endpoint: no extra pass');
    await bus.publish(subjects.heartbeat('nod_1'), beat('10.0.0.1:9001'));
    await bus.drain();
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(assignments.length > before, 'a new endpoint: a pass ran at once');
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

/** An app with a release whose web process runs `web` instances (not reconciled yet). */
async function webApp(store: Awaited<ReturnType<typeof openSqliteStore>>, organizationId: string, name: string, web: number) {
  const secrets = new SecretBox(FileKeyProvider.fromKey(Buffer.alloc(32, 5)), store);
  const user = await store.users.create({ id: newId('usr'), email: `${name}@example.com`, passwordHash: 'h', platformAdmin: false });
  const app = await store.apps.create({ id: newId('app'), organizationId, name, plan: 'free' });
  const build = await store.builds.create({ id: newId('bld'), appId: app.id, organizationId, sourceDigest: 'b'.repeat(64), createdBy: user.id });
  const release = await store.releases.create({
    id: newId('rel'), appId: app.id, organizationId, buildId: build.id, description: 'test', processTypes: { web: 'x' },
    artifactDigest: 'a'.repeat(64), configSealed: await secrets.sealJson(app, {}), configKeys: [], createdBy: user.id,
  });
  await store.apps.update(organizationId, app.id, { currentReleaseId: release.id });
  await store.formation.upsert(organizationId, app.id, 'web', { quantity: web, command: 'x' });
  return app;
}

const running = (id: string, address: string): InstanceStatusMessage => ({
  nodeId: 'nod_1', instanceId: id, state: 'running', exitCode: null, signal: null, oomKilled: false, restarts: 0, address,
  startedAt: null, at: new Date().toISOString(), restartGeneration: 0,
});

test('a pass that drains an instance takes it out of the route table in the same publish, ahead of any node set', async () => {
  const { store, bus, org, deployer, tables, assignments, cleanup } = await setup(new Date().toISOString());
  try {
    const app = await webApp(store, org.id, 'shrinks', 2);
    await deployer.reconcileApp(org.id, app.id);
    const rows = await store.instances.listByApp(org.id, app.id);
    await bus.publish(subjects.instanceStatus('nod_1'), { nodeId: 'nod_1', statuses: rows.map((r, i) => running(r.id, `10.89.0.${i + 2}:5000`)) } satisfies InstanceStatusReport);
    await bus.drain();
    await deployer.reconcileAll();
    await bus.drain();
    const order: string[] = [];
    bus.subscribe<RouteTableMessage>(subjects.routes, () => { order.push('routes'); });
    bus.subscribe<AssignmentsMessage>(subjects.assignments('nod_1'), () => { order.push('set'); });
    const before = tables.length;
    // Scaled down behind the deployer's back: only a pass finds it.
    await store.formation.upsert(org.id, app.id, 'web', { quantity: 1, command: 'x' });
    await deployer.reconcileAll();
    await bus.drain();
    assert.ok(tables.length > before, 'the pass published the table');
    assert.equal(tables.at(-1)!.routes['shrinks.localhost']?.backends.length, 1, 'the draining instance is out of the router');
    assert.equal(order[0], 'routes');
    assert.ok(assignments.length > 0);
  } finally {
    await cleanup();
  }
});

test("a node's status report: only statuses that differ from the rows are written; one naming another node changes nothing", async () => {
  const { store, bus, org, deployer, cleanup } = await setup(new Date().toISOString());
  try {
    const app = await webApp(store, org.id, 'reported', 2);
    await deployer.reconcileApp(org.id, app.id);
    const [a, b] = await store.instances.listByApp(org.id, app.id);
    assert.ok(a && b && a.nodeId === 'nod_1' && b.nodeId === 'nod_1');
    const status = (id: string, state: InstanceStatusMessage['state'], address: string | null, restarts = 0): InstanceStatusMessage => ({
      nodeId: 'nod_1', instanceId: id, state, exitCode: state === 'crashed' ? 1 : null, signal: null, oomKilled: false, restarts, address,
      startedAt: null, at: new Date().toISOString(), restartGeneration: 0,
    });
    const report = async (statuses: InstanceStatusMessage[]) => {
      await bus.publish(subjects.instanceStatus('nod_1'), { nodeId: 'nod_1', statuses } satisfies InstanceStatusReport);
      await bus.drain();
    };
    await report([status(a.id, 'running', '10.89.0.2:5000'), status(b.id, 'running', '10.89.0.3:5000')]);
    const rowB = (await store.instances.byId(b.id))!;
    assert.equal((await store.instances.byId(a.id))!.state, 'running');
    assert.equal(rowB.address, '10.89.0.3:5000');

    await new Promise((r) => setTimeout(r, 5)); // a write now would show in updatedAt
    await report([
      status(a.id, 'crashed', null, 1), status(b.id, 'running', '10.89.0.3:5000'),
      { ...status(b.id, 'stopped', null), nodeId: 'nod_2' }, // not this node's to report
    ]);
    const afterA = (await store.instances.byId(a.id))!;
    assert.equal(afterA.state, 'crashed');
    assert.equal(afterA.restarts, 1);
    assert.deepEqual(await store.instances.byId(b.id), rowB, 'unchanged: not written at all');
  } finally {
    await cleanup();
  }
});
