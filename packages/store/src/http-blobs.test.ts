import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isApiError } from '@shellwego/core';
import { HttpBlobStore } from './http-blobs.ts';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const AUTH = 'Node nod_test:swn_secret';

/** A control plane's blob route: the real bytes for `good`, other bytes for `tampered`. */
async function blobServer(good: Buffer, tamperedDigest: string) {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(req.url ?? '');
    if (req.headers.authorization !== AUTH) return res.writeHead(401).end('{"error":{"message":"invalid node credentials"}}');
    const digest = (req.url ?? '').split('/').pop();
    if (digest === sha256(good)) return res.writeHead(200).end(good);
    if (digest === tamperedDigest) return res.writeHead(200).end(Buffer.from('not what was built'));
    res.writeHead(404).end('{}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests, close: () => new Promise((r) => server.close(r)) };
}

async function files(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => [])).filter((e) => e.isFile()).map((e) => e.name);
}

test('HttpBlobStore: downloads a blob once, verified, into its cache', async () => {
  const cacheDir = await mkdtemp(join(tmpdir(), 'swg-httpblobs-'));
  const good = Buffer.from('artifact bytes '.repeat(1000));
  const srv = await blobServer(good, 'f'.repeat(64));
  try {
    const blobs = new HttpBlobStore({ apiUrl: srv.url, authorization: AUTH, cacheDir });
    const [p1, p2] = await Promise.all([blobs.pathOf(sha256(good)), blobs.pathOf(sha256(good))]);
    assert.equal(p1, p2);
    assert.deepEqual(await readFile(p1), good);
    assert.equal(await blobs.has(sha256(good)), true);
    assert.equal(srv.requests.length, 1, 'concurrent and later reads use the one download');
    assert.equal(await blobs.has('0'.repeat(64)), false, 'unknown digest: 404 → not there');
    await assert.rejects(blobs.pathOf('0'.repeat(64)), (e: unknown) => isApiError(e) && e.status === 404);
    await assert.rejects(blobs.putFile(), /read-only/);
  } finally {
    await srv.close();
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('HttpBlobStore: bytes that do not match the digest are refused and nothing is cached', async () => {
  const cacheDir = await mkdtemp(join(tmpdir(), 'swg-httpblobs-'));
  const tampered = 'a'.repeat(64);
  const srv = await blobServer(Buffer.from('x'), tampered);
  try {
    const blobs = new HttpBlobStore({ apiUrl: srv.url, authorization: AUTH, cacheDir });
    await assert.rejects(blobs.pathOf(tampered), /has sha256 [0-9a-f]{64}: refused \(corrupted or tampered in transit\)/);
    assert.deepEqual(await files(cacheDir), [], 'no blob and no temp file left');
    // Asked again, it downloads again (and refuses again): a bad download is never served from the cache.
    await assert.rejects(blobs.pathOf(tampered), /refused/);
    assert.equal(srv.requests.length, 2);
  } finally {
    await srv.close();
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('HttpBlobStore: refused credentials and bad digests are clear errors', async () => {
  const cacheDir = await mkdtemp(join(tmpdir(), 'swg-httpblobs-'));
  const good = Buffer.from('y');
  const srv = await blobServer(good, 'b'.repeat(64));
  try {
    const wrong = new HttpBlobStore({ apiUrl: srv.url, authorization: 'Node nod_other:swn_x', cacheDir });
    await assert.rejects(wrong.pathOf(sha256(good)), /refused this node's credentials/);
    await assert.rejects(wrong.pathOf('../../etc/passwd'), (e: unknown) => isApiError(e) && e.status === 400);
    assert.deepEqual(await files(cacheDir), []);
  } finally {
    await srv.close();
    await rm(cacheDir, { recursive: true, force: true });
  }
});
