import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCa, issueLeaf, loadCa } from '@shellwego/control-plane';
import { HttpBlobStore } from '@shellwego/store';
import { nodeCredentials } from './node-join.ts';

const BLOB = Buffer.from('the artifact');
const DIGEST = createHash('sha256').update(BLOB).digest('hex');
const fingerprint = (pem: string) => `sha256:${createHash('sha256').update(new X509Certificate(pem).raw).digest('hex')}`;

/** A CA and a way to issue leaves from it (served as leaf + CA, like the real server). */
async function ca(name: string) {
  const issued = await createCa(name);
  const loaded = await loadCa(issued.certPem, issued.keyPem);
  return {
    pem: issued.certPem,
    fingerprint: fingerprint(issued.certPem),
    async leaf(hostnames = ['127.0.0.1']) {
      const l = await issueLeaf(loaded, hostnames);
      return { cert: `${l.certPem.trimEnd()}\n${issued.certPem.trimEnd()}\n`, key: l.keyPem, leafOnly: { cert: l.certPem, key: l.keyPem } };
    },
  };
}

/** A control plane stand-in over https: the join route (answering with `caPem`) and the blob route. */
async function fakeControlPlane(tls: { key: string; cert: string }, caPem: string | null): Promise<{ server: Server; url: string; joins: number }> {
  const state = { joins: 0 };
  const server = createServer(tls, (req, res) => {
    if (req.method === 'POST' && req.url === '/v1/nodes/join') {
      state.joins++;
      return res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ nodeId: 'nod_pinned', secret: 'swn_secret', caPem, natsUsesInstallCa: true }));
    }
    if (req.url === `/v1/node/blobs/${DIGEST}` && req.headers.authorization === 'Node nod_pinned:swn_secret') return res.writeHead(200).end(BLOB);
    res.writeHead(404).end('{}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, get joins() { return state.joins; } };
}

async function scratch() {
  const dir = await mkdtemp(join(tmpdir(), 'swg-pin-'));
  return { dir, a: await ca('A'), b: await ca('B'), node: join(dir, 'node') };
}

const blobStore = (url: string, pin: { fingerprint: string; pem: string } | null, cacheDir: string) =>
  new HttpBlobStore({ apiUrl: url, authorization: 'Node nod_pinned:swn_secret', cacheDir, pin });

test("https: the install's CA is pinned at join (trust on first use, with a warning); renewed leaves of that CA work, another CA is refused", async () => {
  const { dir, a, b, node } = await scratch();
  const cp = await fakeControlPlane(await a.leaf(), a.pem);
  try {
    const warnings: string[] = [];
    const creds = await nodeCredentials({ dataDir: node, joinUrl: cp.url, joinToken: 'swj_t', caFingerprint: null, isolation: 'none', warn: (m) => warnings.push(m) });
    assert.equal(creds?.ca?.fingerprint, a.fingerprint, 'the CA is pinned, not the leaf');
    assert.equal(creds?.natsUsesInstallCa, true);
    assert.match(warnings.join('\n'), /WARNING: no --ca-fingerprint given: trusting the CA .* on first use \(sha256:[0-9a-f]{64}\)/);
    assert.equal((await stat(join(node, 'node-credentials.json'))).mode & 0o777, 0o600);
    assert.deepEqual(await readFile(await blobStore(cp.url, creds!.ca, join(node, 'blobs')).pathOf(DIGEST)), BLOB);

    // The control plane renews its certificate: a new leaf and key, the same CA.
    cp.server.setSecureContext(await a.leaf());
    assert.deepEqual(await readFile(await blobStore(cp.url, creds!.ca, join(node, 'blobs-renewed')).pathOf(DIGEST)), BLOB, 'a renewed leaf of the pinned CA is accepted');

    // Someone (or a misconfiguration) now presents a certificate from another CA.
    cp.server.setSecureContext(await b.leaf());
    await assert.rejects(blobStore(cp.url, creds!.ca, join(node, 'blobs2')).pathOf(DIGEST), /presented a certificate not issued by the CA pinned at join \(sha256:[0-9a-f]{64}\): refusing to talk to it/);
    assert.deepEqual(await readdir(join(node, 'blobs2')).catch(() => []), [], 'nothing fetched');
    // A restart reads the saved CA.
    const again = await nodeCredentials({ dataDir: node, joinUrl: cp.url, joinToken: null, caFingerprint: null, isolation: 'none' });
    assert.deepEqual(again?.ca, creds!.ca);
  } finally {
    cp.server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('https with --ca-fingerprint: the matching CA joins, another is refused before the token is sent and nothing is saved', async () => {
  const { dir, a, b, node } = await scratch();
  const cp = await fakeControlPlane(await a.leaf(), a.pem);
  try {
    await assert.rejects(
      nodeCredentials({ dataDir: node, joinUrl: cp.url, joinToken: 'swj_t', caFingerprint: b.fingerprint, isolation: 'none' }),
      /presented a certificate chain without the CA sha256:[0-9a-f]{64} .*: refusing to join \(check --ca-fingerprint/,
    );
    assert.equal(cp.joins, 0, 'the join token never left the node');
    await assert.rejects(stat(node), /ENOENT/);
    // openssl's notation (AB:CD:…), as an operator might copy it.
    const colons = `sha256:${new X509Certificate(a.pem).fingerprint256}`;
    const warnings: string[] = [];
    const creds = await nodeCredentials({ dataDir: node, joinUrl: cp.url, joinToken: 'swj_t', caFingerprint: colons, isolation: 'none', warn: (m) => warnings.push(m) });
    assert.equal(creds?.ca?.fingerprint, a.fingerprint);
    assert.deepEqual(warnings, [], 'no trust-on-first-use warning with a fingerprint');
    assert.equal(cp.joins, 1);
  } finally {
    cp.server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('join refusals: a CA in the join answer other than the pinned one, no CA in the chain, a certificate not for this host', async () => {
  const { dir, a, b, node } = await scratch();
  const lying = await fakeControlPlane(await a.leaf(), b.pem);
  const leafOnly = await fakeControlPlane((await a.leaf()).leafOnly, a.pem);
  const otherHost = await fakeControlPlane(await a.leaf(['cp.example.com']), a.pem);
  try {
    const base = { dataDir: node, joinToken: 'swj_t', isolation: 'none', warn: () => {} };
    await assert.rejects(nodeCredentials({ ...base, joinUrl: lying.url, caFingerprint: a.fingerprint }), /says its CA is sha256:[0-9a-f]{64}, not the pinned sha256:[0-9a-f]{64}: refusing to join/);
    await assert.rejects(nodeCredentials({ ...base, joinUrl: leafOnly.url, caFingerprint: null }), /sent no CA certificate with its own .*nothing to pin/);
    await assert.rejects(nodeCredentials({ ...base, joinUrl: otherHost.url, caFingerprint: a.fingerprint }), /signed by the pinned CA but not issued for this host name .*--api-hostname/);
    assert.equal(otherHost.joins, 0, 'no token sent to a certificate for another host');
    await assert.rejects(stat(join(node, 'node-credentials.json')), /ENOENT/, 'nothing saved');
  } finally {
    for (const s of [lying, leafOnly, otherHost]) s.server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('credentials saved by a node that pinned a leaf (before CA pinning) are refused with what to do', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-pin-'));
  try {
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'node-credentials.json'), JSON.stringify({ apiUrl: 'https://127.0.0.1:1', nodeId: 'nod_x', secret: 's', pin: { fingerprint: 'sha256:00', pem: 'x' } }));
    await assert.rejects(nodeCredentials({ dataDir: dir, joinUrl: null, joinToken: null, caFingerprint: null, isolation: 'none' }), /pins the control plane's certificate, not its CA .*join again/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('join options that do not fit are clear errors', async () => {
  const { dir, a, node } = await scratch();
  const cp = await fakeControlPlane(await a.leaf(), a.pem);
  try {
    const base = { dataDir: node, caFingerprint: null, isolation: 'none', warn: () => {} };
    await assert.rejects(nodeCredentials({ ...base, joinUrl: null, joinToken: 'swj_t' }), /--token \(SHELLWEGO_JOIN_TOKEN\) needs --join/);
    assert.equal(await nodeCredentials({ ...base, joinUrl: null, joinToken: null }), null, 'no join: the node reads a local blob directory');
    await assert.rejects(nodeCredentials({ ...base, joinUrl: 'ftp://cp', joinToken: 'swj_t' }), /must be an http:\/\/ or https:\/\/ URL/);
    await assert.rejects(nodeCredentials({ ...base, joinUrl: 'http://127.0.0.1:1', joinToken: 'swj_t', caFingerprint: a.fingerprint }), /pins an https API/);
    await assert.rejects(nodeCredentials({ ...base, joinUrl: cp.url, joinToken: 'swj_t', caFingerprint: 'sha256:nope' }), /fingerprint is sha256:<64 hex digits>/);
    await nodeCredentials({ ...base, joinUrl: cp.url, joinToken: 'swj_t' });
    await assert.rejects(nodeCredentials({ ...base, joinUrl: 'https://other.example:8443', joinToken: null }), /this node joined the control plane at https:\/\/127\.0\.0\.1:\d+, not https:\/\/other\.example:8443/);
  } finally {
    cp.server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('several servers in --join (HA): joins through the first, every one is kept for artifacts; a list without the joined server, or mixing http and https, is refused', async () => {
  const { dir, a, node } = await scratch();
  const cp = await fakeControlPlane(await a.leaf(), a.pem);
  const other = 'https://127.0.0.1:1';
  try {
    await assert.rejects(nodeCredentials({ dataDir: node, joinUrl: `${cp.url},http://127.0.0.1:1`, joinToken: 'swj_t', caFingerprint: a.fingerprint, isolation: 'none' }),
      /the control plane's servers must all be https or all plain http/);
    const creds = await nodeCredentials({ dataDir: node, joinUrl: ` ${cp.url}/ , ${other}`, joinToken: 'swj_t', caFingerprint: a.fingerprint, isolation: 'none' });
    assert.equal(creds?.apiUrl, cp.url);
    assert.deepEqual(creds?.apiUrls, [cp.url, other]);
    assert.equal(JSON.parse(await readFile(join(node, 'node-credentials.json'), 'utf8')).apiUrls, undefined, 'the list is configuration, not saved');
    // Restarted with the servers in another order (or one added): the joined one stays first.
    const again = await nodeCredentials({ dataDir: node, joinUrl: `${other},${cp.url}`, joinToken: null, caFingerprint: null, isolation: 'none' });
    assert.deepEqual(again?.apiUrls, [cp.url, other]);
    await assert.rejects(nodeCredentials({ dataDir: node, joinUrl: other, joinToken: null, caFingerprint: null, isolation: 'none' }),
      /this node joined the control plane at https:\/\/127\.0\.0\.1:\d+, not https:\/\/127\.0\.0\.1:1: use another --data-dir .*or list .* in --join too/);
  } finally {
    cp.server.close();
    await rm(dir, { recursive: true, force: true });
  }
});
