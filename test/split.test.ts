/**
 * Split mode: control plane (`server`) and node (`node`) as separate processes over a real NATS.
 * The node's router keeps serving while the control plane is killed -9 and restarted, the
 * restarted control plane adopts the running instances without restarting them, and both sides
 * heal after nats-server itself restarts.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ROOT, waitFor } from './helpers/platform.ts';
import { appDir, bootStampApp } from './helpers/apps.ts';
import { splitSuite } from './helpers/split.ts';

const suite = splitSuite({ isolation: 'sandbox' });
const { ok } = suite;

interface Ps { id: string; type: string; state: string; restarts: number; nodeId: string | null; address: string | null }

async function ps(app: string): Promise<Ps[]> {
  return JSON.parse((await ok(['ps', '--app', app, '--json'])).stdout) as Ps[];
}

async function runningWeb(app: string, n: number): Promise<Ps[]> {
  return waitFor(`${n} running web instances of ${app}`, async () => {
    const list = (await ps(app)).filter((i) => i.type === 'web' && i.state === 'running');
    return list.length === n && list;
  }, 90_000, 500);
}

/** Boot stamps of the instances that answer, one per distinct instance process. */
async function stamps(app: string, requests: number): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < requests; i++) {
    const r = await suite.p.fetchViaRouter(app);
    assert.equal(r.status, 200, r.body);
    seen.add((JSON.parse(r.body) as { started: string }).started);
  }
  return seen;
}

describe('split mode: server and node over NATS', () => {
  let before: Ps[] = [];
  let beforeStamps = new Set<string>();

  test('a node registers over NATS and runs 3 web instances deployed with the CLI', async () => {
    const dir = await appDir(bootStampApp);
    await ok(['apps', 'create', 'steady']);
    await ok(['deploy', dir, '--app', 'steady']);
    await ok(['scale', 'web=3', '--app', 'steady']);
    before = await runningWeb('steady', 3);
    assert.equal(new Set(before.map((i) => i.nodeId)).size, 1, 'all on the one node');
    assert.ok(before[0].nodeId, 'placed on the node that joined over NATS');
    // All three are in the node's route table (round robin reaches each).
    beforeStamps = await waitFor('the router to reach all 3 instances', async () => {
      const s = await stamps('steady', 9);
      return s.size === 3 && s;
    }, 30_000, 300);
  });

  test('kill -9 the control plane under load: zero failed requests; the restarted server adopts the instances', async () => {
    const load = suite.p.load('steady', { concurrency: 4 }).start();
    try {
      await load.succeeded(50);
      await suite.p.killServer();
      // The node serves alone: the router's table and the instances do not depend on the server.
      await load.succeeded(200);
      assert.equal((await fetch(`${suite.p.apiUrl}/v1/health`).catch(() => null)), null, 'the API is really down');
      const restartedAt = new Date().toISOString();
      await suite.p.restartServer();
      // The node finds the new control plane by itself (its heartbeat arrives over NATS).
      const client = await suite.p.client();
      await waitFor('a heartbeat at the restarted server', async () => {
        const nodes = await client.call('listNodes', {});
        return nodes.length === 1 && nodes[0].state === 'ready' && (nodes[0].lastHeartbeatAt ?? '') > restartedAt;
      }, 30_000, 300);
      await load.succeeded(200);
    } finally {
      const r = await load.stop();
      assert.equal(r.failed, 0, `failed requests:\n${r.errors.slice(0, 20).join('\n')}`);
      assert.ok(r.ok >= 450);
    }
    const after = await runningWeb('steady', 3);
    assert.deepEqual(after.map((i) => i.id).sort(), before.map((i) => i.id).sort(), 'same instances');
    assert.deepEqual(after.map((i) => i.restarts), [0, 0, 0], 'nothing restarted');
    assert.deepEqual(await stamps('steady', 9), beforeStamps, 'the same processes still answer');
  });

  test('after the restart a new deploy works end to end (build on the server, run on the node)', async () => {
    await ok(['apps', 'create', 'hello']);
    const d = await ok(['deploy', join(ROOT, 'examples/node-express'), '--app', 'hello']);
    assert.match(d.stdout + d.stderr, /hello\.localhost/);
    const body = await waitFor('200 from hello', async () => {
      const r = await suite.p.fetchViaRouter('hello');
      return r.status === 200 && r.body;
    }, 60_000, 300);
    assert.match(body, /Hello from ShellWeGo/);
    // The node got fresh assignments from the restarted server (they carry every instance of the
    // node): the old app's instances were adopted as they are, not replaced.
    const steady = await runningWeb('steady', 3);
    assert.deepEqual(steady.map((i) => i.id).sort(), before.map((i) => i.id).sort());
    assert.deepEqual(steady.map((i) => i.restarts), [0, 0, 0]);
    assert.deepEqual(await stamps('steady', 9), beforeStamps);
  });

  test('nats-server restarted: apps keep serving, and the platform recovers (a deploy works)', async () => {
    const load = suite.p.load('steady', { concurrency: 2 }).start();
    try {
      await load.succeeded(20);
      await suite.p.nats.kill();
      await load.succeeded(100);
      await suite.p.nats.boot();
      await load.succeeded(20);
    } finally {
      const r = await load.stop();
      assert.equal(r.failed, 0, `failed requests:\n${r.errors.slice(0, 20).join('\n')}`);
    }
    // Both daemons reconnected on their own: a deploy needs server → builder → node → router.
    const dir = await appDir(bootStampApp);
    await ok(['apps', 'create', 'after-nats']);
    await ok(['deploy', dir, '--app', 'after-nats']);
    await waitFor('200 from after-nats', async () => (await suite.p.viaRouter('after-nats')) === 200, 90_000, 300);
    assert.ok(suite.p.server.running() && suite.p.node.running());
    const list = await ps('steady');
    assert.deepEqual(list.map((i) => i.restarts), [0, 0, 0], 'the NATS outage restarted nothing');
  });

  test('node killed -9 and restarted: its new router asks the server for the table, the agent adopts the instances', async () => {
    await suite.p.node.kill9();
    await suite.p.node.start(); // ready = the router listens, with an empty table until the server answers
    await waitFor('steady served again', async () => (await suite.p.viaRouter('steady')) === 200, 30_000, 200);
    assert.deepEqual(await stamps('steady', 9), beforeStamps, 'the same processes serve: adopted, not restarted');
    const list = await runningWeb('steady', 3);
    assert.deepEqual(list.map((i) => i.id).sort(), before.map((i) => i.id).sort());
    assert.deepEqual(list.map((i) => i.restarts), [0, 0, 0]);
  });
});
