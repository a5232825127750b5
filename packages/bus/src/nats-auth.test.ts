/**
 * NATS auth (nats-auth.ts): the permission lists on their own, then a real nats-server in operator
 * mode with the config include initNatsAuth writes: node credentials reach their own subjects and
 * nothing of another node's; JetStream consumers are per node; a nats-server killed and restarted
 * on its store loses no command, with authentication on; a revoked user is cut off at once and
 * stays refused after nats-server restarts.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'nats';
import { subjects } from '@shellwego/core';
import { NatsBus, defaultDurableStreams, subjectMatches } from './index.ts';
import type { NatsBusOptions } from './index.ts';
import {
  credsConnection, credsNodeId, credsUserKey, encodeAccountJwt, initNatsAuth, issueNodeCreds, loadAccountSigner, loadOperatorSigner, nodeInboxPrefix, nodePermissions, pushAccountJwt,
} from './nats-auth.ts';
import type { AccountSigner, NatsAuthInit } from './nats-auth.ts';
import { NatsServerProcess, until } from './testing.ts';

/** What NATS would decide for `subject` under an allow/deny pair (deny wins). */
const permits = (p: { allow: string[]; deny: string[] }, subject: string) =>
  p.allow.some((a) => subjectMatches(a, subject)) && !p.deny.some((d) => subjectMatches(d, subject));

test('node permissions: its own subjects only, nothing another node publishes or receives', () => {
  const p = nodePermissions('nod_a');
  // Its reports and its one-off output.
  for (const s of [subjects.heartbeat('nod_a'), subjects.instanceStatus('nod_a'), subjects.appLogs('nod_a', 'app_1'), subjects.oneOffOutput('nod_a', 'run-1')]) {
    assert.equal(permits(p.pub, s), true, `may publish ${s}`);
  }
  // Nothing in another node's name, and not the commands meant for itself.
  for (const s of [subjects.heartbeat('nod_b'), subjects.instanceStatus('nod_b'), subjects.appLogs('nod_b', 'app_1'), subjects.assignments('nod_a'),
    subjects.oneOffStart('nod_a'), subjects.oneOffInput('nod_a', 'run-1'), subjects.assignments('nod_b'), subjects.routes, subjects.certificates,
    subjects.buildRequested, subjects.buildResult('b1'), subjects.events('org_1'), subjects.reconcileRequest, '$JS.API.STREAM.CREATE.SHELLWEGO_ASSIGNMENTS',
    '$JS.API.STREAM.DELETE.SHELLWEGO_ASSIGNMENTS', '$JS.API.STREAM.PURGE.SHELLWEGO_ASSIGNMENTS']) {
    assert.equal(permits(p.pub, s), false, `may not publish ${s}`);
  }
  // Router reports (as its node only) and requests.
  for (const s of [subjects.routerStats('nod_a'), subjects.routesRequest, subjects.certificatesRequest]) assert.equal(permits(p.pub, s), true, s);
  assert.equal(permits(p.pub, subjects.routerStats('nod_b')), false);
  // It reads its commands, the router tables and its own inbox.
  for (const s of [subjects.assignments('nod_a'), subjects.oneOffStart('nod_a'), subjects.oneOffInput('nod_a', 'run-1'), subjects.routes,
    subjects.certificates, subjects.acmeChallenges, `${nodeInboxPrefix('nod_a')}.abc`]) {
    assert.equal(permits(p.sub, s), true, `may subscribe ${s}`);
  }
  for (const s of [subjects.assignments('nod_b'), subjects.oneOffStart('nod_b'), subjects.oneOffInput('nod_b', 'run-1'), subjects.allHeartbeats,
    subjects.allInstanceStatus, subjects.allAppLogs, '_INBOX.abc', '_INBOX.>', `${nodeInboxPrefix('nod_b')}.abc`, 'agent.>', '>']) {
    assert.equal(permits(p.sub, s), false, `may not subscribe ${s}`);
  }
  // JetStream: only its own consumer of the assignments stream; no stream management.
  const js = p.pub.allow.filter((s) => s.startsWith('$JS.'));
  assert.ok(js.some((s) => s.startsWith('$JS.API.CONSUMER.MSG.NEXT.SHELLWEGO_ASSIGNMENTS.node-nod_a__')));
  assert.ok(js.every((s) => !s.includes('nod_b') && !s.includes('*') && !s.includes('STREAM.CREATE') && !s.includes('STREAM.UPDATE')), js.join(' '));
  assert.equal(nodePermissions('nod_b').pub.allow.some((s) => js.includes(s) && s.includes('CONSUMER')), false);
  // Without durable streams, no JetStream subject at all.
  assert.equal(nodePermissions('nod_a', []).pub.allow.some((s) => s.startsWith('$JS.')), false);
  assert.throws(() => nodePermissions('nod.a'), /subject token/);
  assert.throws(() => nodePermissions('nod_*'), /subject token/);
});

describe('nats-server in operator mode with the generated accounts', () => {
  let dir: string;
  let init: NatsAuthInit;
  let signer: AccountSigner;
  let nats: NatsServerProcess;
  const buses: NatsBus[] = [];

  const open = async (creds: string, nodeId: string | null, extra: Partial<NatsBusOptions> = {}) => {
    const bus = await NatsBus.connect({
      servers: nats.url, name: nodeId ? `node-${nodeId}` : 'cp', reconnectWaitMs: 100,
      connection: credsConnection(creds, nodeId ?? undefined),
      durable: { streams: defaultDurableStreams(), consumerName: nodeId ? `node-${nodeId}` : 'cp', createStreams: nodeId === null, publishTimeoutMs: 60_000, pullExpiresMs: 1000 },
      onError: () => {},
      ...extra,
    });
    buses.push(bus);
    return bus;
  };
  let cpCreds: string;
  let credsA: string;
  let credsB: string;
  let initSecond = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'shellwego-nats-auth-'));
    init = await initNatsAuth(join(dir, 'auth'), { resolverDir: join(dir, 'jwt') });
    initSecond = Math.floor(Date.now() / 1000);
    await writeFile(join(dir, 'nats-server.conf'), 'include "auth/nats-auth.conf"\n');
    nats = await NatsServerProcess.start({ jetstream: true, config: join(dir, 'nats-server.conf') });
    signer = await loadAccountSigner(init.files.accountSigner);
    cpCreds = await readFile(init.files.controlPlaneCreds, 'utf8');
    credsA = await issueNodeCreds(signer, 'nod_a');
    credsB = await issueNodeCreds(signer, 'nod_b');
  });
  // Each test's connections go: a node's bus left open would pull from the next test's consumer.
  afterEach(async () => {
    for (const b of buses.splice(0)) await b.close();
  });
  after(async () => {
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('init writes secrets 0600 and refuses to run twice over the same directory', async () => {
    for (const f of [init.files.accountSigner, init.files.controlPlaneCreds, init.files.operatorSeed]) assert.equal((await stat(f)).mode & 0o777, 0o600, f);
    assert.equal((await stat(init.dir)).mode & 0o777, 0o700);
    for (const f of [init.files.operatorSigner, init.files.systemCreds]) assert.equal((await stat(f)).mode & 0o777, 0o600, f);
    assert.match(await readFile(init.files.serverConfig, 'utf8'), new RegExp(`resolver: \\{ type: full, dir: "${join(dir, 'jwt')}", allow_delete: false \\}`));
    await assert.rejects(initNatsAuth(init.dir), /exists: NATS auth was set up/);
    assert.equal(credsNodeId(credsA), 'nod_a');
    assert.equal(credsNodeId(cpCreds), null);
  });

  test('without credentials the server refuses the connection', async () => {
    await assert.rejects(connect({ servers: nats.url, reconnect: false }), /Authorization Violation/i);
    // A user signed by another operator's account is refused too.
    const other = await initNatsAuth(join(dir, 'other'), { resolverDir: join(dir, 'other-jwt') });
    await assert.rejects(connect({ servers: nats.url, reconnect: false, ...credsConnection(await issueNodeCreds(await loadAccountSigner(other.files.accountSigner), 'nod_a'), 'nod_a') }), /Authorization Violation/i);
  });

  test("a node gets its own assignments (JetStream) but none of another node's", async () => {
    const cp = await open(cpCreds, null);
    const a = await open(credsA, 'nod_a');
    const gotA: unknown[] = [];
    const stolen: unknown[] = [];
    a.subscribe(subjects.assignments('nod_a'), (m) => void gotA.push(m));
    // Through JetStream (its consumer name is not node A's) and through core NATS.
    a.subscribe(subjects.assignments('nod_b'), (m) => void stolen.push(m));
    const core = await connect({ servers: nats.url, ...credsConnection(credsA, 'nod_a') });
    const errors: string[] = [];
    void core.closed().then((e) => e && errors.push(String(e)));
    core.subscribe(subjects.assignments('nod_b'), { callback: (err, m) => (err ? errors.push(String(err)) : stolen.push(m)) });
    core.subscribe('_INBOX.>', { callback: (err, m) => (err ? errors.push(String(err)) : stolen.push(m)) });
    await core.flush().catch(() => {});
    const b = await open(credsB, 'nod_b');
    const gotB: unknown[] = [];
    b.subscribe(subjects.assignments('nod_b'), (m) => void gotB.push(m));
    await b.drain();
    await until('node A has its consumer', async () => (await (await cp.nc.jetstreamManager()).consumers.list('SHELLWEGO_ASSIGNMENTS').next()).some((c) => c.name.startsWith('node-nod_a__')));
    await cp.publish(subjects.assignments('nod_b'), { nodeId: 'nod_b', generation: 1, instances: [{ env: { SECRET: 'b' } }] });
    await cp.publish(subjects.assignments('nod_a'), { nodeId: 'nod_a', generation: 1, instances: [] });
    await until('node A got its assignments', () => gotA.length === 1);
    await until('node B got its assignments', () => gotB.length === 1);
    assert.deepEqual(stolen, []);
    assert.ok(errors.some((e) => /permissions violation/i.test(e)), errors.join('\n'));
    const names = (await (await cp.nc.jetstreamManager()).consumers.list('SHELLWEGO_ASSIGNMENTS').next()).map((c) => c.name);
    assert.equal(names.filter((n) => n.startsWith('node-nod_a__')).length, 1, names.join(' '));
    await core.close().catch(() => {});
  });

  test("a node cannot publish another node's heartbeat or status, nor commands; its own arrive", async () => {
    const cp = await open(cpCreds, null);
    const a = await open(credsA, 'nod_a');
    const seen: string[] = [];
    cp.subscribe(subjects.allHeartbeats, (_m, s) => void seen.push(s));
    cp.subscribe(subjects.allInstanceStatus, (_m, s) => void seen.push(s), { queue: 'control-plane' });
    cp.subscribe(subjects.oneOffStart('nod_b'), (_m, s) => void seen.push(s));
    cp.subscribe(subjects.assignments('nod_a'), (_m, s) => void seen.push(s));
    await cp.drain();
    const beat = { nodeId: 'nod_b', name: 'b', isolation: 'none', capacity: { cpus: 1, memoryMb: 1 }, instances: 0, at: new Date().toISOString() };
    await a.publish(subjects.heartbeat('nod_b'), beat);
    await a.publish(subjects.oneOffStart('nod_b'), {});
    // Commands in its own name are the control plane's to send (plain publishes: the server drops them).
    const raw = await connect({ servers: nats.url, ...credsConnection(credsA, 'nod_a') });
    raw.publish(subjects.assignments('nod_a'), JSON.stringify({ nodeId: 'nod_a', generation: 9, instances: [] }));
    raw.publish(subjects.oneOffStart('nod_a'), JSON.stringify({}));
    await raw.flush();
    await raw.close();
    // Nor may it create or change streams.
    await assert.rejects(NatsBus.connect({ servers: nats.url, name: 'x', connection: credsConnection(credsA, 'nod_a'), durable: { streams: defaultDurableStreams(), publishTimeoutMs: 1000 } }), /stream/i);
    const status = { nodeId: 'nod_a', instanceId: 'ins_1', state: 'running' };
    await a.publish(subjects.heartbeat('nod_a'), { ...beat, nodeId: 'nod_a' });
    await a.publish(subjects.instanceStatus('nod_a'), status); // stored by JetStream (acked to node A's own inbox)
    await until("node A's heartbeat and status arrived", () => seen.includes(subjects.heartbeat('nod_a')) && seen.includes(subjects.instanceStatus('nod_a')));
    await a.drain();
    await cp.drain();
    assert.deepEqual(seen.sort(), [subjects.heartbeat('nod_a'), subjects.instanceStatus('nod_a')]);
    assert.match(nats.output, /Publish Violation.*agent\.nod_b\.heartbeat/);
  });

  test('nats-server killed (-9) while an assignment for an absent node is in flight: delivered after the restart', async () => {
    const cp = await open(cpCreds, null);
    const first = await open(credsA, 'nod_a');
    const got: Array<{ generation: number }> = [];
    const sub = first.subscribe<{ generation: number }>(subjects.assignments('nod_a'), (m) => void got.push(m));
    await first.drain();
    // The node goes away (its consumer stays on the server), then nats-server dies.
    sub.unsubscribe();
    await first.close();
    await nats.kill();
    // Published while nats-server is down: publish() keeps trying until JetStream has stored it.
    let stored = false;
    const inFlight = cp.publish(subjects.assignments('nod_a'), { nodeId: 'nod_a', generation: 42, instances: [] }).then(() => { stored = true; });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(stored, false);
    await nats.boot();
    await inFlight;
    // The node comes back under the same consumer name and gets the command.
    const again = await open(credsA, 'nod_a');
    again.subscribe<{ generation: number }>(subjects.assignments('nod_a'), (m) => void got.push(m));
    await until('the assignment published during the outage arrived', () => got.some((m) => m.generation === 42), 30_000);
  });

  test("a revoked user's connection is closed at once and its creds refused; other nodes keep working; a restarted nats-server still refuses it", async () => {
    // JWTs carry whole seconds: at start nats-server keeps its stored account JWT over the preloaded
    // one only when it was issued in a later second (else the control plane's start-up push fixes it).
    await until('a second later than init', () => Math.floor(Date.now() / 1000) > initSecond);
    const gone = await issueNodeCreds(signer, 'nod_gone');
    const signerOp = await loadOperatorSigner(init.files.operatorSigner);
    const sys = await connect({ servers: nats.url, ...credsConnection(await readFile(init.files.systemCreds, 'utf8')) });
    // The system user may push account JWTs and nothing else.
    const sysErrors: string[] = [];
    sys.subscribe('$SYS.>', { callback: (err) => void (err && sysErrors.push(String(err))) });
    const doomed = await connect({ servers: nats.url, reconnectTimeWait: 100, ...credsConnection(gone, 'nod_gone') });
    const closed = doomed.closed();
    const b = await connect({ servers: nats.url, ...credsConnection(credsB, 'nod_b') });
    await doomed.flush();
    await pushAccountJwt(sys, await encodeAccountJwt(signerOp, { [credsUserKey(gone)]: Math.floor(Date.now() / 1000) }));
    // nats-server closes its connection (reconnecting is refused too, so the client gives up).
    assert.match(String(await closed), /Authorization Violation/i);
    await assert.rejects(connect({ servers: nats.url, reconnect: false, ...credsConnection(gone, 'nod_gone') }), /Authorization Violation/i);
    await b.flush();
    assert.equal(b.isClosed(), false);
    await b.close();
    await sys.flush().catch(() => {});
    assert.ok(sysErrors.some((e) => /permissions violation/i.test(e)), sysErrors.join('\n'));
    await sys.close();
    // An account JWT signed by another operator's key (without the revocation) changes nothing
    // (nats-server 2.9 answers "jwt updated" all the same: the effect is what counts).
    const rogue = await initNatsAuth(join(dir, 'rogue'), { resolverDir: join(dir, 'rogue-jwt') });
    const sys2 = await connect({ servers: nats.url, ...credsConnection(await readFile(init.files.systemCreds, 'utf8')) });
    await pushAccountJwt(sys2, await encodeAccountJwt({ ...(await loadOperatorSigner(rogue.files.operatorSigner)), account: signerOp.account }, {}));
    await assert.rejects(connect({ servers: nats.url, reconnect: false, ...credsConnection(gone, 'nod_gone') }), /Authorization Violation/i);
    await sys2.close();

    // nats-server restarted from its config file: the resolver directory kept the newer account JWT
    // (the older preloaded one does not replace it), so the revoked user stays out.
    await nats.kill();
    await nats.boot();
    await assert.rejects(connect({ servers: nats.url, reconnect: false, ...credsConnection(gone, 'nod_gone') }), /Authorization Violation/i);
    // With that directory lost, only the preloaded JWT is left: the user gets in until the control
    // plane pushes the store's list again (as it does at start and after every reconnect).
    await nats.kill();
    await rm(join(dir, 'jwt'), { recursive: true, force: true });
    await nats.boot();
    const back = await connect({ servers: nats.url, reconnectTimeWait: 100, ...credsConnection(gone, 'nod_gone') });
    const backClosed = back.closed();
    const sys3 = await connect({ servers: nats.url, ...credsConnection(await readFile(init.files.systemCreds, 'utf8')) });
    await pushAccountJwt(sys3, await encodeAccountJwt(signerOp, { [credsUserKey(gone)]: Math.floor(Date.now() / 1000) }));
    assert.match(String(await backClosed), /Authorization Violation/i);
    await assert.rejects(connect({ servers: nats.url, reconnect: false, ...credsConnection(gone, 'nod_gone') }), /Authorization Violation/i);
    await sys3.close();
    const a = await connect({ servers: nats.url, reconnect: false, ...credsConnection(credsA, 'nod_a') });
    await a.close();
  });
});
