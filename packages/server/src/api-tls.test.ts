import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { pino } from 'pino';
import { createCa, issueLeaf, loadCa, SecretBox } from '@shellwego/control-plane';
import { openSqliteStore, pemFingerprint } from '@shellwego/store';
import { apiHostnames, apiTlsConfigFromEnv, startApiTls } from './api-tls.ts';

const logger = pino({ level: 'silent' });

test('API TLS settings: on by default for the server role, off for `up`; bad combinations are clear errors', () => {
  assert.equal(apiTlsConfigFromEnv({}, true).mode, 'install-ca');
  assert.equal(apiTlsConfigFromEnv({}, false).mode, 'off');
  assert.equal(apiTlsConfigFromEnv({ SHELLWEGO_API_TLS: 'on' }, false).mode, 'install-ca');
  assert.equal(apiTlsConfigFromEnv({ SHELLWEGO_API_TLS: 'off' }, true).mode, 'off');
  assert.equal(apiTlsConfigFromEnv({ SHELLWEGO_API_TLS_CERT: 'c.pem', SHELLWEGO_API_TLS_KEY: 'k.pem' }, false).mode, 'files');
  assert.deepEqual(apiTlsConfigFromEnv({ SHELLWEGO_API_HOSTNAMES: 'CP.example.com, 10.0.0.5' }, true).hostnames, ['cp.example.com', '10.0.0.5']);
  assert.throws(() => apiTlsConfigFromEnv({ SHELLWEGO_API_TLS: 'yes' }, true), /SHELLWEGO_API_TLS must be 'on' or 'off'/);
  assert.throws(() => apiTlsConfigFromEnv({ SHELLWEGO_API_TLS_CERT: 'c.pem' }, true), /go together/);
  assert.throws(() => apiTlsConfigFromEnv({ SHELLWEGO_API_TLS: 'off', SHELLWEGO_API_TLS_CERT: 'c', SHELLWEGO_API_TLS_KEY: 'k' }, true), /contradicts/);
  assert.throws(() => apiTlsConfigFromEnv({ SHELLWEGO_API_TLS_CA: 'ca.pem' }, true), /give SHELLWEGO_API_TLS_CERT/);
  assert.throws(() => apiTlsConfigFromEnv({ SHELLWEGO_API_HOSTNAMES: 'bad host' }, true), /host names or IP addresses/);
});

test("the API certificate is for the configured names, the bind address, this host's name and loopback", () => {
  const names = apiHostnames(apiTlsConfigFromEnv({ SHELLWEGO_API_HOSTNAMES: 'cp.example.com' }, true), '10.1.2.3');
  assert.deepEqual(names.slice(0, 2), ['cp.example.com', '10.1.2.3']);
  for (const n of [hostname().toLowerCase(), 'localhost', '127.0.0.1']) assert.ok(names.includes(n), n);
});

async function scratchStore() {
  const dir = await mkdtemp(join(tmpdir(), 'swg-apitls-'));
  const store = await openSqliteStore(join(dir, 'db.sqlite'));
  const secrets = await SecretBox.fromFile(join(dir, 'master.key'), store);
  return { dir, store, secrets, deps: { store, secrets, baseDomain: 'localhost', dataDir: dir, bind: '127.0.0.1', logger } };
}

/** The leaf a TLS server presents, verified against `ca` only. */
function presented(port: number, ca: string): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/', ca: [ca], agent: false }, (res) => {
      res.resume();
      resolve((res.socket as TLSSocket).getPeerCertificate());
    });
    req.on('error', reject);
    req.end();
  });
}

test('one CA per install: concurrent starts on one store agree; the leaf chains to it and renews in place with the same CA', async () => {
  const { dir, store, deps } = await scratchStore();
  try {
    const config = apiTlsConfigFromEnv({}, true);
    // Two servers on one database starting at once: the first stored CA wins for both.
    const [one, two] = await Promise.all([startApiTls(config, { ...deps, leafLifetimeDays: 30 / 86_400, checkEveryMs: 100 }), startApiTls(config, deps)]);
    assert.equal(one!.nodeTls.caFingerprint, two!.nodeTls.caFingerprint);
    assert.equal(await readFile(join(dir, 'tls', 'local-ca.pem'), 'utf8'), one!.nodeTls.caPem);
    assert.equal(one!.nodeTls.natsUsesInstallCa, false);
    const leaf = new X509Certificate(one!.https.cert);
    assert.ok(leaf.checkHost('localhost') && leaf.checkIP('127.0.0.1'), 'for loopback by name and address');
    assert.ok(leaf.verify(new X509Certificate(one!.nodeTls.caPem).publicKey), 'signed by the install CA');

    const server = createServer(one!.https, (_req, res) => res.end('ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    try {
      const first = (await presented(port, one!.nodeTls.caPem)).fingerprint256;
      one!.attach(server);
      // Valid 30 s from a minute ago (notBefore is back-dated): already past two thirds, so the renewal
      // timer replaces it at its first tick; clients verifying against the CA never notice.
      let now = first;
      for (let i = 0; i < 200 && now === first; i++) {
        await new Promise((r) => setTimeout(r, 100));
        now = (await presented(port, one!.nodeTls.caPem)).fingerprint256;
      }
      assert.notEqual(now, first, 'a new leaf is served');
    } finally {
      server.close();
    }
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test("NATS: nodes are told nats-server uses the install's CA only when SHELLWEGO_NATS_TLS_CA is that CA", async () => {
  const { dir, store, deps } = await scratchStore();
  try {
    const config = apiTlsConfigFromEnv({}, true);
    const first = await startApiTls(config, deps);
    await writeFile(join(dir, 'ca.pem'), first!.nodeTls.caPem);
    await writeFile(join(dir, 'other.pem'), (await createCa('other')).certPem);
    assert.equal((await startApiTls(config, { ...deps, natsTlsCaFile: join(dir, 'ca.pem') }))!.nodeTls.natsUsesInstallCa, true);
    assert.equal((await startApiTls(config, { ...deps, natsTlsCaFile: join(dir, 'other.pem') }))!.nodeTls.natsUsesInstallCa, false);
    assert.equal(await startApiTls(apiTlsConfigFromEnv({ SHELLWEGO_API_TLS: 'off' }, true), deps), null);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test("the operator's own certificate: its CA is what nodes pin; a chain without it needs SHELLWEGO_API_TLS_CA; a wrong CA is refused", async () => {
  const { dir, store, deps } = await scratchStore();
  try {
    const caIssued = await createCa('operator CA');
    const ca = await loadCa(caIssued.certPem, caIssued.keyPem);
    const leaf = await issueLeaf(ca, ['127.0.0.1']);
    const other = await createCa('someone else');
    const f = (name: string, text: string) => writeFile(join(dir, name), text).then(() => join(dir, name));
    const env = { SHELLWEGO_API_TLS_CERT: await f('leaf.pem', leaf.certPem), SHELLWEGO_API_TLS_KEY: await f('leaf.key', leaf.keyPem) };
    await assert.rejects(startApiTls(apiTlsConfigFromEnv(env, true), deps), /does not end with the CA that signed it: give that CA with SHELLWEGO_API_TLS_CA/);
    await assert.rejects(startApiTls(apiTlsConfigFromEnv({ ...env, SHELLWEGO_API_TLS_CA: await f('other.pem', other.certPem) }, true), deps), /is not signed by the CA in/);
    const withCa = await startApiTls(apiTlsConfigFromEnv({ ...env, SHELLWEGO_API_TLS_CA: await f('ca.pem', caIssued.certPem) }, true), deps);
    assert.equal(withCa!.nodeTls.caFingerprint, pemFingerprint(caIssued.certPem));
    assert.match(withCa!.https.cert, /(-----BEGIN CERTIFICATE-----[\s\S]+){2}/, 'served with its CA');
    const chained = await startApiTls(apiTlsConfigFromEnv({ ...env, SHELLWEGO_API_TLS_CERT: await f('chain.pem', `${leaf.certPem}\n${caIssued.certPem}\n`) }, true), deps);
    assert.equal(chained!.nodeTls.caFingerprint, pemFingerprint(caIssued.certPem), 'the CA the chain ends in');
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
});
