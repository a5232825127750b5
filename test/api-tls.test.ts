/**
 * Split mode with the API over https and NATS over TLS, both from the install's CA (the defaults
 * of `server` plus `nats-tls`): a node joins pinning the CA by fingerprint (`shellwego nodes token`
 * prints it), runs apps whose artifacts it fetches over https and talks to NATS verified against
 * the pinned CA; the server's new leaf after a restart changes nothing for it, a certificate from
 * another CA cuts it off with a clear error. A wrong fingerprint joins nothing.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { createCa, issueLeaf, loadCa } from '@shellwego/control-plane';
import { pemFingerprint } from '@shellwego/store';
import { freePort, waitFor } from './helpers/platform.ts';
import { appDir, knobApp } from './helpers/apps.ts';
import { splitSuite } from './helpers/split.ts';
import type { JoinedNode } from './helpers/split.ts';

const suite = splitSuite({ isolation: 'none', apiTls: true, natsTls: true, env: { SHELLWEGO_CLUSTER_PORT: '0' } });
const { ok } = suite;

async function json<T = any>(args: string[]): Promise<T> {
  return JSON.parse((await ok([...args, '--json'])).stdout) as T;
}

/** The leaf certificate the API presents right now (no verification: just which one). */
function apiLeaf(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.destroy();
    });
    s.on('error', reject);
  });
}

/** Deploys a fresh source (a new artifact the node has not cached) as `app` onto the joined node only. */
async function deployTo(app: string, marker: string, flags: string[] = []): Promise<void> {
  await ok(['apps', 'create', app]);
  await ok(['config', 'set', `VERSION=${marker}`, '--app', app]);
  await ok(['deploy', await appDir({ ...knobApp, 'marker.txt': marker }), '--app', app, ...flags]);
}

const runningOn = async (app: string, nodeId: string) =>
  (await json<any[]>(['ps', '--app', app])).some((i) => i.state === 'running' && i.nodeId === nodeId);

describe('API over https and NATS over TLS, the CA pinned at join', () => {
  let caFingerprint: string;
  let joined: JoinedNode;
  let nodeId: string;

  test('the server serves https with a leaf of the install CA and says so; `nodes token` prints the join command with the CA fingerprint', async () => {
    const caPem = await readFile(join(suite.p.serverDir, 'tls', 'local-ca.pem'), 'utf8');
    assert.equal(caPem, await readFile(suite.p.natsTlsFiles!.caFile, 'utf8'), 'one CA for the API and NATS');
    assert.match(suite.p.server.output, /TLS: +install CA sha256:[0-9a-f]{64}/);
    const r = await suite.p.cli(['nodes', 'token'], suite.token);
    assert.equal(r.code, 0, r.stderr);
    const m = /--join (https:\/\/127\.0\.0\.1:\d+) --token (swj_\S+) --ca-fingerprint (sha256:[0-9a-f]{64})/.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.equal(m[1], suite.p.apiUrl);
    assert.equal(m[3], pemFingerprint(caPem));
    caFingerprint = m[3];
    const t = await json<{ caFingerprint: string; apiUrl: string }>(['nodes', 'token']);
    assert.equal(t.caFingerprint, caFingerprint);
    assert.equal(t.apiUrl, suite.p.apiUrl);
  });

  test('a wrong --ca-fingerprint: the node refuses to join, saves nothing and registers nothing', async () => {
    const before = (await json<any[]>(['nodes', 'list'])).length;
    const token = (await json<{ token: string }>(['nodes', 'token'])).token;
    const node = suite.p.joinedNode(token);
    node.caFingerprint = `sha256:${'ab'.repeat(32)}`;
    await assert.rejects(node.daemon.start(), (err: Error) => /node exited with 1/.test(err.message) && /without the CA sha256:(ab){32} .*refusing to join/.test(err.message));
    await assert.rejects(stat(join(node.dataDir, 'node-credentials.json')), /ENOENT/);
    assert.equal((await json<any[]>(['nodes', 'list'])).length, before);
  });

  test('the right fingerprint: the node joins, saves the CA, talks NATS over TLS with it and runs an app fetched over https', async () => {
    joined = suite.p.joinedNode((await json<{ token: string }>(['nodes', 'token'])).token);
    joined.caFingerprint = caFingerprint;
    joined.routerPort = await freePort();
    await joined.daemon.start();
    assert.doesNotMatch(joined.daemon.output, /no --ca-fingerprint given/);
    const creds = JSON.parse(await readFile(join(joined.dataDir, 'node-credentials.json'), 'utf8'));
    assert.equal(creds.ca.fingerprint, caFingerprint);
    assert.equal(pemFingerprint(creds.ca.pem), caFingerprint);
    assert.equal(creds.natsUsesInstallCa, true, 'the server said nats-server uses the install CA');
    nodeId = creds.nodeId;
    // Ready means heartbeats arrive: over NATS TLS, verified against the pinned CA (the node has no CA file).
    await waitFor('the joined node is ready', async () => (await json<any[]>(['nodes', 'list'])).find((n) => n.id === nodeId)?.state === 'ready', 30_000, 300);
    const firstId = (await readFile(join(suite.p.nodeDir, 'node-id'), 'utf8')).trim();
    await ok(['nodes', 'cordon', firstId]); // only the joined node takes new instances
    await deployTo('tls-one', 'one');
    await waitFor('running on the joined node', () => runningOn('tls-one', nodeId), 90_000, 300);
    await waitFor('served by the joined node', async () => (await suite.p.fetchViaRouterPort(joined.routerPort, 'tls-one')).body === 'one', 30_000, 200);
  });

  test('the server restarts with a new leaf from the same CA: the node keeps fetching artifacts', async () => {
    const before = await apiLeaf(suite.p.apiPort);
    await suite.p.restartServer();
    assert.notEqual(await apiLeaf(suite.p.apiPort), before, 'a new leaf certificate');
    await deployTo('tls-two', 'two');
    await waitFor('running on the joined node', () => runningOn('tls-two', nodeId), 90_000, 300);
    await waitFor('served by the joined node', async () => (await suite.p.fetchViaRouterPort(joined.routerPort, 'tls-two')).body === 'two', 30_000, 200);
  });

  test('the server presents a certificate from another CA: the node refuses to fetch from it, with a clear error', async () => {
    const dir = suite.p.serverDir;
    const issued = await createCa('Somebody Else');
    const leaf = await issueLeaf(await loadCa(issued.certPem, issued.keyPem), ['127.0.0.1', 'localhost']);
    await writeFile(join(dir, 'other.crt'), `${leaf.certPem.trimEnd()}\n${issued.certPem.trimEnd()}\n`);
    await writeFile(join(dir, 'other.key'), leaf.keyPem, { mode: 0o600 });
    // The CLI trusts both CAs (it is not what is tested here); the node trusts only its pinned one.
    await writeFile(join(dir, 'both-cas.pem'), `${await readFile(join(dir, 'tls', 'local-ca.pem'), 'utf8')}\n${issued.certPem}`);
    suite.p.cliCaFile = join(dir, 'both-cas.pem');
    suite.p.serverEnv = { SHELLWEGO_API_TLS_CERT: join(dir, 'other.crt'), SHELLWEGO_API_TLS_KEY: join(dir, 'other.key') };
    await suite.p.restartServer();
    assert.equal(new X509Certificate(await readFile(join(dir, 'other.crt'))).issuer.includes('Somebody Else'), true);
    await deployTo('tls-three', 'three', ['--no-wait']);
    const refusal = /presented a certificate not issued by the CA pinned at join \(sha256:[0-9a-f]{64}\): refusing to talk to it/;
    await waitFor('the node refuses the other CA', async () => refusal.test(joined.daemon.output), 90_000, 300);
    // Users see why too: the instance failed to start, with the reason.
    await waitFor('the reason shows in ps', async () => refusal.test(JSON.stringify(await json<any[]>(['ps', '--app', 'tls-three']))), 30_000, 300);
    assert.equal(await runningOn('tls-three', nodeId), false);
  });

  test("a node given another CA for NATS refuses nats-server's certificate with a clear error", async () => {
    const other = await createCa('Not The NATS CA');
    const file = join(suite.p.serverDir, 'not-nats-ca.pem');
    await writeFile(file, other.certPem);
    suite.p.serverEnv = {};
    suite.p.cliCaFile = null;
    await suite.p.restartServer();
    const node = suite.p.joinedNode((await json<{ token: string }>(['nodes', 'token'])).token);
    node.caFingerprint = caFingerprint;
    node.natsTlsCa = file;
    await assert.rejects(node.daemon.start(), (err: Error) => /nats-server at nats:\/\/127\.0\.0\.1:\d+ presented a certificate the trusted CA sha256:[0-9a-f]{64} did not issue for it: refusing to connect/.test(err.message));
  });
});
