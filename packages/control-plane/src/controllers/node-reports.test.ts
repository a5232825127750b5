import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { subjects } from '@shellwego/core';
import type { Store } from '@shellwego/store';
import { NodeReports, subjectNodeId } from './node-reports.ts';

/** The one store call NodeReports makes, over fixed rows; counts lookups. */
function setup() {
  const rows: Record<string, { nodeId: string | null; appId: string }> = {
    ins_a1: { nodeId: 'nod_a', appId: 'app_1' },
    ins_b1: { nodeId: 'nod_b', appId: 'app_1' },
    ins_p: { nodeId: null, appId: 'app_1' },
  };
  let lookups = 0;
  const store = { instances: { byId: async (id: string) => { lookups++; return rows[id]; } } } as unknown as Store;
  const logged: string[] = [];
  const logger = pino({ level: 'info' }, new Writable({ write(chunk, _enc, cb) { logged.push(JSON.parse(String(chunk)).msg); cb(); } }));
  return { reports: new NodeReports({ store, logger }), logged, rows, lookups: () => lookups };
}

const lines = (...ids: Array<string | null>) => ids.map((instanceId) => ({ ts: new Date().toISOString(), source: 'app' as const, instanceId, type: 'web.1', line: 'x' }));

test('the node of a subject', () => {
  assert.equal(subjectNodeId(subjects.heartbeat('nod_a')), 'nod_a');
  assert.equal(subjectNodeId(subjects.appLogs('nod_a', 'app_1')), 'nod_a');
  assert.equal(subjectNodeId('agent.heartbeat'), null);
  assert.equal(subjectNodeId('router.routes'), null);
});

test("a message is bound to its subject's node; each refusal is logged once", () => {
  const { reports, logged } = setup();
  assert.equal(reports.bound(subjects.heartbeat('nod_a'), 'nod_a', 'heartbeat'), true);
  for (let i = 0; i < 3; i++) assert.equal(reports.bound(subjects.heartbeat('nod_a'), 'nod_b', 'heartbeat'), false);
  assert.equal(reports.bound(subjects.instanceStatus('nod_a'), undefined, 'status report'), false);
  assert.equal(reports.bound('agent.heartbeat', 'nod_a', 'heartbeat'), false);
  assert.equal(logged.length, 3);
  assert.match(logged[0], /not the node of its subject: dropped/);
});

test("log lines count only for the node's own instances of that app", async () => {
  const { reports, logged, lookups } = setup();
  const logs = (node: string, app: string, ls: ReturnType<typeof lines>, appId = app) => reports.logsAllowed(subjects.appLogs(node, app), { appId, lines: ls });
  assert.equal(await logs('nod_a', 'app_1', lines('ins_a1')), true);
  assert.equal(await logs('nod_a', 'app_1', lines('ins_a1', 'ins_a1')), true);
  assert.equal(lookups(), 1, 'a verified instance is remembered');
  assert.equal(await logs('nod_a', 'app_1', lines('ins_b1')), false, "another node's instance");
  assert.equal(await logs('nod_a', 'app_1', lines('ins_a1', 'ins_b1')), false, 'one foreign line spoils the message');
  assert.equal(await logs('nod_a', 'app_2', lines('ins_a1')), false, 'another app');
  assert.equal(await logs('nod_a', 'app_1', lines('ins_a1'), 'app_2'), false, 'appId not the subject app');
  assert.equal(await logs('nod_a', 'app_1', lines('ins_nope')), false, 'no such instance');
  assert.equal(await logs('nod_a', 'app_1', lines(null)), false, 'no instance named');
  assert.equal(await logs('nod_a', 'app_1', lines('ins_p')), false, 'not placed yet');
  assert.ok(logged.every((m) => /dropped/.test(m)));
  const before = logged.length;
  await logs('nod_a', 'app_1', lines('ins_b1'));
  assert.equal(logged.length, before, 'logged once per (node, instance)');
});

test("router stats: only as the subject's node, only for instances in the route table", () => {
  const { reports, logged } = setup();
  const table = { version: 1, routes: { 'a.localhost': { appId: 'app_1', appName: 'a', backends: [{ instanceId: 'ins_a1', address: '10.0.0.2:5000' }, { instanceId: 'ins_b1', address: '10.0.0.3:5000' }] } } };
  const stats = (routerId: string, instances: Record<string, { requests: number; failed: number }>) => ({ routerId, at: new Date().toISOString(), instances });
  // Node A's router counted requests to B's instance too (routing across nodes): kept; an unknown instance is not.
  assert.deepEqual(reports.routerStats(subjects.routerStats('nod_a'), stats('nod_a', { ins_a1: { requests: 3, failed: 0 }, ins_b1: { requests: 2, failed: 2 }, ins_nope: { requests: 9, failed: 9 } }), table)?.instances,
    { ins_a1: { requests: 3, failed: 0 }, ins_b1: { requests: 2, failed: 2 } });
  // Node A claiming to be router B: dropped whole.
  assert.equal(reports.routerStats(subjects.routerStats('nod_a'), stats('nod_b', { ins_b1: { requests: 5, failed: 5 } }), table), null);
  // No table published yet: nothing counts.
  assert.deepEqual(reports.routerStats(subjects.routerStats('nod_a'), stats('nod_a', { ins_a1: { requests: 1, failed: 1 } }), null)?.instances, {});
  assert.ok(logged.some((m) => /router stats whose nodeId is not the node of its subject/.test(m)));
  assert.ok(logged.some((m) => /not in the route table: ignored/.test(m)));
});
