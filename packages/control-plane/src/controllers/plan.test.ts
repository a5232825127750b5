import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_DEPLOY_SETTINGS } from '@shellwego/core';
import type { DeploySettingsT, DeployStrategy } from '@shellwego/core';
import type { InstanceRow } from '@shellwego/store';
import { agentGeneration, canaryCount, planApp, replaceRequested, routeBackends } from './plan.ts';
import type { PlanDeployment, PlanInput } from './plan.ts';

let seq = 0;
function inst(p: Partial<InstanceRow> & { id: string }): InstanceRow {
  return {
    appId: 'a', organizationId: 'o', releaseId: 'r1', releaseVersion: 1, processType: 'web', index: 1, nodeId: 'n1',
    desired: 'running', state: 'running', exitCode: null, signal: null, oomKilled: false, restarts: 0, address: `10.0.0.${++seq}:5000`,
    startedAt: null, restartGeneration: 0, lastLog: [], createdAt: `2026-01-01T00:00:${String(seq % 60).padStart(2, '0')}.000Z`, updatedAt: '', stopAfter: null, placement: null, ...p,
  };
}
const olds = (n: number, extra: Partial<InstanceRow> = {}) => Array.from({ length: n }, (_, k) => inst({ id: `o${k + 1}`, index: k + 1, ...extra }));
const news = (n: number, extra: Partial<InstanceRow> = {}) => Array.from({ length: n }, (_, k) => inst({ id: `n${k + 1}`, index: k + 1, releaseId: 'r2', releaseVersion: 2, ...extra }));
const deployment = (strategy: DeployStrategy, settings: Partial<DeploySettingsT> = {}, extra: Partial<PlanDeployment> = {}): PlanDeployment =>
  ({ strategy, state: 'in_progress', step: 0, settings: { ...DEFAULT_DEPLOY_SETTINGS, strategy, ...settings }, ...extra });

function plan(p: Partial<PlanInput> & Pick<PlanInput, 'instances'>) {
  return planApp({
    now: Date.parse('2026-01-01T00:10:00.000Z'), targetReleaseId: 'r2', processTypes: { web: 'node s.js', worker: 'node w.js' },
    formation: [{ type: 'web', quantity: 3 }], deployment: null, settings: DEFAULT_DEPLOY_SETTINGS, ...p,
  });
}

test('steady state: creates the formation at once, nothing else to do once it runs', () => {
  const p = plan({ targetReleaseId: 'r1', formation: [{ type: 'web', quantity: 2 }, { type: 'worker', quantity: 1 }], instances: [] });
  assert.deepEqual(p.create, [{ type: 'web', index: 1 }, { type: 'web', index: 2 }, { type: 'worker', index: 1 }]);
  const done = plan({ targetReleaseId: 'r1', formation: [{ type: 'web', quantity: 2 }], instances: olds(2) });
  assert.deepEqual([done.create, done.drain, done.stop, done.progress.complete], [[], [], [], true]);
});

test('scaling down drains the highest indexes of web, stops workers at once', () => {
  const p = plan({
    targetReleaseId: 'r1', formation: [{ type: 'web', quantity: 1 }, { type: 'worker', quantity: 0 }],
    instances: [...olds(2), inst({ id: 'w1', processType: 'worker' })],
  });
  assert.deepEqual(p.drain, ['o2']);
  assert.deepEqual(p.stop, ['w1']);
});

test('drained instances are stopped once their drain time has passed; stopped rows are forgotten', () => {
  const p = plan({
    targetReleaseId: 'r1', formation: [{ type: 'web', quantity: 1 }],
    instances: [
      inst({ id: 'o1' }),
      inst({ id: 'd-late', index: 2, stopAfter: '2026-01-01T00:09:59.000Z' }),
      inst({ id: 'd-early', index: 3, stopAfter: '2026-01-01T00:10:30.000Z' }),
      inst({ id: 'gone', index: 4, desired: 'stopped', state: 'stopped' }),
    ],
  });
  assert.deepEqual(p.stop, ['d-late']);
  assert.deepEqual(p.forget, ['gone']);
  assert.deepEqual(p.create, []);
});

test('rolling (surge 1, unavailable 0): one new at a time, an old one leaves only when a new one is ready', () => {
  const d = deployment('rolling');
  // Start: 3 old ready → one new instance, nothing stopped.
  let p = plan({ deployment: d, instances: olds(3) });
  assert.deepEqual([p.create, p.drain, p.stop], [[{ type: 'web', index: 1 }], [], []]);
  // The new one is not ready yet: wait (batch 1 in flight).
  p = plan({ deployment: d, instances: [...olds(3), ...news(1, { state: 'starting' })] });
  assert.deepEqual([p.create, p.drain], [[], []]);
  // Ready: the highest old index drains, and the next new one starts.
  p = plan({ deployment: d, instances: [...olds(3), ...news(1)] });
  assert.deepEqual(p.drain, ['o3']);
  assert.deepEqual(p.create, [{ type: 'web', index: 2 }]);
  assert.equal(p.progress.complete, false);
  // All new ready, old drained: complete.
  p = plan({ deployment: d, instances: [...olds(3, { stopAfter: '2026-01-01T00:10:01.000Z' }), ...news(3)] });
  assert.deepEqual([p.create, p.drain, p.stop, p.progress.complete], [[], [], [], true]);
});

test('rolling never has fewer ready instances than the formation minus maxUnavailable', () => {
  for (const [surge, unavailable, batch] of [[1, 0, 1], [2, 0, 2], [0, 1, 1], [1, 1, 3], [3, 0, 3]]) {
    const d = deployment('rolling', { maxSurge: surge, maxUnavailable: unavailable, batchSize: batch });
    // Simulate: every pass applies the plan; created instances become ready on the following pass.
    let rows = olds(4);
    let id = 0;
    for (let pass = 0; pass < 40; pass++) {
      const p = plan({ deployment: d, formation: [{ type: 'web', quantity: 4 }], instances: rows });
      const gone = new Set([...p.drain, ...p.stop]);
      rows = rows.filter((r) => !gone.has(r.id)).map((r) => ({ ...r, state: 'running' as const }));
      // `complete` means: once this plan is applied, the rollout is done.
      if (p.progress.complete) break;
      const readyNow = rows.filter((r) => r.state === 'running').length;
      assert.ok(readyNow >= 4 - unavailable, `surge ${surge} unavailable ${unavailable}: ${readyNow} ready on pass ${pass}`);
      assert.ok(rows.length + p.create.length <= 4 + surge, `surge ${surge}: ${rows.length + p.create.length} instances`);
      for (const c of p.create) rows.push(inst({ id: `x${++id}`, index: c.index, releaseId: 'r2', state: 'starting' }));
    }
    const end = plan({ deployment: d, formation: [{ type: 'web', quantity: 4 }], instances: rows });
    assert.equal(end.progress.complete, true, `surge ${surge} unavailable ${unavailable} finished`);
    assert.deepEqual(rows.map((r) => r.releaseId), ['r2', 'r2', 'r2', 'r2']);
  }
});

test('rolling: a crashed new instance does not let old ones go; not-ready old ones are stopped first', () => {
  const d = deployment('rolling');
  const p = plan({ deployment: d, instances: [...olds(2), inst({ id: 'o3', index: 3, state: 'crashed' }), ...news(1, { state: 'crashed' })] });
  assert.deepEqual(p.stop, ['o3']);
  assert.deepEqual(p.drain, []);
});

test('recreate: all old go first, then all new start together', () => {
  const d = deployment('recreate');
  let p = plan({ deployment: d, instances: olds(3) });
  assert.deepEqual([p.drain.sort(), p.create], [['o1', 'o2', 'o3'], []]);
  p = plan({ deployment: d, instances: olds(3, { stopAfter: '2026-01-01T00:10:05.000Z' }) });
  assert.deepEqual(p.create, [], 'waits while old instances drain');
  p = plan({ deployment: d, instances: olds(3, { desired: 'stopped', state: 'stopping' }) });
  assert.equal(p.create.length, 3);
});

test('blue-green: all green start at once; traffic stays blue until all green are ready, then switches whole', () => {
  const d = deployment('blue-green');
  let p = plan({ deployment: d, instances: olds(3) });
  assert.equal(p.create.length, 3);
  assert.deepEqual(p.drain, []);
  const half = [...olds(3), ...news(2), inst({ id: 'n3', index: 3, releaseId: 'r2', state: 'starting' })];
  p = plan({ deployment: d, instances: half });
  assert.deepEqual(p.drain, []);
  assert.deepEqual(routeBackends({ targetReleaseId: 'r2', instances: half, deployment: d }).map((b) => b.instanceId), ['o1', 'o2', 'o3']);
  const green = [...olds(3), ...news(3)];
  p = plan({ deployment: d, instances: green });
  assert.deepEqual(p.drain.sort(), ['o1', 'o2', 'o3']);
  assert.deepEqual(routeBackends({ targetReleaseId: 'r2', instances: green, deployment: d }).map((b) => b.instanceId), ['n1', 'n2', 'n3']);
});

test('canary: runs its share of instances, weights traffic to the step, promotes to a full rollout', () => {
  const d = deployment('canary', { canarySteps: [10, 50] });
  let p = plan({ deployment: d, formation: [{ type: 'web', quantity: 4 }], instances: olds(4) });
  assert.deepEqual(p.create, [{ type: 'web', index: 1 }]);
  const rows = [...olds(4), ...news(1)];
  p = plan({ deployment: d, formation: [{ type: 'web', quantity: 4 }], instances: rows });
  assert.deepEqual([p.create, p.drain, p.stop], [[], [], []]);
  const backends = routeBackends({ targetReleaseId: 'r2', instances: rows, deployment: d });
  const total = (ids: string) => backends.filter((b) => b.instanceId.startsWith(ids)).reduce((s, b) => s + (b.weight ?? 1), 0);
  assert.equal(total('n') / (total('n') + total('o')), 0.1);
  // Step 2 (50%): two canaries.
  p = plan({ deployment: { ...d, step: 1 }, formation: [{ type: 'web', quantity: 4 }], instances: rows });
  assert.deepEqual(p.create, [{ type: 'web', index: 2 }]);
  // Promoted: the rest start, old ones leave as new ones are ready.
  p = plan({ deployment: { ...d, step: 2 }, formation: [{ type: 'web', quantity: 4 }], instances: [...olds(4), ...news(2)] });
  assert.equal(p.create.length, 2);
  assert.equal(p.drain.length, 2);
  assert.deepEqual(routeBackends({ targetReleaseId: 'r2', instances: rows, deployment: { ...d, step: 2 } }).every((b) => b.weight === undefined), true);
  assert.equal(canaryCount(10, 10), 1);
  assert.equal(canaryCount(10, 25), 3);
  assert.equal(canaryCount(1, 50), 1);
});

test('rolling back: the previous release comes back at once, the failed one leaves as soon as it is replaced', () => {
  const d = deployment('rolling', {}, { state: 'rolling_back' });
  // Target is the old release again (r1); r2 instances are the "old" ones now.
  const rows = [...olds(2), inst({ id: 'n1', index: 3, releaseId: 'r2', state: 'crashed' })];
  const p = plan({ targetReleaseId: 'r1', deployment: d, instances: rows });
  assert.deepEqual(p.create, [{ type: 'web', index: 3 }]);
  assert.deepEqual(p.stop, ['n1']);
});

test('release phase pending: the deployer targets the old release, so nothing changes', () => {
  const p = plan({ targetReleaseId: 'r1', deployment: deployment('rolling', {}, { state: 'pending' }), instances: olds(3) });
  assert.deepEqual([p.create, p.drain, p.stop, p.progress.complete], [[], [], [], true]);
});

test('draining and not-ready instances get no traffic', () => {
  const rows = [inst({ id: 'a' }), inst({ id: 'b', stopAfter: '2026-01-01T00:11:00.000Z' }), inst({ id: 'c', state: 'starting' }), inst({ id: 'd', state: 'unhealthy' })];
  assert.deepEqual(routeBackends({ targetReleaseId: 'r1', instances: rows, deployment: null }).map((b) => b.instanceId), ['a']);
});

test('process types missing from the release are not run; no release: nothing runs', () => {
  const p = plan({ targetReleaseId: 'r1', processTypes: { web: 'x' }, formation: [{ type: 'web', quantity: 1 }, { type: 'worker', quantity: 2 }], instances: [] });
  assert.deepEqual(p.create, [{ type: 'web', index: 1 }]);
  const none = plan({ targetReleaseId: null, processTypes: {}, instances: olds(1) });
  assert.deepEqual([none.create, none.drain], [[], ['o1']]);
});

test('drain: instances on a leaving node are replaced elsewhere first, then drained (no downtime)', () => {
  const onN1 = olds(2, { releaseId: 'r2', releaseVersion: 2 });
  const leaving = new Set(['n1']);
  const formation = [{ type: 'web', quantity: 2 }];
  // Steady state (no deployment): rolling limits (surge 1, unavailable 0) — one replacement first, nothing stops.
  let p = plan({ targetReleaseId: 'r2', formation, instances: onN1, leavingNodes: leaving });
  assert.deepEqual([p.create, p.drain, p.stop], [[{ type: 'web', index: 1 }], [], []]);
  // Nowhere to go (the replacement stays pending): the old instances keep running.
  const pending = inst({ id: 'p1', index: 1, releaseId: 'r2', releaseVersion: 2, nodeId: null, state: 'pending', address: null });
  p = plan({ targetReleaseId: 'r2', formation, instances: [...onN1, pending], leavingNodes: leaving });
  assert.deepEqual([p.create, p.drain, p.stop], [[], [], []]);
  // The replacement is ready on n2: one old instance drains and the next replacement starts.
  const moved = inst({ id: 'm1', index: 1, releaseId: 'r2', releaseVersion: 2, nodeId: 'n2' });
  p = plan({ targetReleaseId: 'r2', formation, instances: [...onN1, moved], leavingNodes: leaving });
  assert.equal(p.drain.length, 1);
  assert.deepEqual(p.create, [{ type: 'web', index: 2 }]);
  // Without a leaving node the same instances are current: nothing to do.
  p = plan({ targetReleaseId: 'r2', formation, instances: onN1 });
  assert.deepEqual([p.create, p.drain, p.stop], [[], [], []]);
});

test('restart: instances marked for replacement are replaced one by one like a rolling deploy', () => {
  const marked = olds(3, { restartGeneration: -1 });
  let p = plan({ targetReleaseId: 'r1', instances: marked });
  assert.deepEqual([p.create, p.drain, p.stop], [[{ type: 'web', index: 1 }], [], []]);
  const withNew = [...marked, inst({ id: 'fresh1', index: 1 })];
  p = plan({ targetReleaseId: 'r1', instances: withNew });
  assert.deepEqual(p.drain, ['o3']);
  assert.deepEqual(p.create, [{ type: 'web', index: 2 }]);
  // The marker keeps the generation the agent runs, so marking never restarts a process in place.
  assert.deepEqual([replaceRequested(0), replaceRequested(3), replaceRequested(-4)], [-1, -4, -4]);
  assert.deepEqual([agentGeneration(-1), agentGeneration(-4), agentGeneration(2)], [0, 3, 2]);
  // Scaling up at the same time: the 2 slots that replace nothing start at once.
  p = plan({ targetReleaseId: 'r1', formation: [{ type: 'web', quantity: 5 }], instances: marked });
  assert.equal(p.create.length, 2);
});

test('volumes: instances on their volume node are never replaced for leaving it; those elsewhere are (even with maxUnavailable)', () => {
  const formation = [{ type: 'web', quantity: 2 }];
  const settings = { ...DEFAULT_DEPLOY_SETTINGS, maxUnavailable: 1 };
  const onN1 = olds(2, { releaseId: 'r2', releaseVersion: 2 });
  // n1 drains, but web's volume lives there: nothing to create, nothing to stop.
  const held = plan({ targetReleaseId: 'r2', formation, instances: onN1, settings, leavingNodes: new Set(['n1']), pinned: new Map([['web', 'n1']]) });
  assert.deepEqual([held.create, held.drain, held.stop, held.progress.complete], [[], [], [], true]);
  // Without the volume the same drain replaces them (the existing behaviour).
  assert.ok(plan({ targetReleaseId: 'r2', formation, instances: onN1, settings, leavingNodes: new Set(['n1']) }).create.length > 0);
  // An instance of the type on another node than its volume is replaced (onto the volume's node), not kept.
  const stray = [inst({ id: 's1', index: 1, releaseId: 'r2', nodeId: 'n2' }), inst({ id: 's2', index: 2, releaseId: 'r2', nodeId: 'n1' })];
  const p = plan({ targetReleaseId: 'r2', formation, instances: stray, pinned: new Map([['web', 'n1']]) });
  assert.deepEqual(p.create, [{ type: 'web', index: 1 }]);
  // A waiting (unplaced) instance counts as the type's own: it is not replaced while it waits for the node.
  const waiting = plan({ targetReleaseId: 'r2', formation, instances: [inst({ id: 'w', index: 1, releaseId: 'r2', nodeId: null, state: 'pending' }), stray[1]], pinned: new Map([['web', 'n1']]) });
  assert.deepEqual([waiting.create, waiting.stop], [[], []]);
});
