import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '../errors.ts';
import { parseDuration } from './nodes.ts';

test('join token validity: 90s, 30m, 1h, 7d; anything else is a usage error', () => {
  assert.deepEqual(['90s', '30m', '1h', '7d'].map(parseDuration), [90, 1800, 3600, 604_800]);
  for (const bad of ['1', 'h', '1.5h', '-1h', '1w', '']) assert.throws(() => parseDuration(bad), UsageError, bad);
});
