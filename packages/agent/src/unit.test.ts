// Unit tests of the agent's building blocks: uid scheme, spec checks, log tailing, artifacts.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { create as createTar } from 'tar';
import type { BlobStore, InstanceSpec } from '@shellwego/core';
import { ArtifactCache, detectCompression, unpackTarball } from './artifacts.ts';
import { APP_UID_BASE, APP_UID_RANGE, appUid, commandLine, sandboxIdFor, specProblem } from './identity.ts';
import { LogTail, lastLines } from './log-tail.ts';

let dir = '';
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'swg-agent-unit-'));
});
after(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('identity', () => {
  it('derives a stable unprivileged uid per app inside the documented range', () => {
    const a = appUid('app_0000000001aaaaaaaaaaaaaaaa');
    assert.equal(a, appUid('app_0000000001aaaaaaaaaaaaaaaa'));
    assert.ok(a >= APP_UID_BASE && a < APP_UID_BASE + APP_UID_RANGE);
    const many = new Set(Array.from({ length: 200 }, (_, i) => appUid(`app_${i}`)));
    assert.ok(many.size > 190, 'uids spread over the range');
  });

  it('uses instance ids as sandbox ids when they fit, hashes the rest', () => {
    assert.equal(sandboxIdFor('ins_0123456789abcdefghjkmnpqrs'), 'ins_0123456789abcdefghjkmnpqrs');
    const hashed = sandboxIdFor('Ins_UPPER');
    assert.match(hashed, /^i-[0-9a-f]{40}$/);
    assert.notEqual(sandboxIdFor('Ins_UPPER'), sandboxIdFor('ins_upper'));
  });

  it('execs simple commands, runs compound ones as they are', () => {
    assert.equal(commandLine('node server.js'), 'exec node server.js');
    assert.equal(commandLine('  bin/web --port $PORT '), 'exec bin/web --port $PORT');
    assert.equal(commandLine('exec node a.js'), 'exec node a.js');
    assert.equal(commandLine('echo hi; exit 3'), 'echo hi; exit 3');
    assert.equal(commandLine('exit 3'), 'exit 3');
    assert.equal(commandLine('npm run migrate && node server.js'), 'npm run migrate && node server.js');
    assert.equal(commandLine('FOO=1 node a.js'), 'FOO=1 node a.js');
  });

  it('refuses specs whose fields would be unsafe in paths or argv', () => {
    const good: InstanceSpec = {
      instanceId: 'ins_1', appId: 'app_1', appName: 'a', organizationId: 'org_1', releaseId: 'rel_1', releaseVersion: 1, processType: 'web', index: 1,
      command: 'node server.js', env: { X: '1' }, artifactDigest: 'ab'.repeat(32), limits: { memoryMb: 64, cpus: 1, pids: 32 }, port: 5000, restartGeneration: 0,
    };
    assert.equal(specProblem(good), null);
    assert.match(specProblem({ ...good, instanceId: '../etc' })!, /instanceId/);
    assert.match(specProblem({ ...good, artifactDigest: '../../x' })!, /artifactDigest/);
    assert.match(specProblem({ ...good, env: { 'BAD-KEY': 'x' } })!, /environment/);
    assert.match(specProblem({ ...good, port: 0 })!, /port/);
    assert.match(specProblem({ ...good, command: ' ' })!, /command/);
  });
});

describe('LogTail', () => {
  it('hands out complete lines, keeps partial ones, resumes from its offset', async () => {
    const file = path.join(dir, 'tail.log');
    await fsp.writeFile(file, 'one\ntwo\nthr');
    const got: string[] = [];
    const t = new LogTail({ file, offset: 0, onLines: (l) => got.push(...l), pollMs: 20 });
    t.start();
    await t.drain();
    assert.deepEqual(got, ['one', 'two']);
    assert.equal(t.offset, 8, 'the partial line is not counted as handed out');
    await fsp.appendFile(file, 'ee\r\nfour\n');
    await waitFor(() => got.length === 4);
    assert.deepEqual(got, ['one', 'two', 'three', 'four']);
    t.stop();
    assert.equal(t.offset, 20);

    // A new tail (agent restart) resumes where the old one stopped: nothing is sent twice.
    await fsp.appendFile(file, 'five\nsix');
    const again: string[] = [];
    const t2 = new LogTail({ file, offset: t.offset, onLines: (l) => again.push(...l) });
    await t2.drain(true);
    assert.deepEqual(again, ['five', 'six'], 'final drain flushes the unterminated line');
  });

  it('copes with multi-byte characters split across reads and with truncation', async () => {
    const file = path.join(dir, 'utf8.log');
    const text = 'héllo wörld ✓\n';
    const bytes = Buffer.from(text);
    await fsp.writeFile(file, bytes.subarray(0, 3));
    const got: string[] = [];
    const t = new LogTail({ file, offset: 0, onLines: (l) => got.push(...l), maxFileBytes: 10, onTruncate: () => got.push('<truncated>') });
    await t.drain();
    await fsp.appendFile(file, bytes.subarray(3));
    await t.drain();
    assert.deepEqual(got, ['héllo wörld ✓', '<truncated>']);
    assert.equal((await fsp.stat(file)).size, 0, 'file read past maxFileBytes is truncated');
    await fsp.appendFile(file, 'after\n');
    await t.drain();
    assert.deepEqual(got.at(-1), 'after');
  });

  it('lastLines returns the last n lines of the current run', async () => {
    const file = path.join(dir, 'last.log');
    await fsp.writeFile(file, 'old run\n');
    const from = (await fsp.stat(file)).size;
    await fsp.appendFile(file, Array.from({ length: 30 }, (_, i) => `line ${i}`).join('\n') + '\n');
    const last = await lastLines(file, from, 20);
    assert.equal(last.length, 20);
    assert.equal(last[0], 'line 10');
    assert.equal(last[19], 'line 29');
    assert.deepEqual(await lastLines(file, (await fsp.stat(file)).size), []);
    assert.deepEqual(await lastLines(path.join(dir, 'missing.log'), 0), []);
  });
});

describe('artifacts', () => {
  async function makeTarball(name: string, gzip: boolean): Promise<string> {
    const src = path.join(dir, `${name}-src`);
    await fsp.mkdir(path.join(src, '.profile.d'), { recursive: true });
    await fsp.writeFile(path.join(src, 'server.js'), 'console.log(1)\n');
    await fsp.writeFile(path.join(src, '.profile.d', 'x.sh'), 'export X=1\n');
    await fsp.symlink('server.js', path.join(src, 'link.js'));
    const out = path.join(dir, `${name}.tar${gzip ? '.gz' : ''}`);
    await createTar({ file: out, cwd: src, gzip, portable: true }, ['.']);
    return out;
  }

  it('detects gzip by magic bytes and unpacks both kinds', async () => {
    for (const gzip of [true, false]) {
      const file = await makeTarball(`t${gzip}`, gzip);
      assert.equal(await detectCompression(file), gzip ? 'gzip' : 'none');
      const dest = path.join(dir, `out-${gzip}`);
      await fsp.mkdir(dest);
      await unpackTarball(file, dest);
      assert.equal(await fsp.readFile(path.join(dest, '.profile.d', 'x.sh'), 'utf8'), 'export X=1\n');
      assert.equal(await fsp.readlink(path.join(dest, 'link.js')), 'server.js');
    }
  });

  it('refuses entries that escape the destination', async () => {
    // A hand-made tar with a "../escape" entry.
    const evil = path.join(dir, 'evil.tar');
    const { Header } = await import('tar');
    const body = Buffer.from('pwned\n');
    const h = new Header({ path: '../escape.txt', mode: 0o644, size: body.length, type: 'File', mtime: new Date() });
    const hb = Buffer.alloc(512);
    h.encode(hb, 0);
    const pad = Buffer.alloc(512 - (body.length % 512));
    await fsp.writeFile(evil, Buffer.concat([hb, body, pad, Buffer.alloc(1024)]));
    const dest = path.join(dir, 'evil-out');
    await fsp.mkdir(dest);
    await unpackTarball(evil, dest).catch(() => {});
    await assert.rejects(fsp.stat(path.join(dir, 'escape.txt')));
  });

  it('unpacks a digest once, even for concurrent callers, atomically', async () => {
    const file = await makeTarball('cache', true);
    let fetches = 0;
    const blobs: BlobStore = {
      putFile: async () => 'x',
      has: async () => true,
      pathOf: async () => {
        fetches++;
        return file;
      },
    };
    const cache = new ArtifactCache(path.join(dir, 'artifacts'), blobs);
    await cache.init();
    const [a, b, c] = await Promise.all([cache.ensure('d1'), cache.ensure('d1'), cache.ensure('d1')]);
    assert.equal(a, b);
    assert.equal(b, c);
    assert.equal(fetches, 1);
    assert.equal(await cache.ensure('d1'), a);
    assert.equal(fetches, 1, 'an unpacked digest is not fetched again');
    const names = await fsp.readdir(path.join(dir, 'artifacts'));
    assert.deepEqual(names, ['d1'], 'no temp dirs left behind');
    assert.deepEqual(await cache.gc(new Set(['d1'])), []);
    assert.deepEqual(await cache.gc(new Set()), ['d1']);
  });

  it('a failed unpack leaves nothing behind and reports the digest', async () => {
    const bad = path.join(dir, 'bad.tar.gz');
    await fsp.writeFile(bad, Buffer.from([0x1f, 0x8b, 1, 2, 3, 4, 5]));
    const cache = new ArtifactCache(path.join(dir, 'artifacts-bad'), { putFile: async () => 'x', has: async () => true, pathOf: async () => bad });
    await cache.init();
    await assert.rejects(cache.ensure('broken'), /cannot unpack artifact broken/);
    assert.deepEqual(await fsp.readdir(path.join(dir, 'artifacts-bad')), []);
  });
});

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
