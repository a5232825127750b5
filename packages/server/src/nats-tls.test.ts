import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { connectNatsBus } from '@shellwego/bus';
import { createCa } from '@shellwego/control-plane';
import { pemFingerprint } from '@shellwego/store';
import { NatsServerProcess } from '../../bus/src/testing.ts';
import { checkNatsTls, natsTlsInstructions, writeNatsTls } from './nats-tls.ts';

test("nats-tls: nats-server with a certificate of the install's CA; clients trusting that CA connect, clients trusting another CA are refused", async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-natstls-'));
  let nats: NatsServerProcess | null = null;
  try {
    const dataDir = join(dir, 'data');
    const files = await writeNatsTls({ dataDir, databaseUrl: null, baseDomain: 'localhost', outDir: join(dir, 'nats'), hostnames: ['nats.internal'], days: 30 });
    // The install's CA (the one the API and routers use), not a CA of its own.
    assert.equal(await readFile(files.caFile, 'utf8'), await readFile(join(dataDir, 'tls', 'local-ca.pem'), 'utf8'));
    assert.equal(files.caFingerprint, pemFingerprint(await readFile(files.caFile, 'utf8')));
    assert.equal((await stat(files.keyFile)).mode & 0o777, 0o600);
    const leaf = new X509Certificate(await readFile(files.certFile, 'utf8'));
    assert.ok(leaf.checkHost('nats.internal') && leaf.checkIP('127.0.0.1'));
    assert.match(natsTlsInstructions(files), /tls \{\n {4}cert_file: ".*cert\.pem"\n {4}key_file: ".*key\.pem"\n {2}\}/);
    // Again: the same CA (it is in the store), a new certificate.
    const again = await writeNatsTls({ dataDir, databaseUrl: null, baseDomain: 'localhost', outDir: join(dir, 'nats'), hostnames: [], days: 30 });
    assert.equal(again.caFingerprint, files.caFingerprint);

    nats = await NatsServerProcess.start({ tls: { certFile: files.certFile, keyFile: files.keyFile } });
    const good = await connectNatsBus({ servers: nats.url, name: 'tls-good', connection: { tls: { ca: await readFile(files.caFile, 'utf8') } } });
    try {
      const got = new Promise((r) => good.subscribe('tls.check', r));
      await good.publish('tls.check', { over: 'tls' });
      assert.deepEqual(await got, { over: 'tls' });
    } finally {
      await good.close();
    }

    const other = (await createCa('another CA')).certPem;
    await checkNatsTls([nats.url], { ca: await readFile(files.caFile, 'utf8') });
    await assert.rejects(checkNatsTls([nats.url], { ca: other }), /nats-server at nats:\/\/127\.0\.0\.1:\d+ presented a certificate the trusted CA sha256:[0-9a-f]{64} did not issue for it: refusing to connect/);
    await checkNatsTls(['nats://127.0.0.1:1'], { ca: other }); // not up yet: left to the waiting connect
  } finally {
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
