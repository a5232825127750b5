import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { InstanceSpec } from '@shellwego/core';
import { reconcile, replaceReason } from './reconcile.ts';
import type { ActualInstance, ActualPhase } from './reconcile.ts';

function spec(id: string, over: Partial<InstanceSpec> = {}): InstanceSpec {
  return {
    instanceId: id,
    appId: 'app_1',
    appName: 'demo',
    organizationId: 'org_1',
    releaseId: 'rel_1',
    releaseVersion: 1,
    processType: 'web',
    index: 1,
    command: 'node server.js',
    env: { A: '1', B: '2' },
    artifactDigest: 'a'.repeat(64),
    limits: { memoryMb: 256, cpus: 0.5, pids: 128 },
    port: 5000,
    restartGeneration: 0,
    ...over,
  };
}

const actual = (s: InstanceSpec, phase: ActualPhase = 'running'): ActualInstance => ({ instanceId: s.instanceId, spec: s, phase });

describe('reconcile', () => {
  it('starts what is assigned and missing', () => {
    const a = spec('ins_a');
    const b = spec('ins_b', { index: 2 });
    assert.deepEqual(reconcile([a, b], []), [
      { type: 'start', spec: a },
      { type: 'start', spec: b },
    ]);
  });

  it('stops what runs but is no longer assigned', () => {
    const a = spec('ins_a');
    const b = spec('ins_b');
    assert.deepEqual(reconcile([a], [actual(a), actual(b, 'crashed')]), [{ type: 'stop', instanceId: 'ins_b' }]);
    assert.deepEqual(reconcile([], [actual(a, 'starting')]), [{ type: 'stop', instanceId: 'ins_a' }]);
  });

  it('leaves matching instances alone, whatever their phase (crashed ones restart by themselves)', () => {
    const a = spec('ins_a');
    for (const phase of ['starting', 'running', 'crashed'] as const) assert.deepEqual(reconcile([a], [actual(a, phase)]), []);
    // A copy that only differs in key order is the same spec.
    assert.deepEqual(reconcile([{ ...a, env: { B: '2', A: '1' } }], [actual(a)]), []);
  });

  it('replaces on a new restartGeneration, release or runtime-relevant spec change', () => {
    const a = spec('ins_a');
    const restarted = { ...a, restartGeneration: 1 };
    assert.deepEqual(reconcile([restarted], [actual(a)]), [{ type: 'replace', instanceId: 'ins_a', spec: restarted, reason: 'restart' }]);
    const released = { ...a, releaseId: 'rel_2', releaseVersion: 2 };
    assert.deepEqual(reconcile([released], [actual(a)]), [{ type: 'replace', instanceId: 'ins_a', spec: released, reason: 'release' }]);
    const changed = { ...a, env: { A: '1', B: '3' } };
    assert.deepEqual(reconcile([changed], [actual(a, 'crashed')]), [{ type: 'replace', instanceId: 'ins_a', spec: changed, reason: 'spec' }]);
    // Fields that do not change the process (names, versions for display) never restart it.
    assert.equal(replaceReason(a, { ...a, appName: 'renamed', releaseVersion: 7 }), null);
  });

  it('is idempotent: once the actions took effect the same input yields nothing', () => {
    const a = spec('ins_a');
    const b = spec('ins_b', { restartGeneration: 2 });
    const first = reconcile([a, b], [actual(spec('ins_b')), actual(spec('ins_c'))]);
    assert.deepEqual(first.map((x) => x.type).sort(), ['replace', 'start', 'stop']);
    // After applying: a started, b runs its new spec (the runner reports the spec it converges to), c stopping.
    assert.deepEqual(reconcile([a, b], [actual(a, 'starting'), actual(b, 'starting'), actual(spec('ins_c'), 'stopping')]), []);
  });

  it('waits for a stop to finish before starting the same instance again', () => {
    const a = spec('ins_a');
    assert.deepEqual(reconcile([a], [actual(a, 'stopping')]), []);
    assert.deepEqual(reconcile([a], [actual(a, 'stopped')]), [{ type: 'start', spec: a }]);
  });

  it('ignores duplicate entries in one assignment (first wins)', () => {
    const a = spec('ins_a');
    assert.deepEqual(reconcile([a, { ...a, restartGeneration: 5 }], [actual(a)]), []);
    assert.deepEqual(reconcile([a, a], []), [{ type: 'start', spec: a }]);
  });

  it('does not stop what is already stopping or stopped', () => {
    assert.deepEqual(reconcile([], [actual(spec('ins_a'), 'stopping'), actual(spec('ins_b'), 'stopped')]), []);
  });
});
