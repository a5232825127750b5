import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { InstanceT } from '@shellwego/core';
import { age, bytes, instanceState, logLine, psLines, table } from './format.ts';

const NOW = Date.parse('2026-11-23T12:00:00.000Z');

function inst(over: Partial<InstanceT>): InstanceT {
  return {
    id: 'ins_01jd0000aa7k2m9q4r8s1t6v3w',
    appId: 'app_1',
    type: 'web',
    index: 1,
    releaseVersion: 3,
    nodeId: 'nod_1',
    state: 'running',
    desired: 'running',
    exitCode: null,
    signal: null,
    oomKilled: false,
    restarts: 0,
    address: '10.89.0.2:5000',
    startedAt: '2026-11-23T11:55:00.000Z',
    updatedAt: '2026-11-23T11:55:00.000Z',
    lastLog: [],
    placement: null,
    ...over,
  };
}

test('instance states say why a crash happened', () => {
  assert.equal(instanceState(inst({})), 'running');
  assert.equal(instanceState(inst({ state: 'crashed', exitCode: 3 })), 'crashed (exit 3)');
  assert.equal(instanceState(inst({ state: 'crashed', exitCode: 137, signal: 'SIGKILL', oomKilled: true })), 'crashed (SIGKILL, out of memory)');
  assert.equal(instanceState(inst({ state: 'crashed', oomKilled: true })), 'crashed (out of memory)');
  assert.equal(instanceState(inst({ state: 'crashed', signal: 'SIGSEGV' })), 'crashed (SIGSEGV)');
  assert.equal(instanceState(inst({ state: 'crashed' })), 'crashed');
  assert.equal(instanceState(inst({ state: 'stopped', exitCode: 0 })), 'stopped');
});

test('ps rows are aligned; crashed instances show their last log lines indented below', () => {
  const lines = psLines(
    [
      inst({ id: 'ins_01jd0000aaworkerrrr00002', type: 'worker', index: 1, address: null, state: 'starting', startedAt: null, updatedAt: '2026-11-23T11:59:58.000Z' }),
      inst({
        id: 'ins_01jd0000aacrashed000001',
        index: 2,
        state: 'crashed',
        exitCode: 3,
        restarts: 12,
        address: null,
        startedAt: '2026-11-21T12:00:00.000Z',
        lastLog: ['starting up', 'fatal: DATABASE_URL is not set'],
      }),
      inst({}),
    ],
    NOW,
  );
  assert.deepEqual(lines, [
    'ID        PROCESS   STATE             RELEASE  RESTARTS  ADDRESS         AGE',
    '8s1t6v3w  web.1     running           v3       0         10.89.0.2:5000  5m',
    'ed000001  web.2     crashed (exit 3)  v3       12        -               2d',
    '    starting up',
    '    fatal: DATABASE_URL is not set',
    'rrr00002  worker.1  starting          v3       0         -               2s',
  ]);
  assert.deepEqual(psLines([], NOW), []);
});

test('table pads every column but the last, without trailing spaces', () => {
  assert.deepEqual(table(['A', 'LONGER'], [['xxxx', ''], ['y', 'z']]), ['A     LONGER', 'xxxx', 'y     z']);
});

test('ages, sizes and log lines', () => {
  assert.equal(age('2026-11-23T11:59:59.000Z', NOW), '1s');
  assert.equal(age('2026-11-23T09:00:00.000Z', NOW), '3h');
  assert.equal(age('2026-01-01T00:00:00.000Z', NOW), '2026-01-01');
  assert.equal(age(null, NOW), '-');
  assert.equal(bytes(512), '512 B');
  assert.equal(bytes(1536), '1.5 KB');
  assert.equal(bytes(25 * 1024 * 1024), '25 MB');
  assert.equal(logLine({ ts: '2026-11-23T12:00:00.000Z', source: 'app', instanceId: 'i', type: 'web.1', line: 'listening' }), '2026-11-23T12:00:00.000Z app[web.1]: listening');
  assert.equal(logLine({ ts: '2026-11-23T12:00:00.000Z', source: 'platform', instanceId: null, type: null, line: 'Build started' }), '2026-11-23T12:00:00.000Z platform: Build started');
});
