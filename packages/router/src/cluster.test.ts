/**
 * Routing across nodes: two routers as two nodes (each with its own bus, as over NATS), a
 * request for the other node's instance goes through that node's cluster listener, over mutual
 * TLS with node certificates from an install CA (ADR 0022).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { nodeIdentityUri, subjects } from '@shellwego/core';
import type { RouteTableMessage, RouterStatsMessage } from '@shellwego/core';
// The control plane's real issuer, so the certificates are the ones nodes get (test only: the router never imports it).
import { createCa, importNodePublicKey, issueLeaf, issueNodeLeaf, loadCa } from '../../control-plane/src/domains/local-ca.ts';
import type { LocalCa } from '../../control-plane/src/domains/local-ca.ts';
import { attachWsEcho, deadAddress, request, startBackend, startRouter, wsConnect } from './test-helpers.ts';
import type { Backend, TestRouter } from './test-helpers.ts';
import { ClusterTls } from './cluster.ts';
import type { ClusterIdentity } from './cluster.ts';

const TOKEN = 'cluster-token-for-tests-0123456789';
const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of closers.reverse()) await c();
});

/** Requests each backend answered, by name: "nothing reached the instance" is checked here. */
const served = new Map<string, number>();

async function backend(name: string): Promise<Backend> {
  const b = await startBackend((req, res) => {
    served.set(name, (served.get(name) ?? 0) + 1);
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ name, headers: req.headers }));
  });
  closers.push(b.close);
  return b;
}

async function newCa(name: string): Promise<LocalCa> {
  const pem = await createCa(name);
  return loadCa(pem.certPem, pem.keyPem);
}

/** A node certificate as a joining node gets it: its own key, the public key signed by `ca`. */
async function nodeIdentity(ca: LocalCa, nodeId: string): Promise<ClusterIdentity> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const key = (await importNodePublicKey(publicKey.export({ type: 'spki', format: 'pem' }) as string))!;
  const leaf = await issueNodeLeaf(ca, nodeId, nodeIdentityUri(nodeId), key);
  return { cert: leaf.certPem, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, ca: ca.certPem };
}

let installCa: LocalCa;
before(async () => {
  installCa = await newCa('Test install CA');
});

/** TLS client options of a cluster peer (what another router presents); the server's identity is not what these tests check. */
const asPeer = (id: ClusterIdentity | null, ca = installCa.certPem): tls.ConnectionOptions => ({
  ...(id ? { cert: id.cert, key: id.key } : {}), ca: [ca], checkServerIdentity: () => undefined,
});

/** What the agent says runs on the node (instance id → address), for instances that left the table. */
const runningNow = new Map<string, string>();

async function node(nodeId: string, identity?: ClusterIdentity): Promise<TestRouter> {
  const tlsId = identity ?? await nodeIdentity(installCa, nodeId);
  const r = await startRouter({ nodeId, cluster: { host: '127.0.0.1', port: 0, tls: tlsId }, statsIntervalMs: 50, runningAt: (id) => runningNow.get(id) ?? null });
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
    await B.publish(clusterTable(1, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }, { id: 'i-x', address: elsewhere.address, nodeId: 'nodC' }], { nodC: '127.0.0.1:1', nodA: '127.0.0.1:2' }));
    // As node A's router would (a member of B's table), with A's certificate.
    const peer = asPeer(await nodeIdentity(installCa, 'nodA'));
    const ask = (headers: Record<string, string>) => request(cp, { headers: { Host: 'hello.localhost', ...headers }, tls: peer });

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
    await B.publish(clusterTable(2, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }], { nodA: '127.0.0.1:2' }, 'second-token-0123456789abcdef'));
    await B.publish(clusterTable(3, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }], { nodA: '127.0.0.1:2' }, 'third-token-0123456789abcdefgh'));
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
    // A node whose router takes the request (a real nodB, by its certificate) and dies without a word.
    const dying = tls.createServer(new ClusterTls(await nodeIdentity(installCa, 'nodB')).serverOptions(), (sock) => sock.once('data', () => sock.destroy()));
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

    const asA = asPeer(await nodeIdentity(installCa, 'nodA'));
    await assert.rejects(wsConnect(B.router.clusterPort!, 'hello.localhost', '/', { 'X-Shellwego-Instance': 'i-b1', 'X-Shellwego-Cluster-Token': 'nope' }, asA), (err: { status?: number }) => err.status === 403);
    // Upgrades are refused to a node the table does not have, and to peers without a certificate, too.
    const asC = asPeer(await nodeIdentity(installCa, 'nodC'));
    await assert.rejects(wsConnect(B.router.clusterPort!, 'hello.localhost', '/', { 'X-Shellwego-Instance': 'i-b1', 'X-Shellwego-Cluster-Token': TOKEN }, asC), (err: { status?: number }) => err.status === 403);
    await assert.rejects(wsConnect(B.router.clusterPort!, 'hello.localhost', '/', { 'X-Shellwego-Instance': 'i-b1', 'X-Shellwego-Cluster-Token': TOKEN }, asPeer(null)), (err: { status?: number }) => err.status === undefined);
    assert.equal(ws.sockets.size, 0, 'no refused upgrade reached the app');
  });

  test('hops reuse one pooled TLS connection', async () => {
    const b1 = await backend('b1');
    const [A, B] = [await node('nodA'), await node('nodB')];
    // A TCP relay in front of B's cluster port counts the connections A opens to it.
    let connections = 0;
    const open = new Set<net.Socket>();
    const relay = net.createServer((c) => {
      connections++;
      open.add(c);
      const up = net.connect(B.router.clusterPort!, '127.0.0.1');
      c.pipe(up).pipe(c);
      c.on('error', () => up.destroy());
      up.on('error', () => c.destroy());
    });
    await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => {
      relay.close(() => resolve());
      for (const c of open) c.destroy();
    }));
    const nodes = { nodA: `127.0.0.1:${A.router.clusterPort}`, nodB: `127.0.0.1:${(relay.address() as net.AddressInfo).port}` };
    await A.publish(clusterTable(1, [{ id: 'i-b1', address: await deadAddress(), nodeId: 'nodB' }], nodes));
    await B.publish(clusterTable(1, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }], nodes));
    for (let i = 0; i < 10; i++) {
      const r = await request(A.port, { headers: { Host: 'hello.localhost' } });
      assert.equal(r.status, 200, r.text);
      assert.equal(body(r).name, 'b1');
    }
    assert.equal(connections, 1, 'ten sequential hops went over one TLS connection');
  });

  test('the cluster port refuses peers without a certificate, with one from another CA, or of a node not in its table: nothing reaches the instance', async () => {
    const b1 = await backend('refused-b1');
    const B = await node('nodB');
    const port = B.router.clusterPort!;
    await B.publish(clusterTable(1, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }], { nodA: '127.0.0.1:2', nodB: `127.0.0.1:${port}` }));
    const headers = { Host: 'hello.localhost', 'X-Shellwego-Instance': 'i-b1', 'X-Shellwego-Cluster-Token': TOKEN };

    // TLS level: no client certificate, or one a foreign CA signed for a node id B knows.
    await assert.rejects(request(port, { headers, tls: asPeer(null) }), 'no client certificate');
    const otherCa = await newCa('Another install');
    await assert.rejects(request(port, { headers, tls: asPeer(await nodeIdentity(otherCa, 'nodA'), installCa.certPem) }), 'a certificate from another CA');
    // A certificate of the install CA that is not a node's (an API or tenant-domain certificate).
    const leaf = await issueLeaf(installCa, ['nodA.example.test']);
    // (OpenSSL refuses it for client use: its extended key usage is serverAuth only.)
    await assert.rejects(request(port, { headers, tls: { cert: leaf.certPem, key: leaf.keyPem, ca: [installCa.certPem], checkServerIdentity: () => undefined } }), 'a serverAuth-only certificate');
    // Plain HTTP is not spoken there at all.
    await assert.rejects(request(port, { headers }), 'plain http');

    // HTTP level: a valid node certificate, but the node is not in B's table (removed, or never there).
    const stranger = await request(port, { headers, tls: asPeer(await nodeIdentity(installCa, 'nodGone')) });
    assert.equal(stranger.status, 403);
    assert.equal(stranger.headers['x-shellwego-error'], 'cluster_forbidden');
    assert.match(stranger.text, /node nodGone is not in this router's route table/);
    assert.equal(served.get('refused-b1') ?? 0, 0, 'nothing reached the instance');

    const member = await request(port, { headers, tls: asPeer(await nodeIdentity(installCa, 'nodA')) });
    assert.equal(member.status, 200, member.text);
    assert.equal(served.get('refused-b1'), 1);
  });

  test("a node removed from the table is refused on its open connection; a router that is not the table's node is not dialed", async () => {
    const [a1, b1] = [await backend('rev-a1'), await backend('rev-b1')];
    const [A, B] = [await node('nodA'), await node('nodB')];
    const nodes = { nodA: `127.0.0.1:${A.router.clusterPort}`, nodB: `127.0.0.1:${B.router.clusterPort}` };
    await A.publish(clusterTable(1, [{ id: 'i-b1', address: await deadAddress(), nodeId: 'nodB' }], nodes));
    await B.publish(clusterTable(1, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }], nodes));
    assert.equal((await request(A.port, { headers: { Host: 'hello.localhost' } })).status, 200);
    // `nodes remove` of A: B's next table no longer has it; A's pooled connection gets no further.
    await B.publish(clusterTable(2, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }], { nodB: nodes.nodB }));
    const refused = await request(A.port, { headers: { Host: 'hello.localhost' } });
    assert.equal(refused.status, 403);
    assert.equal(refused.headers['x-shellwego-error'], 'cluster_forbidden');
    assert.equal(served.get('rev-b1'), 1);

    // A's table says nodC's router is at B's port: B's certificate is nodB's, so A does not send it the request.
    const C = await node('nodC');
    await C.publish(clusterTable(1, [{ id: 'i-c1', address: b1.address, nodeId: 'nodC' }], { nodA: nodes.nodA, nodC: `127.0.0.1:${C.router.clusterPort}` }));
    await A.publish(clusterTable(2, [{ id: 'i-c1', address: await deadAddress(), nodeId: 'nodC' }, { id: 'i-a1', address: a1.address, nodeId: 'nodA' }],
      { nodA: nodes.nodA, nodC: nodes.nodB }));
    for (let i = 0; i < 3; i++) {
      const r = await request(A.port, { headers: { Host: 'hello.localhost' } });
      assert.equal(r.status, 200, r.text);
      assert.equal(body(r).name, 'rev-a1', 'the impostor is skipped, the local instance answers');
    }
    await A.publish(clusterTable(3, [{ id: 'i-c1', address: await deadAddress(), nodeId: 'nodC' }], { nodA: nodes.nodA, nodC: nodes.nodB }));
    const none = await request(A.port, { headers: { Host: 'hello.localhost' } });
    assert.equal(none.status, 502);
    assert.equal(none.headers['x-shellwego-error'], 'backend_unavailable');
    assert.equal(served.get('rev-b1'), 1, "nothing went through the router that is not nodC's");
  });

  test('a renewed certificate is used for new hops', async () => {
    const b1 = await backend('renew-b1');
    const [A, B] = [await node('nodA'), await node('nodB')];
    const nodes = { nodA: `127.0.0.1:${A.router.clusterPort}`, nodB: `127.0.0.1:${B.router.clusterPort}` };
    await A.publish(clusterTable(1, [{ id: 'i-b1', address: await deadAddress(), nodeId: 'nodB' }], nodes));
    await B.publish(clusterTable(1, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }], nodes));
    const renewed = await nodeIdentity(installCa, 'nodB');
    B.router.setClusterIdentity(renewed);
    const seen = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: B.router.clusterPort!, ...asPeer(null) }, () => {
        resolve(s.getPeerCertificate().fingerprint256);
        s.destroy();
      });
      s.on('error', reject);
    });
    assert.equal(seen, new (await import('node:crypto')).X509Certificate(renewed.cert).fingerprint256, "B's listener presents the new certificate");
    const r = await request(A.port, { headers: { Host: 'hello.localhost' } });
    assert.equal(r.status, 200, r.text);
    assert.throws(() => B.router.setClusterIdentity({ ...renewed, key: 'not a key' }), 'an unusable certificate is refused, the current one stays');
    assert.equal((await request(A.port, { headers: { Host: 'hello.localhost' } })).status, 200);
  });

  test('a router without a cluster certificate reaches other nodes\' instances directly', async () => {
    const b1 = await backend('direct-b1');
    const plain = await startRouter({ nodeId: 'nodP' });
    closers.push(plain.close);
    assert.equal(plain.router.clusterPort, null);
    await plain.publish(clusterTable(1, [{ id: 'i-b1', address: b1.address, nodeId: 'nodB' }], { nodB: '127.0.0.1:1' }));
    const r = await request(plain.port, { headers: { Host: 'hello.localhost' } });
    assert.equal(r.status, 200, r.text);
    assert.equal(body(r).name, 'direct-b1');
  });
});
