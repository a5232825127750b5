import { test } from 'node:test';
import assert from 'node:assert/strict';
import { leavingNodes, place } from './scheduler.ts';
import type { NodeLoad, PlacementRequest } from './scheduler.ts';

const node = (id: string, over: Partial<NodeLoad> = {}): NodeLoad => ({
  id, name: id, state: 'ready', cpus: 4, memoryMb: 4096, allocatedMb: 0, allocatedCpus: 0, labels: {}, taints: [], sameApp: 0, ...over,
});
const req = (over: Partial<PlacementRequest> = {}): PlacementRequest => ({ memoryMb: 512, cpus: 1, ...over });

test('filters: only ready nodes with enough memory and CPU; every node explained when none fits', () => {
  const nodes = [
    node('n1', { state: 'cordoned' }),
    node('n2', { memoryMb: 612, allocatedMb: 512 }),
    node('n3', { cpus: 1, allocatedCpus: 3.5 }),
    node('n4', { state: 'draining' }),
    node('n5', { state: 'down' }),
  ];
  const p = place(nodes, req());
  assert.equal(p.nodeId, null);
  assert.equal(p.reason, 'no node fits: n1 is cordoned; n2 needs 512 MB, has 100 MB free; n3 needs 1 CPU, has 0.5 free (1 × 4 overcommit); n4 is draining; n5 is down');
  assert.deepEqual(p.nodes.map((v) => v.fits), [false, false, false, false, false]);
  assert.equal(place([], req()).reason, 'no nodes have joined the platform');
  // The CPU overcommit is a setting.
  assert.equal(place([node('a', { cpus: 2, allocatedCpus: 2 })], req({ settings: { policy: 'spread', cpuOvercommit: 1 } })).nodeId, null);
  assert.equal(place([node('a', { cpus: 2, allocatedCpus: 2 })], req({ settings: { policy: 'spread', cpuOvercommit: 2 } })).nodeId, 'a');
});

test('label constraints: a node must carry every required label', () => {
  const nodes = [node('a', { labels: { zone: 'x' } }), node('b', { labels: { zone: 'y', disk: 'ssd' } })];
  assert.equal(place(nodes, req({ placement: { requiredLabels: { disk: 'ssd' }, tolerations: [] } })).nodeId, 'b');
  const none = place(nodes, req({ placement: { requiredLabels: { zone: 'z' }, tolerations: [] } }));
  assert.equal(none.nodeId, null);
  assert.equal(none.reason, 'no node fits: a lacks label zone=z (has zone=x); b lacks label zone=z (has zone=y)');
});

test('taints keep instances off unless tolerated (by key, effect and value or any value)', () => {
  const gpu = node('gpu', { taints: [{ key: 'gpu', value: 'true', effect: 'NoSchedule' }] });
  const nodes = [gpu];
  assert.equal(place(nodes, req()).reason, 'no node fits: gpu taint gpu=true:NoSchedule not tolerated');
  assert.equal(place(nodes, req({ placement: { requiredLabels: {}, tolerations: [{ key: 'gpu', value: 'true', effect: 'NoSchedule' }] } })).nodeId, 'gpu');
  assert.equal(place(nodes, req({ placement: { requiredLabels: {}, tolerations: [{ key: 'gpu', effect: 'NoSchedule' }] } })).nodeId, 'gpu');
  assert.equal(place(nodes, req({ placement: { requiredLabels: {}, tolerations: [{ key: 'gpu', value: 'false', effect: 'NoSchedule' }] } })).nodeId, null);
  assert.equal(place(nodes, req({ placement: { requiredLabels: {}, tolerations: [{ key: 'gpu', effect: 'NoExecute' }] } })).nodeId, null);
  // An untainted node wins over nothing; a tainted one is skipped even when emptier.
  assert.equal(place([gpu, node('plain', { allocatedMb: 3000 })], req()).nodeId, 'plain');
});

test('spreads replicas of one app across nodes, then across zones', () => {
  // a has a replica already: b or c; c is in the zone without one.
  const nodes = [
    node('a', { labels: { zone: 'z1' }, sameApp: 1 }),
    node('b', { labels: { zone: 'z1' } }),
    node('c', { labels: { zone: 'z2' }, allocatedMb: 2048 }),
  ];
  const p = place(nodes, req());
  assert.equal(p.nodeId, 'c');
  const c = p.nodes.find((v) => v.nodeId === 'c')!;
  const b = p.nodes.find((v) => v.nodeId === 'b')!;
  assert.ok(c.fits && b.fits);
  assert.deepEqual(c.score, { replicas: 0, zone: 0, load: 37, total: 37 });
  assert.deepEqual(b.score, { replicas: 0, zone: -100, load: 87, total: -13 });
  assert.match(p.reason, /^on c: score 37 \(replicas 0, zone 0, spread 37\), best of 3 fitting node\(s\); a scored -1013; b scored -13$/);
  // Both zones have one replica: the node without one wins over load.
  nodes[2].sameApp = 1;
  assert.equal(place(nodes, req()).nodeId, 'b');
});

test('pack vs spread policy for the load part; ties break on node id; same input, same answer', () => {
  const nodes = [node('b', { allocatedMb: 2048 }), node('a'), node('c', { allocatedMb: 2048 })];
  assert.equal(place(nodes, req({ settings: { policy: 'spread', cpuOvercommit: 4 } })).nodeId, 'a');
  assert.equal(place(nodes, req({ settings: { policy: 'pack', cpuOvercommit: 4 } })).nodeId, 'b');
  const first = place(nodes, req());
  for (const order of [[...nodes].reverse(), [nodes[1], nodes[2], nodes[0]]]) assert.deepEqual(place(order, req()), first);
});

test('leaving nodes: draining, or a NoExecute taint the app does not tolerate', () => {
  const nodes = [
    node('a', { state: 'draining' }),
    node('b', { taints: [{ key: 'maint', value: 'now', effect: 'NoExecute' }] }),
    node('c', { taints: [{ key: 'gpu', value: 'true', effect: 'NoSchedule' }] }),
    node('d', { state: 'cordoned' }),
  ];
  assert.deepEqual([...leavingNodes(nodes, undefined)], [['a', 'node is draining'], ['b', 'taint maint=now:NoExecute not tolerated']]);
  assert.deepEqual([...leavingNodes(nodes, { requiredLabels: {}, tolerations: [{ key: 'maint', effect: 'NoExecute' }] }).keys()], ['a']);
});

test('volume locality: a pinned volume keeps its instances on its node; an unpinned one goes anywhere', () => {
  const nodes = [node('n1', { name: 'alpha' }), node('n2', { name: 'beta' }), node('n3', { name: 'gamma', allocatedMb: 3584 })];
  // Unpinned: placed as usual (spread picks the emptiest), the claim pins it there.
  assert.equal(place(nodes, req({ volumes: [{ name: 'data', nodeId: null }] })).nodeId, 'n1');
  // Pinned to n3: only n3 — even though it is the fullest and already has a replica.
  nodes[2].sameApp = 1;
  const p = place(nodes, req({ volumes: [{ name: 'data', nodeId: 'n3' }] }));
  assert.equal(p.nodeId, 'n3');
  assert.match(p.reason, /^on gamma: .*best of 1 fitting node\(s\); alpha volume "data" lives on node gamma; beta volume "data" lives on node gamma$/);
  assert.deepEqual(p.nodes.map((v) => (v.fits ? 'fits' : v.reasons.join(', '))), ['volume "data" lives on node gamma', 'volume "data" lives on node gamma', 'fits']);
  // Two volumes pinned to different nodes (a race the store refuses, but never silently): nothing fits.
  const split = place(nodes, req({ volumes: [{ name: 'b', nodeId: 'n2' }, { name: 'a', nodeId: 'n1' }] }));
  assert.equal(split.nodeId, null);
  assert.equal(split.reason, 'no node fits: alpha volume "b" lives on node beta; beta volume "a" lives on node alpha; gamma volume "a" lives on node alpha, volume "b" lives on node beta');
});

test('volume locality: the volume node down, draining or full → pending with the reason; no other node stands in', () => {
  for (const state of ['down', 'draining', 'cordoned'] as const) {
    const nodes = [node('n1', { name: 'home', state }), node('n2', { name: 'spare' })];
    const p = place(nodes, req({ volumes: [{ name: 'data', nodeId: 'n1' }] }));
    assert.equal(p.nodeId, null);
    assert.equal(p.reason, `no node fits: home is ${state}; spare volume "data" lives on node home`);
  }
  const full = place([node('n1', { name: 'home', memoryMb: 512, allocatedMb: 512 }), node('n2', { name: 'spare' })], req({ volumes: [{ name: 'data', nodeId: 'n1' }] }));
  assert.equal(full.reason, 'no node fits: home needs 512 MB, has 0 MB free; spare volume "data" lives on node home');
  // A volume pinned to a node that was removed: named by id, still nothing else takes it.
  assert.equal(place([node('n2', { name: 'spare' })], req({ volumes: [{ name: 'data', nodeId: 'nod_gone' }] })).reason, 'no node fits: spare volume "data" lives on node nod_gone');
});
