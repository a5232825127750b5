// Volume locality through the deployer (ADR 0020), on a three-node fixture cluster: the first
// placement pins the volume and every instance of its process type follows it; the node's
// assignments carry the mounts; a drain and a power loss leave the instances where the data is,
// saying why. Real in-process bus and SQLite store; nodes are rows (no agents).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { newId, subjects } from '@shellwego/core';
import type { AssignmentsMessage } from '@shellwego/core';
import { InProcessBus } from '@shellwego/bus';
import { openSqliteStore } from '@shellwego/store';
import { EventRecorder } from '../events.ts';
import { LogStore } from '../logs.ts';
import { FileKeyProvider, SecretBox } from '../secrets.ts';
import { Deployer } from './deployer.ts';

const NODES = [['nod_1', 'n1'], ['nod_2', 'n2'], ['nod_3', 'n3']] as const;
// Live nodes beat "in the future", so however long the test runs they are never judged silent.
const alive = () => new Date(Date.now() + 3600_000).toISOString();

async function setup() {
  const dir = await mkdtemp(join(tmpdir(), 'swg-volumes-'));
  const store = await openSqliteStore(':memory:');
  const bus = new InProcessBus();
  const secrets = new SecretBox(FileKeyProvider.fromKey(Buffer.alloc(32, 7)), store);
  const org = await store.organizations.create({ id: newId('org'), name: 'acme' });
  for (const [id, name] of NODES) await store.nodes.upsert({ id, name, state: 'ready', isolation: 'sandbox', cpus: 8, memoryMb: 8192, lastHeartbeatAt: alive() });
  // A node silent for 1 ms is down: the test decides who is silent by the heartbeat times it writes.
  const deployer = new Deployer({
    store, bus, secrets, events: new EventRecorder(store, bus), logs: new LogStore(join(dir, 'logs')),
    settings: { baseDomain: 'localhost', routerPort: 8000, routerScheme: 'http', dataDir: dir, maxUploadBytes: 1 << 20, version: 'test' },
    logger: pino({ level: 'silent' }),
  }, 60_000, 1);
  deployer.start();
  const assignments = new Map<string, AssignmentsMessage>();
  bus.subscribe<AssignmentsMessage>(subjects.assignments('*'), (m) => { assignments.set(m.nodeId, m); });
  const user = await store.users.create({ id: newId('usr'), email: 'vol@example.com', passwordHash: 'h', platformAdmin: false });
  /** An app with a release whose web runs `web` instances, and optionally a volume for web. */
  const app = async (name: string, web: number, volume: boolean) => {
    const a = await store.apps.create({ id: newId('app'), organizationId: org.id, name, plan: 'standard' });
    const build = await store.builds.create({ id: newId('bld'), appId: a.id, organizationId: org.id, sourceDigest: 'b'.repeat(64), createdBy: user.id });
    const release = await store.releases.create({
      id: newId('rel'), appId: a.id, organizationId: org.id, buildId: build.id, description: 'test', processTypes: { web: 'x', worker: 'y' },
      artifactDigest: 'a'.repeat(64), configSealed: await secrets.sealJson(a, {}), configKeys: [], createdBy: user.id,
    });
    await store.apps.update(org.id, a.id, { currentReleaseId: release.id });
    await store.formation.upsert(org.id, a.id, 'web', { quantity: web, command: 'x' });
    await store.formation.upsert(org.id, a.id, 'worker', { quantity: 1, command: 'y' });
    const v = volume ? await store.volumes.create({ id: newId('vol'), organizationId: org.id, appId: a.id, name: 'data', processType: 'web', mountPath: '/data', sizeMb: 10 }) : null;
    return { app: a, volume: v };
  };
  const instances = async (appId: string) => (await store.instances.listByApp(org.id, appId)).filter((i) => i.desired === 'running');
  const cleanup = async () => {
    await deployer.stop();
    await bus.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  };
  return { store, bus, org, deployer, assignments, app, instances, cleanup };
}

test('the first placement pins the volume; every web instance follows it there, and only that node gets the mount', async () => {
  const s = await setup();
  try {
    const { app, volume } = await s.app('pinned', 3, true);
    await s.deployer.reconcileApp(s.org.id, app.id);
    await s.bus.drain();
    const home = (await s.store.volumes.get(s.org.id, app.id, 'data'))!.nodeId;
    assert.ok(home, 'pinned by the first placement');
    const rows = await s.instances(app.id);
    const web = rows.filter((i) => i.processType === 'web');
    assert.equal(web.length, 3);
    assert.deepEqual(web.map((i) => i.nodeId), [home, home, home], 'replicas are not spread away from their data');
    const worker = rows.find((i) => i.processType === 'worker')!;
    assert.notEqual(worker.nodeId, null, 'a process type without volumes is placed as usual');
    const homeName = NODES.find(([id]) => id === home)![1];
    // The first was placed by score (and pinned the volume); the others by the volume alone.
    const byVolume = web.filter((i) => new RegExp(`^on ${homeName}: .*best of 1 fitting node.*volume "data" lives on node ${homeName}`).test(i.placement ?? ''));
    assert.equal(byVolume.length, 2, web.map((i) => i.placement).join('\n'));
    // The volume's node gets the mount with each web spec; no other node hears of the volume.
    const specs = s.assignments.get(home)!.instances.filter((x) => x.processType === 'web');
    assert.equal(specs.length, 3);
    for (const x of specs) assert.deepEqual(x.volumes, [{ id: volume!.id, name: 'data', path: '/data' }]);
    for (const [id] of NODES) for (const x of s.assignments.get(id)?.instances ?? []) if (x.processType === 'worker') assert.equal(x.volumes, undefined);
  } finally {
    await s.cleanup();
  }
});

test('drain: instances with a volume stay on its node and say why; those without move', async () => {
  const s = await setup();
  try {
    const { app } = await s.app('stays', 2, true);
    await s.deployer.reconcileApp(s.org.id, app.id);
    const home = (await s.store.volumes.get(s.org.id, app.id, 'data'))!.nodeId!;
    const homeName = NODES.find(([id]) => id === home)![1];
    const before = (await s.instances(app.id)).filter((i) => i.processType === 'web').map((i) => i.id).sort();
    await s.store.nodes.updateSpec(home, { operatorState: 'draining' });
    await s.deployer.reconcileAll();
    await s.deployer.reconcileApp(s.org.id, app.id);
    const rows = await s.instances(app.id);
    const web = rows.filter((i) => i.processType === 'web');
    assert.deepEqual(web.map((i) => i.id).sort(), before, 'no replacement was made for them, nothing was stopped');
    for (const i of web) {
      assert.equal(i.nodeId, home);
      assert.equal(i.placement, `kept on ${homeName} (node is draining): volume "data" lives there, so it cannot move`);
    }
    // The worker (no volume) on a draining node is replaced elsewhere as before.
    const workers = rows.filter((i) => i.processType === 'worker');
    assert.ok(workers.every((w) => w.nodeId !== home || /^leaving /.test(w.placement ?? '')));
    // Scaling up while the node drains: the new instance waits for its data's node, with the reason.
    await s.store.formation.upsert(s.org.id, app.id, 'web', { quantity: 3 });
    await s.deployer.reconcileApp(s.org.id, app.id);
    const pending = (await s.instances(app.id)).filter((i) => i.processType === 'web' && i.nodeId === null);
    assert.equal(pending.length, 1);
    assert.match(pending[0].placement ?? '', new RegExp(`^no node fits: .*${homeName} is draining.*volume "data" lives on node ${homeName}`));
    // Back in service: the note says so, and the waiting one is placed on the volume's node.
    await s.store.nodes.updateSpec(home, { operatorState: null });
    await s.deployer.reconcileAll();
    const after = (await s.instances(app.id)).filter((i) => i.processType === 'web');
    assert.equal(after.length, 3);
    assert.ok(after.every((i) => i.nodeId === home));
    for (const i of after.filter((x) => before.includes(x.id))) assert.equal(i.placement, `stays on ${homeName}: the node is back in service`);
  } finally {
    await s.cleanup();
  }
});

test('power loss: replacements wait for the volume node with the reason, and go back to it when it returns', async () => {
  const s = await setup();
  try {
    const { app } = await s.app('waits', 1, true);
    await s.deployer.reconcileApp(s.org.id, app.id);
    const home = (await s.store.volumes.get(s.org.id, app.id, 'data'))!.nodeId!;
    const homeName = NODES.find(([id]) => id === home)![1];
    const node = (await s.store.nodes.byId(home))!;
    await s.store.nodes.upsert({ ...node, lastHeartbeatAt: new Date(Date.now() - 3600_000).toISOString() });
    await s.deployer.reconcileAll();
    assert.equal((await s.store.nodes.byId(home))!.state, 'down');
    const web = (await s.instances(app.id)).filter((i) => i.processType === 'web');
    assert.equal(web.length, 1);
    assert.equal(web[0].nodeId, null, 'not placed on a node without its data');
    const others = NODES.filter(([id]) => id !== home).map(([, n]) => `${n} volume "data" lives on node ${homeName}`);
    assert.equal(web[0].placement, `no node fits: ${[`${homeName} is down`, ...others].sort().join('; ')}`);
    assert.equal((await s.store.volumes.get(s.org.id, app.id, 'data'))!.nodeId, home, 'the pin never moves');
    // The node is back: the waiting instance is placed there.
    await s.store.nodes.upsert({ ...node, state: 'ready', lastHeartbeatAt: alive() });
    await s.deployer.reconcileAll();
    const back = (await s.instances(app.id)).filter((i) => i.processType === 'web');
    assert.deepEqual(back.map((i) => i.nodeId), [home]);
  } finally {
    await s.cleanup();
  }
});
