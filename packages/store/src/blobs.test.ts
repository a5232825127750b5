import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ApiError } from '@shellwego/core';
import { FileBlobStore } from './blobs.ts';

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const code = (c: string) => (err: unknown) => err instanceof ApiError && err.code === c;

describe('FileBlobStore', () => {
  let dir: string;
  let blobs: FileBlobStore;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'swg-blobs-'));
    blobs = new FileBlobStore(join(dir, 'blobs'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('stores a file under its sha256, read-only, leaving the original in place', async () => {
    const src = join(dir, 'a.tar.gz');
    const content = Buffer.from('hello blob '.repeat(10_000));
    await writeFile(src, content);
    const digest = await blobs.putFile(src);
    assert.equal(digest, sha256(content));
    const path = await blobs.pathOf(digest);
    assert.equal(path, join(dir, 'blobs', 'sha256', digest.slice(0, 2), digest));
    assert.deepEqual(await readFile(path), content);
    assert.equal((await stat(path)).mode & 0o777, 0o444);
    assert.deepEqual(await readFile(src), content);
    assert.equal(await blobs.has(digest), true);
  });

  it('same content gives the same digest and one file; different content a different one', async () => {
    const a = join(dir, 'a');
    const b = join(dir, 'b');
    await writeFile(a, 'same');
    await writeFile(b, 'same');
    const [d1, d2, d3] = await Promise.all([blobs.putFile(a), blobs.putFile(b), blobs.putFile(a)]);
    assert.equal(d1, d2);
    assert.equal(d1, d3);
    assert.deepEqual(await readdir(join(dir, 'blobs', 'sha256', d1.slice(0, 2))), [d1]);
    assert.deepEqual(await readdir(join(dir, 'blobs', 'tmp')), []);
    await writeFile(b, 'different');
    assert.notEqual(await blobs.putFile(b), d1);
  });

  it('putStream returns digest and size', async () => {
    const data = Buffer.alloc(300_000, 7);
    const { digest, size } = await blobs.putStream(Readable.from([data.subarray(0, 1000), data.subarray(1000)]), { maxBytes: data.length });
    assert.equal(size, data.length);
    assert.equal(digest, sha256(data));
  });

  it('rejects digests that are not 64 lowercase hex characters', async () => {
    const bad = ['../etc/passwd', '../../' + 'a'.repeat(58), 'A'.repeat(64), 'a'.repeat(63), 'a'.repeat(65), '', 'g'.repeat(64), `${'a'.repeat(64)}\n`, `${'a'.repeat(62)}/.`];
    for (const d of bad) {
      await assert.rejects(blobs.pathOf(d), code('invalid_digest'), JSON.stringify(d));
      await assert.rejects(blobs.has(d), code('invalid_digest'), JSON.stringify(d));
    }
  });

  it('a missing blob is a clear not-found error', async () => {
    const d = 'a'.repeat(64);
    assert.equal(await blobs.has(d), false);
    await assert.rejects(blobs.pathOf(d), (err) => code('not_found')(err) && (err as Error).message.includes(d));
  });

  it('maxBytes cuts off a long stream with payload_too_large and leaves no temp file or blob', async () => {
    const chunks = Array.from({ length: 100 }, () => Buffer.alloc(10_000, 1));
    const input = Readable.from(chunks);
    await assert.rejects(blobs.putStream(input, { maxBytes: 50_000 }), (err) => code('payload_too_large')(err) && (err as ApiError).status === 413);
    assert.equal(input.destroyed, false, "the caller's stream is left to the caller");
    assert.deepEqual(await readdir(join(dir, 'blobs', 'tmp')), []);
    assert.deepEqual(await readdir(join(dir, 'blobs')).then((e) => e.filter((x) => x !== 'tmp')), []);
  });

  it('an input that fails at once (before the store is ready) fails the call, not the process', async () => {
    const input = new Readable({ read() {} });
    const p = blobs.putStream(input);
    input.destroy(new Error('gone at once'));
    await assert.rejects(p, /gone at once/);
    assert.deepEqual((await readdir(join(dir, 'blobs', 'tmp'))).filter((f) => f.endsWith('.tmp')), []);
  });

  it('a failing input leaves no temp file', async () => {
    const input = new Readable({ read() {} });
    const p = blobs.putStream(input);
    input.push(Buffer.alloc(1000));
    setTimeout(() => input.destroy(new Error('connection reset')), 10);
    await assert.rejects(p, /connection reset/);
    assert.deepEqual(await readdir(join(dir, 'blobs', 'tmp')), []);
  });
});
