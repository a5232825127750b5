import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { nodeRequest, normalizeFingerprint, pemFingerprint, probeCa, readJson } from './node-http.ts';

const exec = promisify(execFile);

/** A CA (openssl) and a leaf for 127.0.0.1 signed by it, in `dir`. */
async function caAndLeaf(dir: string, name: string): Promise<{ ca: string; cert: string; key: string }> {
  const f = (x: string) => join(dir, `${name}-${x}`);
  await exec('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', `/CN=${name} CA`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign', '-keyout', f('ca.key'), '-out', f('ca.pem')]);
  await exec('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', f('leaf.key'), '-out', f('leaf.csr')]);
  await writeFile(f('ext'), 'subjectAltName=IP:127.0.0.1\n');
  await exec('openssl', ['x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', f('ext'), '-out', f('leaf.pem')]);
  const ca = await readFile(f('ca.pem'), 'utf8');
  return { ca, cert: (await readFile(f('leaf.pem'), 'utf8')) + ca, key: await readFile(f('leaf.key'), 'utf8') };
}

test('fingerprints: openssl notation and plain hex are one; anything else is refused', () => {
  const hex = 'ab'.repeat(32);
  assert.equal(normalizeFingerprint(`SHA256:${'AB:'.repeat(31)}AB`), `sha256:${hex}`);
  assert.equal(normalizeFingerprint(hex), `sha256:${hex}`);
  assert.throws(() => normalizeFingerprint('sha256:abc'), /sha256:<64 hex digits>/);
});

test('probeCa reads the CA at the end of the chain; nodeRequest trusts that CA only', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-nodehttp-'));
  const a = await caAndLeaf(dir, 'a');
  const b = await caAndLeaf(dir, 'b');
  const server = createServer({ cert: a.cert, key: a.key }, (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const pin = await probeCa(url);
    assert.equal(pin.fingerprint, pemFingerprint(a.ca));
    assert.equal(pemFingerprint(pin.pem), pin.fingerprint);
    assert.deepEqual(await probeCa(url, pin.fingerprint), pin);
    await assert.rejects(probeCa(url, pemFingerprint(b.ca)), /chain without the CA sha256:[0-9a-f]{64}/);
    assert.deepEqual(await readJson(await nodeRequest(`${url}/x`, { pin })), { ok: true });
    await assert.rejects(nodeRequest(`${url}/x`, { pin: { fingerprint: pemFingerprint(b.ca), pem: b.ca } }), /not issued by the CA pinned at join \(sha256:[0-9a-f]{64}\)/);
  } finally {
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
});
