/**
 * Split mode with NATS authentication (issue 4): nats-server in operator mode with the accounts
 * `nats-auth init` made, the server on its own creds and the account's signing key, the local node
 * on a user from `nats-auth node`, and a node that joins with a token and gets its NATS user at
 * join. Apps deploy and serve; then node credentials are turned against the others: reading
 * another node's commands, speaking for another node (refused by NATS, or dropped by the control
 * plane when the subject is the node's own), reporting instances and logs it was never assigned,
 * router stats for another router or unknown instances. Last, `nodes remove` revokes the joined
 * node's NATS user: its connection closes at once and stays refused, also by a nats-server
 * restarted without its resolver directory, while the other node keeps working.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'nats';
import type { NatsConnection } from 'nats';
import { credsConnection } from '../packages/bus/src/nats-auth.ts';
import { subjects } from '@shellwego/core';
import { waitFor } from './helpers/platform.ts';
import { appDir, knobApp } from './helpers/apps.ts';
import { splitSuite } from './helpers/split.ts';
import type { JoinedNode } from './helpers/split.ts';

// Plain http API (this file is about NATS; the API's TLS has its own tests); two nodes on one machine: free cluster ports;
// info logs: some of what is checked (ignored stats, revocation pushes) is routine, not a warning.
const suite = splitSuite({ isolation: 'none', natsAuth: true, jetstream: true, env: { SHELLWEGO_API_TLS: 'off', SHELLWEGO_CLUSTER_PORT: '0', SHELLWEGO_LOG_LEVEL: 'info' } });
const { ok } = suite;

async function json<T = any>(args: string[]): Promise<T> {
  return JSON.parse((await ok([...args, '--json'])).stdout) as T;
}

const text = (v: unknown) => JSON.stringify(v);

describe('split mode with NATS authentication', () => {
  let joined: JoinedNode;
  let creds: { nodeId: string; natsCreds: string };
  let localId: string;
  /** A connection with the joined node's NATS user, as a compromised node would use it. */
  let rogue: NatsConnection;
  const rogueErrors: string[] = [];

  before(async () => {
    localId = (await readFile(join(suite.p.nodeDir, 'node-id'), 'utf8')).trim();
    // Isolation none runs apps (and one-offs) under their own uid: they must reach their directory in the node's 0700 data dir.
    await chmod(suite.p.nodeDir, 0o711);
  });
  after(async () => {
    await rogue?.close().catch(() => {});
  });

  test('the server says NATS is authenticated; a node joins, gets its own NATS user (0600) and turns ready', async () => {
    assert.match(suite.p.server.output, /NATS auth: on: each node gets its own NATS user at join/);
    const t = await json<{ token: string }>(['nodes', 'token']);
    joined = await suite.p.addJoinedNode(t.token);
    const file = join(joined.dataDir, 'node-credentials.json');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    creds = JSON.parse(await readFile(file, 'utf8'));
    assert.match(creds.natsCreds, /BEGIN NATS USER JWT[\s\S]*BEGIN USER NKEY SEED/);
    await waitFor('both nodes ready', async () => {
      const nodes = await json<any[]>(['nodes', 'list']);
      return [localId, creds.nodeId].every((id) => nodes.find((n) => n.id === id)?.state === 'ready');
    }, 30_000, 300);
  });

  test('an app deploys to the joined node and serves; its logs arrive and a one-off runs', async () => {
    await ok(['nodes', 'cordon', localId]);
    await ok(['apps', 'create', 'authed']);
    await ok(['config', 'set', 'VERSION=authed-v1', '--app', 'authed']);
    await ok(['deploy', await appDir(knobApp), '--app', 'authed']);
    await waitFor('running on the joined node', async () => {
      const r = (await json<any[]>(['ps', '--app', 'authed'])).filter((i) => i.state === 'running');
      return r.length === 1 && r[0].nodeId === creds.nodeId;
    }, 90_000, 300);
    const r = await waitFor('served', async () => {
      const res = await suite.p.fetchViaRouterPort(joined.routerPort, 'authed');
      return res.status === 200 && res;
    }, 30_000, 200);
    assert.equal(r.body, 'authed-v1');
    // Its output came from the joined node over `agent.<its id>.logs.<app>`, and was kept.
    const client = await suite.p.client(suite.token);
    await waitFor("the app's output in its logs", async () =>
      (await client.call('logs', { params: { app: 'authed' }, query: { lines: 1000 } })).some((l) => l.source === 'app' && l.line === 'authed-v1 listening'), 30_000, 300);
    // A one-off runs on a node over `agent.<id>.oneoff.<session>.in|out`, within its permissions.
    const run = await suite.run(['run', '--app', 'authed', '--', 'echo one-off-$VERSION']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /one-off-authed-v1/);
    // The local node (its NATS user from `nats-auth node`) takes work again, for the next tests.
    await ok(['nodes', 'uncordon', localId]);
    await ok(['apps', 'create', 'local']);
    await ok(['nodes', 'cordon', creds.nodeId]);
    await ok(['deploy', await appDir(knobApp), '--app', 'local']);
    await waitFor('running on the local node', async () => {
      const r = (await json<any[]>(['ps', '--app', 'local'])).filter((i) => i.state === 'running');
      return r.length === 1 && r[0].nodeId === localId;
    }, 90_000, 300);
    await ok(['nodes', 'uncordon', creds.nodeId]);
    await waitFor('the local app serves', async () => (await suite.p.fetchViaRouter('local')).status === 200, 30_000, 200);
  });

  test("the joined node's NATS user cannot read the other node's assignments", async () => {
    rogue = await connect({ servers: suite.p.nats.url, ...credsConnection(creds.natsCreds, creds.nodeId) });
    const stolen: string[] = [];
    for (const s of [subjects.assignments(localId), subjects.oneOffStart(localId), '_INBOX.>', subjects.allHeartbeats]) {
      rogue.subscribe(s, { callback: (err, m) => (err ? rogueErrors.push(String(err)) : stolen.push(m.subject)) });
    }
    await rogue.flush();
    await waitFor('the server refused each subscription', async () => rogueErrors.filter((e) => /permissions violation/i.test(e)).length >= 4, 10_000, 50);
    // The control plane's user sees the local node's assignments go by (republished every pass),
    // and the heartbeats; the node's user got none of it.
    const observer = await connect({ servers: suite.p.nats.url, ...credsConnection(await readFile(suite.p.natsAuth!.serverEnv.SHELLWEGO_NATS_CREDS, 'utf8')) });
    let seen = 0;
    observer.subscribe(subjects.assignments(localId), { callback: () => void seen++ });
    observer.subscribe(subjects.allHeartbeats, { callback: () => void seen++ });
    await waitFor('assignments and heartbeats went by', async () => seen >= 4, 20_000, 100);
    await observer.close();
    await rogue.flush();
    assert.deepEqual(stolen, []);
  });

  test("it cannot publish the other node's heartbeat or status: NATS refuses them, nothing changes", async () => {
    const ghost = 'nod_0000000000ghostghostghost00';
    const beat = (nodeId: string) => ({ nodeId, name: 'ghost', isolation: 'none', capacity: { cpus: 64, memoryMb: 1_000_000 }, instances: 0, at: new Date().toISOString() });
    const [local] = await json<any[]>(['ps', '--app', 'local']);
    rogue.publish(subjects.heartbeat(ghost), text(beat(ghost)));
    rogue.publish(subjects.instanceStatus(localId), text({ nodeId: localId, instanceId: local.id, state: 'crashed', exitCode: 1, signal: null, oomKilled: false, restarts: 9, address: null, startedAt: null, at: new Date().toISOString(), restartGeneration: 0 }));
    await rogue.flush();
    await waitFor('NATS refused both publishes', async () => suite.p.nats.output.includes(`"${subjects.heartbeat(ghost)}"`) && suite.p.nats.output.includes(`"${subjects.instanceStatus(localId)}"`), 10_000, 50);
    assert.equal((await json<any[]>(['nodes', 'list'])).some((n) => n.id === ghost), false);
    const after = (await json<any[]>(['ps', '--app', 'local'])).find((i) => i.id === local.id);
    assert.equal(after.state, 'running');
    assert.equal(after.restarts, local.restarts);
  });

  test('on its own subjects, a heartbeat claiming another node is dropped by the control plane', async () => {
    const ghost = 'nod_0000000001ghostghostghost01';
    rogue.publish(subjects.heartbeat(creds.nodeId), text({ nodeId: ghost, name: 'ghost', isolation: 'none', capacity: { cpus: 64, memoryMb: 1_000_000 }, instances: 0, at: new Date().toISOString() }));
    rogue.publish(subjects.heartbeat(creds.nodeId), text({ nodeId: localId, name: 'impostor', isolation: 'none', capacity: { cpus: 64, memoryMb: 1_000_000 }, instances: 0, at: new Date().toISOString() }));
    await rogue.flush();
    await waitFor('the control plane dropped both', async () => (suite.p.server.output.match(/heartbeat whose nodeId is not the node of its subject/g) ?? []).length >= 2, 10_000, 50);
    const nodes = await json<any[]>(['nodes', 'list']);
    assert.equal(nodes.some((n) => n.id === ghost), false);
    assert.notEqual(nodes.find((n) => n.id === localId)?.name, 'impostor');
  });

  test("router stats: as another node's router refused by NATS; on its own subject claiming another router dropped; unknown instances ignored", async () => {
    const [local] = await json<any[]>(['ps', '--app', 'local']);
    const stats = (routerId: string, instances: Record<string, { requests: number; failed: number }>) => text({ routerId, at: new Date().toISOString(), instances });
    rogue.publish(subjects.routerStats(localId), stats(localId, { [local.id]: { requests: 100, failed: 100 } }));
    rogue.publish(subjects.routerStats(creds.nodeId), stats(localId, { [local.id]: { requests: 100, failed: 100 } }));
    rogue.publish(subjects.routerStats(creds.nodeId), stats(creds.nodeId, { ins_0000000000notroutednotrouted: { requests: 100, failed: 100 } }));
    await rogue.flush();
    await waitFor('NATS refused the first, the control plane dropped the second and ignored the third', async () =>
      suite.p.nats.output.includes(`"${subjects.routerStats(localId)}"`)
      && suite.p.server.output.includes('router stats whose nodeId is not the node of its subject')
      && suite.p.server.output.includes('router stats for an instance not in the route table: ignored'), 10_000, 50);
  });

  test('reports about instances it was never assigned, or that do not exist, change nothing; nor do logs for apps it does not run', async () => {
    const [local] = await json<any[]>(['ps', '--app', 'local']);
    const status = (instanceId: string) => ({
      nodeId: creds.nodeId, instanceId, state: 'crashed', exitCode: 1, signal: null, oomKilled: false, restarts: 7, address: '127.0.0.1:1', startedAt: null, at: new Date().toISOString(), restartGeneration: 0,
    });
    for (let i = 0; i < 3; i++) {
      rogue.publish(subjects.instanceStatus(creds.nodeId), text(status(local.id)));
      rogue.publish(subjects.instanceStatus(creds.nodeId), text(status('ins_0000000000doesnotexist000')));
    }
    const marker = `forged-line-${Date.now()}`;
    rogue.publish(subjects.appLogs(creds.nodeId, local.appId), text({ appId: local.appId, lines: [{ ts: new Date().toISOString(), source: 'app', instanceId: local.id, type: 'web.1', line: marker }] }));
    await rogue.flush();
    await waitFor('the control plane ignored them', async () => {
      const out = suite.p.server.output;
      return out.includes('status report from a node the instance is not assigned to: ignored') && out.includes('app logs from a node for an instance it was not assigned: dropped');
    }, 20_000, 100);
    // Logged once per instance, not per message.
    assert.equal((suite.p.server.output.match(/status report from a node the instance is not assigned to/g) ?? []).length, 1);
    const after = (await json<any[]>(['ps', '--app', 'local'])).find((i) => i.id === local.id);
    assert.equal(after.state, 'running');
    assert.equal(after.nodeId, localId);
    assert.equal(after.restarts, local.restarts);
    const logs = await (await suite.p.client(suite.token)).call('logs', { params: { app: 'local' }, query: { lines: 1000 } });
    assert.equal(logs.some((l) => l.line === marker), false);
    // Both apps still serve.
    assert.equal((await suite.p.fetchViaRouterPort(joined.routerPort, 'authed')).status, 200);
    assert.equal((await suite.p.fetchViaRouter('local')).status, 200);
  });

  test('nats-server killed (-9) while a release is rolled out: with authentication and JetStream, the change arrives after the restart', async () => {
    await suite.p.nats.kill();
    // Written while NATS is down: the assignments are published once JetStream can store them.
    const change = ok(['config', 'set', 'VERSION=authed-v2', '--app', 'authed']);
    await new Promise((r) => setTimeout(r, 1000));
    await suite.p.nats.boot();
    await change;
    const r = await waitFor('the new release served by the joined node', async () => {
      const res = await suite.p.fetchViaRouterPort(joined.routerPort, 'authed');
      return res.body === 'authed-v2' && res;
    }, 90_000, 300);
    assert.equal(r.status, 200);
    // Every connection came back with its own user: both nodes beat again.
    await waitFor('both nodes ready', async () => {
      const nodes = await json<any[]>(['nodes', 'list']);
      return [localId, creds.nodeId].every((id) => nodes.find((n) => n.id === id)?.state === 'ready');
    }, 30_000, 300);
  });

  test("nodes remove revokes the node's NATS user: its connection closes at once and stays refused, also after nats-server restarts without its resolver directory; the other node keeps working", async () => {
    const natsAuth = suite.p.natsAuth!;
    const rogueClosed = rogue.closed();
    // The node has to be empty before it can be removed.
    await ok(['apps', 'delete', 'authed', '--confirm', 'authed']);
    await waitFor('nothing assigned to the joined node', async () => (await json<any[]>(['nodes', 'list'])).find((n) => n.id === creds.nodeId)?.instances === 0, 30_000, 300);
    await ok(['nodes', 'remove', creds.nodeId]);
    // nats-server closed the connections of the revoked user (this one and the node's own).
    assert.match(String(await rogueClosed), /Authorization Violation/i);
    await assert.rejects(connect({ servers: suite.p.nats.url, reconnect: false, ...credsConnection(creds.natsCreds, creds.nodeId) }), /Authorization Violation/i);
    assert.match(suite.p.server.output, /removed node's NATS user revoked/);

    // nats-server restarted from its config file with its resolver directory lost (only the
    // preloaded account JWT, without the revocation): the server pushes the store's list again
    // when its connection comes back, and the user is refused again.
    const pushes = () => (suite.p.server.output.match(/"reason":"reconnect".*revocation list pushed|revocation list pushed.*"reason":"reconnect"/g) ?? []).length;
    const before = pushes();
    await suite.p.nats.kill();
    await rm(natsAuth.resolverDir, { recursive: true, force: true });
    await suite.p.nats.boot();
    const restartedAt = Date.now();
    await waitFor('the revocation list pushed again after the reconnect', async () => pushes() > before, 30_000, 100);
    await assert.rejects(connect({ servers: suite.p.nats.url, reconnect: false, ...credsConnection(creds.natsCreds, creds.nodeId) }), /Authorization Violation/i);

    // The local node (another user) kept its NATS access: it beats again after the restart, and its app serves.
    await waitFor('a heartbeat of the local node after the restart', async () => {
      const n = (await json<any[]>(['nodes', 'list'])).find((x) => x.id === localId);
      return n?.state === 'ready' && Date.parse(n.lastHeartbeatAt) > restartedAt;
    }, 30_000, 300);
    assert.equal((await json<any[]>(['nodes', 'list'])).some((n) => n.id === creds.nodeId), false);
    await waitFor('the local app serves', async () => (await suite.p.fetchViaRouter('local')).status === 200, 30_000, 200);
  });
});
