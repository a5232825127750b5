import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '../errors.ts';
import { parseLabelArgs, parseTaintArgs, parseToleration } from './nodes.ts';

test('node labels: key=value sets, key- removes, anything else is a usage error', () => {
  assert.deepEqual(parseLabelArgs(['zone=a', 'disk=', 'old-']), { zone: 'a', disk: '', old: null });
  for (const bad of ['zone', 'a=b=c', 'k=v:NoSchedule', '=x']) assert.throws(() => parseLabelArgs([bad]), UsageError, bad);
});

test('taints: key=value:Effect adds, key- removes; the effect is checked', () => {
  assert.deepEqual(parseTaintArgs(['gpu=true:NoSchedule', 'maint=now:NoExecute', 'old-']), {
    add: [{ key: 'gpu', value: 'true', effect: 'NoSchedule' }, { key: 'maint', value: 'now', effect: 'NoExecute' }], remove: ['old'],
  });
  assert.throws(() => parseTaintArgs(['gpu=true']), /not a taint/);
  assert.throws(() => parseTaintArgs(['gpu=true:Sometimes']), /effect must be one of NoSchedule, NoExecute/);
});

test('tolerations: key=value:Effect, or key:Effect for any value', () => {
  assert.deepEqual(parseToleration('gpu=true:NoSchedule'), { key: 'gpu', value: 'true', effect: 'NoSchedule' });
  assert.deepEqual(parseToleration('gpu:NoExecute'), { key: 'gpu', effect: 'NoExecute' });
  assert.throws(() => parseToleration('gpu'), UsageError);
});
