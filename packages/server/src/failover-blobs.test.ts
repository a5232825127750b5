import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isApiError } from '@shellwego/core';
import { FailoverBlobStore } from './failover-blobs.ts';

const BLOB = Buffer.from('an artifact');
const DIGEST = createHash('sha256').update(BLOB).digest('hex');
const OTHER = createHash('sha256').update('nobody has this').digest('hex');
const AUTH = 'Node nod_x:swn_secret';

/** A control plane server's blob route over plain http: serves `blobs`, 404 otherwise; counts requests. */
async function blobServer(blobs: Record<string, Buffer>, auth = AUTH): Promise<{ server: Server; url: string; hits: () => number }> {
  let hits = 0;
  const server = createServer((req, res) => {
    hits++;
    const digest = req.url?.replace('/v1/node/blobs/', '') ?? '';
    if (req.headers.authorization !== auth) return res.writeHead(401).end('{}');
    if (!blobs[digest]) return res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: 'no such blob' } }));
    res.writeHead(200).end(blobs[digest]);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits: () => hits };
}

/** A URL nothing listens on (a server that was killed). */
async function deadUrl(): Promise<string> {
  const s = await blobServer({});
  await new Promise((r) => s.server.close(r));
  return s.url;
}

test('FailoverBlobStore: the first server down, the artifact comes from the next, which is asked first from then on; said once', async () => {
  const cacheDir = await mkdtemp(join(tmpdir(), 'swg-failover-'));
  const alive = await blobServer({ [DIGEST]: BLOB });
  const dead = await deadUrl();
  const warnings: string[] = [];
  try {
    const blobs = new FailoverBlobStore({ apiUrls: [dead, alive.url], authorization: AUTH, cacheDir, pin: null, warn: (m) => warnings.push(m) });
    assert.deepEqual(await readFile(await blobs.pathOf(DIGEST)), BLOB);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], new RegExp(`artifact ${DIGEST} fetched from ${alive.url}; before, ${dead}: could not fetch artifact ${DIGEST} from the control plane at ${dead}: .*ECONNREFUSED`));
    // A blob the live server lacks is a 404, whatever the dead one cannot say; the live one is asked first now.
    const before = alive.hits();
    await assert.rejects(blobs.pathOf(OTHER), (err) => isApiError(err) && err.status === 404);
    assert.equal(await blobs.has(OTHER), false);
    assert.equal(alive.hits(), before + 2);
    assert.equal(warnings.length, 1);
  } finally {
    alive.server.close();
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('FailoverBlobStore: when no server can give it, the error names each server and why', async () => {
  const cacheDir = await mkdtemp(join(tmpdir(), 'swg-failover-'));
  // One that does not know this node (another install behind the URL), one down.
  const refusing = await blobServer({ [DIGEST]: BLOB }, 'Node nod_someone:else');
  const dead = await deadUrl();
  try {
    const blobs = new FailoverBlobStore({ apiUrls: [refusing.url, dead], authorization: AUTH, cacheDir, pin: null });
    await assert.rejects(blobs.pathOf(DIGEST), (err: Error) => !isApiError(err) &&
      err.message.startsWith(`no control plane server could give artifact ${DIGEST}: ${refusing.url}: could not fetch artifact ${DIGEST} from ${refusing.url}: the control plane refused this node's credentials; `) &&
      err.message.includes(`; ${dead}: could not fetch artifact ${DIGEST} from the control plane at ${dead}: connect ECONNREFUSED`));
    await assert.rejects(blobs.has(DIGEST), /no control plane server could give artifact/);
    assert.throws(() => new FailoverBlobStore({ apiUrls: [], authorization: AUTH, cacheDir, pin: null }), /at least one API URL/);
  } finally {
    refusing.server.close();
    await rm(cacheDir, { recursive: true, force: true });
  }
});
