import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LogStore } from './logs.ts';

test('logs of many apps: only recent rings stay in memory; an evicted app reads its lines back from its file, once each', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-logs-'));
  try {
    const logs = new LogStore(dir);
    const followed: string[] = [];
    const unfollow = logs.follow('app_0', (l) => followed.push(l.line));
    for (let a = 0; a < 600; a++) for (let n = 0; n < 2; n++) logs.platform(`app_${a}`, `line ${n} of ${a}`);
    const held = (logs as unknown as { rings: Map<string, unknown> }).rings;
    assert.ok(held.size <= 257, `rings in memory: ${held.size}`);
    assert.ok(held.has('app_0'), 'a followed app keeps its ring');
    assert.ok(!held.has('app_1') && held.has('app_599'));
    assert.deepEqual((await logs.recent('app_1', 10)).map((l) => l.line), ['line 0 of 1', 'line 1 of 1']);
    // Written after the eviction: in the file and read back once, not twice.
    logs.platform('app_2', 'late');
    assert.deepEqual((await logs.recent('app_2', 10)).map((l) => l.line), ['line 0 of 2', 'line 1 of 2', 'late']);
    assert.deepEqual((await logs.recent('app_599', 10)).map((l) => l.line), ['line 0 of 599', 'line 1 of 599']);
    assert.deepEqual(followed, ['line 0 of 0', 'line 1 of 0']);
    unfollow();
    await logs.flush();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
