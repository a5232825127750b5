/**
 * A node's cluster certificate (ADR 0022) on the node's side: asked for with the node's
 * credentials, checked (its key, its node id, its CA), saved with the key 0600, renewed when
 * under 30 days are left, kept while still valid if the control plane does not answer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeIdentityUri } from '@shellwego/core';
import { createCa, importNodePublicKey, issueNodeLeaf, loadCa } from '@shellwego/control-plane';
import { ensureNodeCert, loadNodeCert, renewNodeCertDaily, requestNodeCert, startupNodeCert } from './node-cert.ts';
import type { NodeCredentials } from './node-join.ts';

const NODE = 'nod_certtest';
const SECRET = 'swn_secret';

/** The certificate route of a control plane (the real issuer), with what it answers adjustable. */
async function controlPlane(): Promise<{ url: string; server: Server; asked: number; lifetimeDays: number; status: number; nodeId: string; caPem: string }> {
  const pem = await createCa('Test install CA');
  const ca = await loadCa(pem.certPem, pem.keyPem);
  const state = { url: '', server: null as unknown as Server, asked: 0, lifetimeDays: 90, status: 200, nodeId: NODE, caPem: pem.certPem };
  state.server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c));
    req.on('end', () => {
      void (async () => {
        state.asked++;
        if (req.url !== '/v1/node/certificate' || req.headers.authorization !== `Node ${NODE}:${SECRET}`) return res.writeHead(401).end(JSON.stringify({ error: { message: 'invalid node credentials' } }));
        if (state.status !== 200) return res.writeHead(state.status).end(JSON.stringify({ error: { message: 'database away' } }));
        const key = (await importNodePublicKey((JSON.parse(body) as { publicKey: string }).publicKey))!;
        const leaf = await issueNodeLeaf(ca, state.nodeId, nodeIdentityUri(state.nodeId), key, new Date(), state.lifetimeDays);
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ certPem: leaf.certPem, caPem: ca.certPem, notAfter: leaf.notAfter.toISOString() }));
      })();
    });
  });
  await new Promise<void>((r) => state.server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${(state.server.address() as AddressInfo).port}`;
  return state;
}

const creds = (apiUrls: string[], secret = SECRET): NodeCredentials => ({ apiUrl: apiUrls[0], apiUrls, nodeId: NODE, secret, ca: null, natsUsesInstallCa: false, natsCreds: null });

function logs() {
  const lines: string[] = [];
  const at = (level: string) => (o: object, m: string) => void lines.push(`${level} ${m} ${JSON.stringify(o)}`);
  return { lines, log: { info: at('info'), warn: at('warn'), error: at('error') } };
}

test('asked for with the node credentials, saved (key 0600), renewed under 30 days left, kept while valid when the control plane fails', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-node-cert-'));
  const cp = await controlPlane();
  try {
    const { lines, log } = logs();
    // No certificate yet (a node joined before this existed): the first server that answers issues one.
    cp.lifetimeDays = 10;
    const first = await ensureNodeCert(creds(['http://127.0.0.1:1', cp.url]), dir, log);
    assert.ok(first);
    assert.equal(new X509Certificate(first.cert).subjectAltName, `URI:shellwego://node/${NODE}`);
    assert.equal((await stat(join(dir, 'cluster-tls', 'key.pem'))).mode & 0o777, 0o600);
    assert.equal(await readFile(join(dir, 'cluster-tls', 'ca.pem'), 'utf8'), cp.caPem);
    assert.equal(cp.asked, 1);

    // Ten days left: under 30, so a new one (new key) replaces it.
    cp.lifetimeDays = 90;
    const second = await ensureNodeCert(creds([cp.url]), dir, log);
    assert.ok(second && second.cert !== first.cert && second.key !== first.key);
    assert.equal(cp.asked, 2);
    // Ninety days left: the saved one, nothing asked.
    assert.equal((await ensureNodeCert(creds([cp.url]), dir, log))?.cert, second.cert);
    assert.equal(cp.asked, 2);

    // Expiring soon and the control plane fails: the current one stays in use (said in the log).
    cp.status = 503;
    const kept = await ensureNodeCert(creds([cp.url]), dir, log, Date.now() + 70 * 86_400_000);
    assert.equal(kept?.cert, second.cert);
    assert.match(lines.join('\n'), /warn renewing the node cluster certificate failed: the current one stays in use until it expires.*database away/);
    // Expired and no answer: none.
    assert.equal(await ensureNodeCert(creds([cp.url]), dir, log, Date.now() + 100 * 86_400_000), null);
    assert.match(lines.at(-1)!, /error no cluster certificate for this node/);
  } finally {
    cp.server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test("refused: wrong credentials (a removed node), a certificate for another node; a damaged or mismatched saved pair is none", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-node-cert-'));
  const cp = await controlPlane();
  try {
    const { lines, log } = logs();
    assert.equal(await ensureNodeCert(creds([cp.url, cp.url], 'swn_wrong'), dir, log), null);
    assert.equal(cp.asked, 1, 'a 401 is not asked of the next server');
    assert.match(lines.join('\n'), /HTTP 401: invalid node credentials/);
    cp.nodeId = 'nod_someoneelse';
    assert.equal(await ensureNodeCert(creds([cp.url]), dir, log), null);
    assert.match(lines.at(-1)!, /not for node nod_certtest/);
    assert.equal(await loadNodeCert(dir, NODE), null, 'nothing saved');

    cp.nodeId = NODE;
    const good = (await ensureNodeCert(creds([cp.url]), dir, log))!;
    assert.deepEqual((await loadNodeCert(dir, NODE))?.cert, good.cert);
    assert.equal(await loadNodeCert(dir, 'nod_other'), null, "another node's data dir");
    // A key that is not the certificate's (a crash between the two renames): none, so the node asks again.
    const other = (await ensureNodeCert(creds([cp.url]), await mkdtemp(join(tmpdir(), 'swg-node-cert-')), log))!;
    await writeFile(join(dir, 'cluster-tls', 'key.pem'), other.key);
    assert.equal(await loadNodeCert(dir, NODE), null);
  } finally {
    cp.server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('at start a valid saved certificate is used without asking; the periodic check (right away, then daily) hands a renewed one over', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-node-cert-'));
  const cp = await controlPlane();
  try {
    const { log } = logs();
    cp.lifetimeDays = 10;
    const issued = (await startupNodeCert(creds([cp.url]), dir, log))!;
    assert.equal(cp.asked, 1, 'none saved: asked at start');
    const first = (await startupNodeCert(creds([cp.url]), dir, log))!;
    assert.equal(first.cert, issued.cert);
    assert.equal(cp.asked, 1, 'valid (10 days left): used at start, renewal left to the background check');
    cp.lifetimeDays = 90;
    const renewed = await new Promise<string>((resolve) => {
      const r = renewNodeCertDaily(creds([cp.url]), dir, first, (c) => {
        r.close();
        resolve(c.cert);
      }, log);
    });
    assert.notEqual(renewed, first.cert);
    assert.equal((await loadNodeCert(dir, NODE))?.cert, renewed);
  } finally {
    cp.server.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a server that never answers is given up on and the next one asked', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-node-cert-'));
  const cp = await controlPlane();
  const held = new Set<Socket>();
  const silent = createTcpServer((sock) => void held.add(sock));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  try {
    const hanging = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    const got = await requestNodeCert(creds([hanging, cp.url]), dir, 300);
    assert.equal(new X509Certificate(got.cert).subjectAltName, `URI:shellwego://node/${NODE}`);
    await assert.rejects(requestNodeCert(creds([hanging]), dir, 300), /no answer within 0\.3 s/);
  } finally {
    for (const s of held) s.destroy();
    silent.close();
    cp.server.close();
    await rm(dir, { recursive: true, force: true });
  }
});
