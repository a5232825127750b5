/**
 * Routing across nodes: two routers as two nodes (each with its own bus, as over NATS), a
 * request for the other node's instance goes through that node's cluster listener.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { subjects } from '@shellwego/core';
import type { RouteTableMessage, RouterStatsMessage } from '@shellwego/core';
import { attachWsEcho, deadAddress, request, startBackend, startRouter, wsConnect } from './test-helpers.ts';
import type { Backend, TestRouter } from './test-helpers.ts';

const TOKEN = 'cluster-token-for-tests-0123456789';
const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of closers.reverse()) await c();
});

async function backend(name: string): Promise<Backend> {
  const b = await startBackend((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ name, headers: req.headers }));
  });
  closers.push(b.close);
  return b;
}

/** What the agent says runs on the node (instance id → address), for instances that left the table. */
const runningNow = new Map<string, string>();

async function node(nodeId: string): Promise<TestRouter> {
  const r = await startRouter({ nodeId, cluster: { host: '127.0.0.1', port: 0 }, statsIntervalMs: 50, runningAt: (id) => runningNow.get(id) ?? null });
  closers.push(r.close);
  return r;
}

/** A table for app `hello` with instances on nodes; `nodes` maps node ids to cluster endpoints. */
function clusterTable(version: number, backends: { id: string; address: string; nodeId: string }[], nodes: Record<string, string>, token: string | undefined = TOKEN): RouteTableMessage {
  return {
    version,
    routes: { 'hello.localhost': { appId: 'app_hello', appName: 'hello', backends: backends.map((b) => ({ instanceId: b.id, address: b.address, nodeId: b.nodeId })) } },
    nodes,
    ...(token ? { clusterToken: token } : {}),
  };
}

const body = (r: { text: string }) => JSON.parse(r.text) as { name: string; headers: http.IncomingHttpHeaders };

describe('routing across nodes', () => {
  test("another node's instance is reached through that node's router; X-Forwarded-* and stats stay with the first router", async () => {
    const [a1, b1] = [await backend('a1'), await backend('b1')];
    const [A, B] = [await node('nodA'), await node('nodB')];
    const nodes = { nodA: `127.0.0.1:${A.router.clusterPort}`, nodB: `127.0.0.1:${B.router.clusterPort}` };
    // Node A cannot reach B's instance address (another host's bridge): only B's router can.
    await A.publish(clusterTable(1, [{ id: 'i-a1', address: a1.address, nodeId: 'nodA' }, { id: 'i-b1', address: await deadAddress(), nodeId: 'nodB' }], nodes));
    await B.publish(clusterTable(1, [{ id: 'i-a1', address: await deadAddress(), nodeId: 'nodA' }, { id: 'i-b1', address: b1.address, nodeId: 'nodB' }], nodes));
    const statsA: RouterStatsMessage[] = [];
    const statsB: RouterStatsMessage[] = [];
    A.bus.subscribe<RouterStatsMessage>(subjects.allRouterStats, (m) => void statsA.push(m));
    B.bus.subscribe<RouterStatsMessage>(subjects.allRouterStats, (m) => void statsB.push(m));

    const names: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await request(A.port, { headers: { Host: 'hello.localhost:8000', 'X-Request-Id': `req-${i}` } });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers['x-request-id'], `req-${i}`);
      const seen = body(r);
      names.push(seen.name);
      if (seen.name === 'b1') {
        assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1', 'one client address, not the first router appended by the second');
        assert.equal(seen.headers['x-forwarded-host'], 'hello.localhost:8000');
        assert.equal(seen.headers['x-forwarded-port'], String(A.port), "the port the client used, at the first router");
        assert.equal(seen.headers['x-request-id'], `req-${i}`);
        assert.equal(seen.headers['x-shellwego-instance'], undefined, 'cluster headers never reach the app');
        assert.equal(seen.headers['x-shellwego-cluster-token'], undefined);
      }
    }
    assert.deepEqual(names, ['a1', 'b1', 'a1', 'b1'], 'round-robin spans both nodes');
    // And from B's side the other way round.
    const fromB = new Set<string>();
    for (let i = 0; i < 2; i++) fromB.add(body(await request(B.port, { headers: { Host: 'hello.localhost' } })).name);
    assert.deepEqual([...fromB].sort(), ['a1', 'b1']);

    const counted = (list: RouterStatsMessage[], id: string) => list.reduce((n, m) => n + (m.instances[id]?.requests ?? 0), 0);
    const deadline = Date.now() + 3_000;
    while ((counted(statsA, 'i-b1') < 2 || counted(statsB, 'i-a1') < 1 || counted(statsB, 'i-b1') < 1) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 120)); // one more report period: nothing else comes
    assert.equal(counted(statsA, 'i-a1'), 2);
    assert.equal(counted(statsA, 'i-b1'), 2, "A counts what it sent to B's instance");
    assert.equal(counted(statsB, 'i-a1'), 1);
    assert.equal(counted(statsB, 'i-b1'), 1, 'B counts only its own clients, not what A forwarded to it');
  });

  test('the cluster port takes only routers with the token, for this node\'s own instances', async () => {
    const b1 = await backend('b1');
    const elsewhere = await backend('elsewhere');
    const B = await node('nodB');
    const cp = B.router.clusterPort!;
    await B.publish(clusterTable(1, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }, { id: 'i-x', address: elsewhere.address, nodeId: 'nodC' }], { nodC: '127.0.0.1:1' }));
    const ask = (headers: Record<string, string>) => request(cp, { headers: { Host: 'hello.localhost', ...headers } });

    const none = await ask({ 'X-Shellwego-Instance': 'i-b1' });
    assert.equal(none.status, 403);
    assert.equal(none.headers['x-shellwego-error'], 'cluster_forbidden');
    assert.match(none.text, /cluster token missing or wrong/);
    const wrong = await ask({ 'X-Shellwego-Instance': 'i-b1', 'X-Shellwego-Cluster-Token': `${TOKEN.slice(0, -1)}x` });
    assert.equal(wrong.status, 403);
    const noInstance = await ask({ 'X-Shellwego-Cluster-Token': TOKEN });
    assert.equal(noInstance.status, 400);
    assert.match(noInstance.text, /X-Shellwego-Instance header missing/);
    // Another node's instance (or one not in the table) is not forwarded: no open proxy.
    for (const id of ['i-x', 'i-unknown']) {
      const r = await ask({ 'X-Shellwego-Instance': id, 'X-Shellwego-Cluster-Token': TOKEN });
      assert.equal(r.status, 502);
      assert.equal(r.headers['x-shellwego-error'], 'instance_not_on_node');
      assert.match(r.text, new RegExp(`instance ${id} does not run on node nodB`));
    }
    const okReply = await ask({ 'X-Shellwego-Instance': 'i-b1', 'X-Shellwego-Cluster-Token': TOKEN });
    assert.equal(okReply.status, 200);
    assert.equal(body(okReply).name, 'b1');

    // A client cannot pick an instance through the public port with the same headers.
    const pub = await request(B.port, { headers: { Host: 'hello.localhost', 'X-Shellwego-Instance': 'i-x', 'X-Shellwego-Cluster-Token': TOKEN } });
    assert.equal(body(pub).name, 'b1');
    assert.equal(body(pub).headers['x-shellwego-instance'], undefined);

    // A new token: the previous one is still taken (routers do not switch tables at the same instant), the one before not.
    await B.publish(clusterTable(2, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }], {}, 'second-token-0123456789abcdef'));
    await B.publish(clusterTable(3, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }], {}, 'third-token-0123456789abcdefgh'));
    assert.equal((await ask({ 'X-Shellwego-Instance': 'i-b1', 'X-Shellwego-Cluster-Token': 'second-token-0123456789abcdef' })).status, 200);
    assert.equal((await ask({ 'X-Shellwego-Instance': 'i-b1', 'X-Shellwego-Cluster-Token': TOKEN })).status, 403);
  });

  test('an instance the other node no longer has: the first router tries another backend, the client sees no error', async () => {
    const [a1, b1] = [await backend('a1'), await backend('b1')];
    const [A, B] = [await node('nodA'), await node('nodB')];
    const nodes = { nodA: `127.0.0.1:${A.router.clusterPort}`, nodB: `127.0.0.1:${B.router.clusterPort}` };
    // A still lists B's instance i-b2; B has never had it (A's table is older).
    await A.publish(clusterTable(1, [{ id: 'i-b2', address: b1.address, nodeId: 'nodB' }, { id: 'i-a1', address: a1.address, nodeId: 'nodA' }], nodes));
    await B.publish(clusterTable(2, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }, { id: 'i-a1', address: a1.address, nodeId: 'nodA' }], nodes));
    for (let i = 0; i < 4; i++) {
      const r = await request(A.port, { headers: { Host: 'hello.localhost' } });
      assert.equal(r.status, 200, r.text);
      assert.equal(body(r).name, 'a1');
    }
    // With nowhere else to go the answer says why.
    await A.publish(clusterTable(3, [{ id: 'i-b2', address: b1.address, nodeId: 'nodB' }], nodes));
    const r = await request(A.port, { headers: { Host: 'hello.localhost' } });
    assert.equal(r.status, 502);
    assert.equal(r.headers['x-shellwego-error'], 'backend_unavailable');

    // A removed instance stays reachable through its node's router while the agent says it still
    // runs at that address (it drains there) — not once its address may belong to another instance.
    await B.publish(clusterTable(4, [{ id: 'i-a1', address: a1.address, nodeId: 'nodA' }], nodes));
    await A.publish(clusterTable(4, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }], nodes));
    runningNow.set('i-b1', b1.address);
    const lingering = await request(A.port, { headers: { Host: 'hello.localhost' } });
    assert.equal(lingering.status, 200, lingering.text);
    assert.equal(body(lingering).name, 'b1');
    runningNow.set('i-b1', '10.99.0.9:5000');
    const gone = await request(A.port, { headers: { Host: 'hello.localhost' } });
    assert.equal(gone.status, 502);
    runningNow.delete('i-b1');
  });

  test("another node's router dying before it answers: idempotent requests go to the next backend, others get 502", async () => {
    const a1 = await backend('a1');
    // A node whose router takes the request and dies without a word.
    const dying = net.createServer((sock) => sock.once('data', () => sock.destroy()));
    await new Promise<void>((resolve) => dying.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => dying.close(() => resolve())));
    const A = await node('nodA');
    const nodes = { nodA: `127.0.0.1:${A.router.clusterPort}`, nodB: `127.0.0.1:${(dying.address() as net.AddressInfo).port}` };
    const t = clusterTable(1, [{ id: 'i-b1', address: '10.99.0.2:5000', nodeId: 'nodB' }, { id: 'i-a1', address: a1.address, nodeId: 'nodA' }], nodes);
    await A.publish(t);
    for (let i = 0; i < 3; i++) {
      const r = await request(A.port, { headers: { Host: 'hello.localhost' } });
      assert.equal(r.status, 200, r.text);
      assert.equal(body(r).name, 'a1');
    }
    // A POST may have reached the app: not resent.
    await A.publish({ ...t, version: 2, routes: { 'hello.localhost': { ...t.routes['hello.localhost'], backends: [t.routes['hello.localhost'].backends[0]] } } });
    const post = await request(A.port, { method: 'POST', headers: { Host: 'hello.localhost' }, body: 'x' });
    assert.equal(post.status, 502);
    assert.match(post.text, /failed to answer/);
  });

  test('a node without a cluster endpoint in the table (an older agent) is reached directly', async () => {
    const b1 = await backend('b1');
    const A = await node('nodA');
    await A.publish(clusterTable(1, [{ id: 'i-b1', address: b1.address, nodeId: 'nodOld' }], { nodA: `127.0.0.1:${A.router.clusterPort}` }));
    const r = await request(A.port, { headers: { Host: 'hello.localhost' } });
    assert.equal(r.status, 200);
    assert.equal(body(r).name, 'b1');
  });

  test('WebSocket upgrades cross the hop; a bad token is refused for upgrades too', async () => {
    const b1 = await backend('b1');
    let seen: http.IncomingHttpHeaders = {};
    const ws = attachWsEcho(b1.server, (req) => (seen = req.headers));
    const [A, B] = [await node('nodA'), await node('nodB')];
    const nodes = { nodA: `127.0.0.1:${A.router.clusterPort}`, nodB: `127.0.0.1:${B.router.clusterPort}` };
    await A.publish(clusterTable(1, [{ id: 'i-b1', address: await deadAddress(), nodeId: 'nodB' }], nodes));
    await B.publish(clusterTable(1, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }], nodes));
    const client = await wsConnect(A.port, 'hello.localhost', '/chat', { 'X-Request-Id': 'ws-hop' });
    assert.equal(client.response.headers['x-request-id'], 'ws-hop');
    assert.equal(seen['x-forwarded-for'], '127.0.0.1');
    assert.equal(seen['x-shellwego-cluster-token'], undefined);
    for (const text of ['hello', 'y'.repeat(20_000)]) {
      client.send(text);
      assert.equal(await client.next(), `echo:${text}`);
    }
    const { closeFrame } = await client.close();
    assert.ok(closeFrame);
    const deadline = Date.now() + 2_000;
    while (ws.sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(ws.sockets.size, 0, 'the close reached the app');

    await assert.rejects(wsConnect(B.router.clusterPort!, 'hello.localhost', '/', { 'X-Shellwego-Instance': 'i-b1', 'X-Shellwego-Cluster-Token': 'nope' }), (err: { status?: number }) => err.status === 403);
  });
});
