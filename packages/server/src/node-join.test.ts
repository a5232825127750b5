import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HttpBlobStore } from '@shellwego/store';
import { nodeCredentials } from './node-join.ts';

const exec = promisify(execFile);
const BLOB = Buffer.from('the artifact');
const DIGEST = createHash('sha256').update(BLOB).digest('hex');

async function selfSigned(dir: string, name: string): Promise<{ key: string; cert: string; fingerprint: string }> {
  await exec('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', `/CN=${name}`,
    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.pem`)]);
  const cert = await readFile(join(dir, `${name}.pem`), 'utf8');
  // openssl's own notation (AB:CD:…), as an operator would copy it.
  return { key: await readFile(join(dir, `${name}.key`), 'utf8'), cert, fingerprint: `sha256:${new X509Certificate(cert).fingerprint256}` };
}

/** A control plane stand-in over https: the join and blob routes. */
async function fakeControlPlane(tls: { key: string; cert: string }): Promise<{ server: Server; url: string; joins: number }> {
  const state = { joins: 0 };
  const server = createServer(tls, (req, res) => {
    if (req.method === 'POST' && req.url === '/v1/nodes/join') {
      state.joins++;
      return res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ nodeId: 'nod_pinned', secret: 'swn_secret' }));
    }
    if (req.url === `/v1/node/blobs/${DIGEST}` && req.headers.authorization === 'Node nod_pinned:swn_secret') return res.writeHead(200).end(BLOB);
    res.writeHead(404).end('{}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, get joins() { return state.joins; } };
}

async function scratch() {
  const dir = await mkdtemp(join(tmpdir(), 'swg-pin-'));
  return { dir, a: await selfSigned(dir, 'a'), b: await selfSigned(dir, 'b'), node: join(dir, 'node') };
}

test('https: the certificate seen at join is pinned (trust on first use); another one later is refused', async () => {
  const { dir, a, b, node } = await scratch();
  const cp = await fakeControlPlane(a);
  try {
    const creds = await nodeCredentials({ dataDir: node, joinUrl: cp.url, joinToken: 'swj_t', caFingerprint: null, isolation: 'none' });
    assert.equal(creds?.pin?.fingerprint, `sha256:${createHash('sha256').update(new X509Certificate(a.cert).raw).digest('hex')}`);
    assert.equal((await stat(join(node, 'node-credentials.json'))).mode & 0o777, 0o600);
    const blobs = new HttpBlobStore({ apiUrl: cp.url, authorization: 'Node nod_pinned:swn_secret', cacheDir: join(node, 'blobs'), pin: creds!.pin });
    assert.deepEqual(await readFile(await blobs.pathOf(DIGEST)), BLOB, 'a self-signed certificate verifies once pinned');

    // The control plane (or someone in between) now presents another certificate.
    cp.server.setSecureContext(b);
    const fresh = new HttpBlobStore({ apiUrl: cp.url, authorization: 'Node nod_pinned:swn_secret', cacheDir: join(node, 'blobs2'), pin: creds!.pin });
    await assert.rejects(fresh.pathOf(DIGEST), /presented a certificate other than the one pinned at join \(sha256:[0-9a-f]{64}\): refusing/);
    assert.deepEqual(await readdir(join(node, 'blobs2')).catch(() => []), [], 'nothing fetched');
    // A restart reads the saved pin: still refused.
    const again = await nodeCredentials({ dataDir: node, joinUrl: cp.url, joinToken: null, caFingerprint: null, isolation: 'none' });
    assert.deepEqual(again?.pin, creds!.pin);
  } finally {
    cp.server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('https with --ca-fingerprint: a matching certificate joins, another is refused before the token is sent', async () => {
  const { dir, a, b, node } = await scratch();
  const cp = await fakeControlPlane(a);
  try {
    await assert.rejects(
      nodeCredentials({ dataDir: node, joinUrl: cp.url, joinToken: 'swj_t', caFingerprint: b.fingerprint, isolation: 'none' }),
      /presented certificate sha256:[0-9a-f]{64}, not the expected sha256:[0-9a-f]{64}: refusing to join/,
    );
    assert.equal(cp.joins, 0, 'the join token never left the node');
    await assert.rejects(stat(node), /ENOENT/);
    const creds = await nodeCredentials({ dataDir: node, joinUrl: cp.url, joinToken: 'swj_t', caFingerprint: a.fingerprint, isolation: 'none' });
    assert.equal(creds?.nodeId, 'nod_pinned');
    assert.equal(cp.joins, 1);
  } finally {
    cp.server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('join options that do not fit are clear errors', async () => {
  const { dir, a, node } = await scratch();
  const cp = await fakeControlPlane(a);
  try {
    const base = { dataDir: node, caFingerprint: null, isolation: 'none' };
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
