// One-off sessions on the control plane side: input checks, the run query, line splitting, node
// choice, and the bus protocol against a scripted agent (a fake of the layer below, on a real
// in-process bus and a real SQLite store).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { newId, subjects } from '@shellwego/core';
import type { OneOffInputMessage, OneOffOutputMessage, OneOffStartMessage } from '@shellwego/core';
import { InProcessBus } from '@shellwego/bus';
import { openSqliteStore } from '@shellwego/store';
import type { NodeRow } from '@shellwego/store';
import type { ControlPlaneContext } from './context.ts';
import { EventRecorder } from './events.ts';
import { LineSplitter, pickNode, runToCompletion, startOneOff, validateOneOffRequest } from './oneoff.ts';
import { parseRunQuery } from './run-ws.ts';
import { FileKeyProvider, SecretBox } from './secrets.ts';

test('bad one-off requests get a 400 that names the problem', () => {
  assert.doesNotThrow(() => validateOneOffRequest({ command: 'bash', cols: 80, rows: 24, env: { A_B: 'x' } }));
  for (const [req, code] of [
    [{ command: '  ' }, 'invalid_command'],
    [{ command: 'a\0b' }, 'invalid_command'],
    [{ command: 'x', cols: 0 }, 'invalid_terminal_size'],
    [{ command: 'x', rows: 1.5 }, 'invalid_terminal_size'],
    [{ command: 'x', env: { 'BAD-KEY': 'v' } }, 'invalid_env'],
  ] as const) {
    assert.throws(() => validateOneOffRequest(req), (e: { status: number; code: string }) => e.status === 400 && e.code === code);
  }
});

test('the run query: command, tty, size, repeated env; bad values are 400s', () => {
  const q = parseRunQuery(new URLSearchParams('command=echo+%24X&tty=0&cols=120&rows=40&env=X%3Da%3Db&env=Y%3D'));
  assert.deepEqual(q, { command: 'echo $X', tty: false, cols: 120, rows: 40, env: { X: 'a=b', Y: '' }, release: undefined });
  assert.equal(parseRunQuery(new URLSearchParams('command=bash')).tty, true);
  for (const bad of ['', 'command=x&tty=yes', 'command=x&cols=-1', 'command=x&env=NOVALUE', 'command=x&env=%3Dv']) {
    assert.throws(() => parseRunQuery(new URLSearchParams(bad)), (e: { status: number }) => e.status === 400, bad);
  }
});

test('output is split into lines, across chunks, with a trailing partial line at the end', () => {
  const lines: string[] = [];
  const s = new LineSplitter((l) => lines.push(l));
  s.push(Buffer.from('one\r\ntw'));
  s.push(Buffer.from('o\nthr'));
  s.push(Buffer.from([0xc3])); // a UTF-8 sequence split between chunks
  s.push(Buffer.from([0xa9, 0x0a]));
  s.push(Buffer.from('tail'));
  s.end();
  assert.deepEqual(lines, ['one', 'two', 'thré', 'tail']);
});

test('only ready nodes with a recent heartbeat are picked', () => {
  const now = Date.parse('2026-01-01T00:01:00Z');
  const node = (id: string, state: NodeRow['state'], seen: string | null): NodeRow => ({ id, name: id, state, isolation: 'sandbox', cpus: 1, memoryMb: 1024, lastHeartbeatAt: seen, createdAt: seen ?? '', diskMb: null, agentLabels: {}, labels: {}, taints: [], operatorState: null });
  assert.equal(pickNode([node('a', 'down', '2026-01-01T00:00:59Z'), node('b', 'ready', '2026-01-01T00:00:00Z')], now), null);
  assert.equal(pickNode([node('a', 'ready', '2026-01-01T00:00:59Z'), node('b', 'ready', null)], now)?.id, 'a');
});

/** A control-plane context on an in-memory store with one deployed app and one ready node. */
async function setup() {
  const store = await openSqliteStore(':memory:');
  const bus = new InProcessBus();
  const secrets = new SecretBox(FileKeyProvider.fromKey(Buffer.alloc(32, 3)), store);
  const org = await store.organizations.create({ id: newId('org'), name: 'acme' });
  const app = await store.apps.create({ id: newId('app'), organizationId: org.id, name: 'web-app', plan: 'standard' });
  const build = await store.builds.create({ id: newId('bld'), appId: app.id, organizationId: org.id, sourceDigest: 'a'.repeat(64), createdBy: null });
  const release = await store.releases.create({
    id: newId('rel'), appId: app.id, organizationId: org.id, buildId: build.id, description: 'test', processTypes: { web: 'node server.js' },
    artifactDigest: 'b'.repeat(64), configSealed: await secrets.sealJson(app, { SOMECONFIG: 'secret-value' }), configKeys: ['SOMECONFIG'], createdBy: null,
  });
  await store.apps.update(org.id, app.id, { currentReleaseId: release.id });
  await store.nodes.upsert({ id: 'nod_1', name: 'n1', state: 'ready', isolation: 'sandbox', cpus: 1, memoryMb: 1024, lastHeartbeatAt: new Date().toISOString() });
  const logger = pino({ level: 'silent' });
  const cp = { store, bus, secrets, events: new EventRecorder(store, bus), logger } as unknown as ControlPlaneContext;
  return { cp, store, bus, org, app, release };
}

test('a session starts on the node with the release env, relays input, and ends with the exit', async () => {
  const { cp, store, bus, org, app, release } = await setup();
  const starts: OneOffStartMessage[] = [];
  const inputs: OneOffInputMessage[] = [];
  bus.subscribe<OneOffStartMessage>(subjects.oneOffStart('nod_1'), async (m) => {
    starts.push(m);
    bus.subscribe<OneOffInputMessage>(subjects.oneOffInput('nod_1', m.sessionId), async (i) => {
      inputs.push(i);
      const out = (x: OneOffOutputMessage) => bus.publish(subjects.oneOffOutput('nod_1', m.sessionId), x);
      if (i.type === 'data') await out({ type: 'output', stream: 'stdout', data: i.data });
      if (i.type === 'kill') await out({ type: 'exit', exitCode: 137, signal: 'SIGKILL' });
    });
    await bus.publish(subjects.oneOffOutput('nod_1', m.sessionId), { type: 'started' });
    await bus.publish(subjects.oneOffOutput('nod_1', m.sessionId), { type: 'output', stream: 'stderr', data: Buffer.from('early\n').toString('base64') });
  });
  const session = await startOneOff(cp, { organizationId: org.id, appId: 'web-app', command: 'bash', tty: true, cols: 100, rows: 30, env: { EXTRA: '1' }, by: 'dev@example.com', idleTimeoutMs: 1500 });
  const got: string[] = [];
  await new Promise((r) => setTimeout(r, 50));
  session.onOutput((c, stream) => got.push(`${stream}:${c.toString()}`));
  session.write('hello');
  session.resize(120, 40);
  session.resize(0, 40); // ignored
  session.kill();
  assert.deepEqual(await session.exited, { exitCode: 137, signal: 'SIGKILL' });
  assert.deepEqual(got, ['stderr:early\n', 'stdout:hello']);
  const m = starts[0];
  assert.equal(m.tty, true);
  assert.equal(m.cols, 100);
  assert.equal(m.spec.instanceId, m.sessionId);
  assert.equal(m.spec.releaseId, release.id);
  assert.equal(m.spec.env.SOMECONFIG, 'secret-value');
  assert.equal(m.spec.env.EXTRA, '1');
  assert.deepEqual(inputs.filter((i) => i.type !== 'keepalive').map((i) => i.type), ['data', 'resize', 'kill']);
  // Events say who ran what, never the values.
  await new Promise((r) => setTimeout(r, 50));
  const events = await store.events.list(org.id, { appId: app.id });
  assert.deepEqual(events.map((e) => e.message).sort(), ['run finished by dev@example.com: bash (killed by SIGKILL)', 'run started by dev@example.com: bash']);
  assert.ok(!JSON.stringify(events).includes('secret-value'));
});

test('keepalives flow while a session is open; a node that goes down ends it with an error and a kill', async () => {
  const { cp, store, bus, org } = await setup();
  const inputs: OneOffInputMessage[] = [];
  bus.subscribe<OneOffStartMessage>(subjects.oneOffStart('nod_1'), (m) => {
    bus.subscribe<OneOffInputMessage>(subjects.oneOffInput('nod_1', m.sessionId), (i) => void inputs.push(i));
    void bus.publish(subjects.oneOffOutput('nod_1', m.sessionId), { type: 'started' });
  });
  const session = await startOneOff(cp, { organizationId: org.id, appId: 'web-app', command: 'sleep 100', tty: false, idleTimeoutMs: 1500 });
  while (!inputs.some((i) => i.type === 'keepalive')) await new Promise((r) => setTimeout(r, 50));
  await store.nodes.setState('nod_1', 'down');
  const hold = setInterval(() => {}, 1000); // the session's own timers are unref'd (a server keeps the loop alive)
  const exit = await session.exited;
  clearInterval(hold);
  assert.match(exit.error ?? '', /node nod_1 went down/);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(inputs.at(-1)?.type, 'kill');
});

test('runToCompletion: lines to the callback, the exit back; refusals are clear errors', async () => {
  const { cp, bus, org, store } = await setup();
  bus.subscribe<OneOffStartMessage>(subjects.oneOffStart('nod_1'), async (m) => {
    const out = (x: OneOffOutputMessage) => bus.publish(subjects.oneOffOutput('nod_1', m.sessionId), x);
    await out({ type: 'started' });
    if (m.spec.command === 'fail-to-start') return out({ type: 'error', message: 'no such artifact' });
    await out({ type: 'output', stream: 'stdout', data: Buffer.from('migrating\nmigr').toString('base64') });
    await out({ type: 'output', stream: 'stdout', data: Buffer.from('ated\n').toString('base64') });
    await out({ type: 'output', stream: 'stderr', data: Buffer.from('warning').toString('base64') });
    await out({ type: 'exit', exitCode: 0, signal: null });
  });
  const lines: string[] = [];
  const r = await runToCompletion(cp, { organizationId: org.id, appId: 'web-app', command: 'rake db:migrate' }, (l, s) => lines.push(`${s}:${l}`));
  assert.deepEqual(r, { exitCode: 0, signal: null });
  assert.deepEqual(lines, ['stdout:migrating', 'stdout:migrated', 'stderr:warning']);
  await assert.rejects(runToCompletion(cp, { organizationId: org.id, appId: 'web-app', command: 'fail-to-start' }, () => {}), /could not run: no such artifact/);
  await assert.rejects(startOneOff(cp, { organizationId: 'org_other', appId: 'web-app', command: 'x', tty: false }), (e: { status: number }) => e.status === 404);
  await store.nodes.setState('nod_1', 'down');
  await assert.rejects(startOneOff(cp, { organizationId: org.id, appId: 'web-app', command: 'x', tty: false }), (e: { status: number; code: string }) => e.status === 503 && e.code === 'no_ready_node');
});
