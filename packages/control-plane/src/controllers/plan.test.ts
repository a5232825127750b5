import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { InstanceRow } from '@shellwego/store';
import { planApp } from './plan.ts';
import { place } from './scheduler.ts';

function inst(p: Partial<InstanceRow> & { id: string }): InstanceRow {
  return {
    appId: 'a', organizationId: 'o', releaseId: 'r1', releaseVersion: 1, processType: 'web', index: 1, nodeId: 'n1',
    desired: 'running', state: 'running', exitCode: null, signal: null, oomKilled: false, restarts: 0, address: null,
    startedAt: null, restartGeneration: 0, lastLog: [], createdAt: '', updatedAt: '', ...p,
  };
}

test('creates instances for the formation of the current release', () => {
  const p = planApp({ currentReleaseId: 'r1', processTypes: { web: 'node s.js', worker: 'node w.js' }, formation: [{ type: 'web', quantity: 2 }, { type: 'worker', quantity: 1 }], instances: [] });
  assert.deepEqual(p.create, [{ type: 'web', index: 1 }, { type: 'web', index: 2 }, { type: 'worker', index: 1 }]);
  assert.deepEqual(p.stop, []);
});

test('nothing to do when actual matches desired', () => {
  const p = planApp({ currentReleaseId: 'r1', processTypes: { web: 'x' }, formation: [{ type: 'web', quantity: 1 }], instances: [inst({ id: 'i1' })] });
  assert.deepEqual(p, { create: [], stop: [], forget: [] });
});

test('scaling down stops the highest indexes', () => {
  const p = planApp({ currentReleaseId: 'r1', processTypes: { web: 'x' }, formation: [{ type: 'web', quantity: 1 }], instances: [inst({ id: 'i1' }), inst({ id: 'i2', index: 2 })] });
  assert.deepEqual(p.stop, ['i2']);
});

test('a new release surges: old instance stays until its replacement runs', () => {
  const base = { currentReleaseId: 'r2', processTypes: { web: 'x' }, formation: [{ type: 'web', quantity: 1 }] };
  const old = inst({ id: 'old', releaseId: 'r1' });
  assert.deepEqual(planApp({ ...base, instances: [old] }).create, [{ type: 'web', index: 1 }]);
  assert.deepEqual(planApp({ ...base, instances: [old] }).stop, []);
  const starting = inst({ id: 'new', releaseId: 'r2', state: 'starting' });
  assert.deepEqual(planApp({ ...base, instances: [old, starting] }), { create: [], stop: [], forget: [] });
  const crashed = inst({ id: 'new', releaseId: 'r2', state: 'crashed' });
  assert.deepEqual(planApp({ ...base, instances: [old, crashed] }).stop, [], 'a crashing release does not take the old one down');
  const running = inst({ id: 'new', releaseId: 'r2', state: 'running' });
  assert.deepEqual(planApp({ ...base, instances: [old, running] }).stop, ['old']);
});

test('process types missing from the release are not run; stopped rows are forgotten', () => {
  const p = planApp({
    currentReleaseId: 'r1', processTypes: { web: 'x' }, formation: [{ type: 'web', quantity: 1 }, { type: 'worker', quantity: 2 }],
    instances: [inst({ id: 'w', processType: 'worker' }), inst({ id: 'gone', desired: 'stopped', state: 'stopped' }), inst({ id: 'ending', desired: 'stopped', state: 'stopping' })],
  });
  assert.deepEqual(p.create, [{ type: 'web', index: 1 }]);
  assert.deepEqual(p.stop, ['w']);
  assert.deepEqual(p.forget, ['gone']);
});

test('no release: nothing runs', () => {
  const p = planApp({ currentReleaseId: null, processTypes: {}, formation: [{ type: 'web', quantity: 1 }], instances: [] });
  assert.deepEqual(p.create, []);
});

test('placement spreads replicas, then packs by free memory, deterministically', () => {
  const nodes = [
    { id: 'b', ready: true, memoryMb: 4096, allocatedMb: 0, sameApp: 1 },
    { id: 'a', ready: true, memoryMb: 4096, allocatedMb: 2048, sameApp: 0 },
    { id: 'c', ready: false, memoryMb: 8192, allocatedMb: 0, sameApp: 0 },
  ];
  assert.equal(place(nodes, { memoryMb: 512 }).nodeId, 'a');
  assert.equal(place(nodes, { memoryMb: 3000 }).nodeId, 'b');
  const none = place(nodes, { memoryMb: 9000 });
  assert.equal(none.nodeId, null);
  assert.match(none.reason, /no node has 9000 MB free/);
  assert.equal(place([], { memoryMb: 1 }).reason, 'no ready nodes');
});
