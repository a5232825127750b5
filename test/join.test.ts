/**
 * Nodes that join over the network (split mode): an operator creates a join token, a node on "another
 * machine" (own data dir, no access to the server's blob directory) joins with it, gets its own
 * credentials, and runs an app deployed after it joined, with the artifact fetched over HTTP and
 * verified. Used, expired and forged tokens stop the node with a clear message, registering nothing.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPrivateKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { waitFor } from './helpers/platform.ts';
import { appDir, knobApp } from './helpers/apps.ts';
import { splitSuite } from './helpers/split.ts';
import type { JoinedNode } from './helpers/split.ts';

const suite = splitSuite({ isolation: 'none' });
const { ok } = suite;

async function json<T = any>(args: string[]): Promise<T> {
  return JSON.parse((await ok([...args, '--json'])).stdout) as T;
}

async function joinToken(args: string[] = []): Promise<string> {
  const t = await json<{ token: string }>(['nodes', 'token', ...args]);
  assert.match(t.token, /^swj_/);
  return t.token;
}

const nodeCount = async () => (await json<any[]>(['nodes', 'list'])).length;

/** The node refuses to start: exit 1, and its output says why. */
async function refusedJoin(node: JoinedNode, why: RegExp): Promise<void> {
  await assert.rejects(node.daemon.start(), (err: Error) => /node exited with 1/.test(err.message) && why.test(err.message), `expected a refusal matching ${why}`);
}

describe('nodes that join with a token', () => {
  let joined: JoinedNode;
  let creds: { apiUrl: string; nodeId: string; secret: string };

  test('a node joins with a join token, gets its own credentials (0600) and turns ready', async () => {
    assert.equal(await nodeCount(), 1);
    joined = await suite.p.addJoinedNode(await joinToken(['--expires', '10m']));
    const file = join(joined.dataDir, 'node-credentials.json');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    creds = JSON.parse(await readFile(file, 'utf8'));
    assert.equal(creds.apiUrl, suite.p.apiUrl);
    await waitFor('the joined node is ready', async () => (await json<any[]>(['nodes', 'list'])).find((n) => n.id === creds.nodeId)?.state === 'ready', 30_000, 300);
    assert.match(joined.daemon.output, /Blobs: +http:\/\/127\.0\.0\.1:\d+ \(joined/);
    // Its cluster certificate (router-to-router mTLS): its own key (0600), signed by the install CA for its node id.
    await clusterCertOf(joined.dataDir, creds.nodeId);
    assert.match(joined.daemon.output, /Cluster: +other nodes' routers reach this node's apps at \S+ \(mutual TLS/);
  });

  test('an app deployed after the join runs on the joined node, its artifact fetched over HTTP', async () => {
    const firstId = (await readFile(join(suite.p.nodeDir, 'node-id'), 'utf8')).trim();
    await ok(['nodes', 'cordon', firstId]); // only the joined node takes new instances
    await ok(['apps', 'create', 'joined']);
    await ok(['config', 'set', 'VERSION=from-joined', '--app', 'joined']);
    await ok(['deploy', await appDir(knobApp), '--app', 'joined']);
    await waitFor('running on the joined node', async () => {
      const r = (await json<any[]>(['ps', '--app', 'joined'])).filter((i) => i.state === 'running');
      return r.length === 1 && r[0].nodeId === creds.nodeId;
    }, 90_000, 300);
    const r = await waitFor('served by the joined node', async () => {
      const res = await suite.p.fetchViaRouterPort(joined.routerPort, 'joined');
      return res.status === 200 && res;
    }, 30_000, 200);
    assert.equal(r.body, 'from-joined');
    // The verified copy in the node's own cache is the artifact, under its digest.
    const cached = await cachedBlobs(joined.dataDir);
    assert.equal(cached.length, 1);
    const bytes = await readFile(cached[0].path);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), cached[0].digest);
  });

  test("the blob route: node credentials only, another node's id is 401, an unknown digest 404", async () => {
    const [{ digest }] = await cachedBlobs(joined.dataDir);
    const get = (d: string, authorization?: string) => fetch(`${suite.p.apiUrl}/v1/node/blobs/${d}`, { headers: authorization ? { authorization } : {} });
    const good = await get(digest, `Node ${creds.nodeId}:${creds.secret}`);
    assert.equal(good.status, 200);
    assert.equal(createHash('sha256').update(Buffer.from(await good.arrayBuffer())).digest('hex'), digest);
    const firstId = (await readFile(join(suite.p.nodeDir, 'node-id'), 'utf8')).trim();
    const other = await get(digest, `Node ${firstId}:${creds.secret}`);
    assert.equal(other.status, 401);
    assert.match((await other.json()).error.message, /invalid node credentials/);
    assert.equal((await get(digest)).status, 401);
    assert.equal((await get(digest, `Bearer ${suite.token}`)).status, 401, 'a user token is no node credential');
    assert.equal((await get('0'.repeat(64), `Node ${creds.nodeId}:${creds.secret}`)).status, 404);
  });

  test('the cluster certificate route: a new certificate for the calling node only, for a P-256 public key', async () => {
    const post = (body: unknown, authorization?: string) => fetch(`${suite.p.apiUrl}/v1/node/certificate`, {
      method: 'POST', headers: { 'content-type': 'application/json', ...(authorization ? { authorization } : {}) }, body: JSON.stringify(body),
    });
    const publicKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    const good = await post({ publicKey }, `Node ${creds.nodeId}:${creds.secret}`);
    assert.equal(good.status, 200);
    const issued = await good.json() as { certPem: string; caPem: string; notAfter: string };
    const cert = new X509Certificate(issued.certPem);
    assert.equal(cert.subjectAltName, `URI:shellwego://node/${creds.nodeId}`);
    assert.ok(cert.verify(new X509Certificate(await readFile(join(suite.p.serverDir, 'tls', 'local-ca.pem'), 'utf8')).publicKey));
    assert.equal(new Date(cert.validTo).toISOString(), issued.notAfter);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    const bad = await post({ publicKey: rsa }, `Node ${creds.nodeId}:${creds.secret}`);
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.code, 'invalid_public_key');
    const firstId = (await readFile(join(suite.p.nodeDir, 'node-id'), 'utf8')).trim();
    assert.equal((await post({ publicKey }, `Node ${firstId}:${creds.secret}`)).status, 401, "another node's id");
    assert.equal((await post({ publicKey })).status, 401);

    // At join: a bad public key uses up nothing; a good one gets the certificate in the answer.
    const token = await joinToken();
    const joinWith = (clusterPublicKey: string) => fetch(`${suite.p.apiUrl}/v1/nodes/join`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token, name: 'cert-join', isolation: 'none', capacity: { cpus: 1, memoryMb: 512 }, clusterPublicKey }),
    });
    const refusedKey = await joinWith('-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n');
    assert.equal(refusedKey.status, 400);
    assert.equal((await refusedKey.json()).error.code, 'invalid_public_key');
    assert.equal(await nodeCount(), 2, 'nothing registered');
    const accepted = await joinWith(publicKey);
    assert.equal(accepted.status, 201, 'the token was not used up by the refused join');
    const answer = await accepted.json() as { nodeId: string; cluster: { certPem: string } };
    assert.equal(new X509Certificate(answer.cluster.certPem).subjectAltName, `URI:shellwego://node/${answer.nodeId}`);
    await ok(['nodes', 'remove', answer.nodeId]);
  });

  test('a restart needs no join token: the saved credentials are used, same node id; a missing cluster certificate is asked for again', async () => {
    joined.token = null;
    await joined.daemon.stop();
    const before = await clusterCertOf(joined.dataDir, creds.nodeId);
    await rm(join(joined.dataDir, 'cluster-tls'), { recursive: true });
    await joined.daemon.start();
    const after = await clusterCertOf(joined.dataDir, creds.nodeId);
    assert.notEqual(after.fingerprint256, before.fingerprint256, 'a new certificate');
    assert.equal((await readFile(join(joined.dataDir, 'node-id'), 'utf8')).trim(), creds.nodeId);
    await waitFor('served again', async () => (await suite.p.fetchViaRouterPort(joined.routerPort, 'joined')).status === 200, 60_000, 300);
    assert.equal(await nodeCount(), 2);
  });

  test('used, expired and forged join tokens: the node exits 1 with a clear message and nothing is registered', async () => {
    const once = await joinToken();
    await suite.p.addJoinedNode(once);
    await waitFor('three nodes', async () => (await nodeCount()) === 3, 30_000, 300);

    await refusedJoin(suite.p.joinedNode(once), /refused to let this node join \(HTTP 401\): join token already used up/);
    const expiring = await joinToken(['--expires', '1s']);
    await new Promise((r) => setTimeout(r, 1500));
    await refusedJoin(suite.p.joinedNode(expiring), /join token expired/);
    await refusedJoin(suite.p.joinedNode('swj_' + 'x'.repeat(43)), /join token not recognised/);
    await refusedJoin(suite.p.joinedNode(''), /give --token <join token>/);
    assert.equal(await nodeCount(), 3, 'no refused node was registered');
  });
});

async function cachedBlobs(dataDir: string): Promise<{ digest: string; path: string }[]> {
  const root = join(dataDir, 'blobs', 'sha256');
  const out = [];
  for (const prefix of await readdir(root)) for (const digest of await readdir(join(root, prefix))) out.push({ digest, path: join(root, prefix, digest) });
  return out;
}

/** The node's saved cluster certificate, checked: key 0600 and the certificate's, identity, issuer = the install CA. */
async function clusterCertOf(dataDir: string, nodeId: string): Promise<X509Certificate> {
  const dir = join(dataDir, 'cluster-tls');
  assert.equal((await stat(join(dir, 'key.pem'))).mode & 0o777, 0o600);
  const cert = new X509Certificate(await readFile(join(dir, 'cert.pem'), 'utf8'));
  assert.equal(cert.subjectAltName, `URI:shellwego://node/${nodeId}`);
  assert.ok(cert.checkPrivateKey(createPrivateKey(await readFile(join(dir, 'key.pem'), 'utf8'))));
  const ca = new X509Certificate(await readFile(join(suite.p.serverDir, 'tls', 'local-ca.pem'), 'utf8'));
  assert.ok(cert.checkIssued(ca) && cert.verify(ca.publicKey), 'signed by the install CA');
  return cert;
}
