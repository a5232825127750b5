import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, readlink, rm, stat, lstat, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import {
  BlobCache, DigestMismatchError, applyLayer, digestOf, envFromList, formatReference, newBudget, parseChallenges, parseReference, resolveUser,
  symlinkStaysInRoot, tokenUrl, unpackLayers, verifyDigest, UnsafeLayerError,
} from './index.ts';
import { makeTar } from './tar-writer.ts';
import type { RawEntry } from './tar-writer.ts';

const apply = (root: string, entries: RawEntry[]) => applyLayer(root, Readable.from([makeTar(entries)]), newBudget());

describe('image references', () => {
  it('fills in Docker Hub, library/ and latest', () => {
    assert.deepEqual(parseReference('nginx'), { registry: 'docker.io', apiHost: 'registry-1.docker.io', repository: 'library/nginx', tag: 'latest', digest: null });
    assert.equal(formatReference(parseReference('bitnami/redis:7.2')), 'docker.io/bitnami/redis:7.2');
    assert.equal(parseReference('index.docker.io/library/alpine').registry, 'docker.io');
  });

  it('recognises registries by dot, port or localhost, and keeps tag and digest', () => {
    const d = 'sha256:' + 'a'.repeat(64);
    assert.deepEqual(parseReference(`127.0.0.1:5000/team/app:v1@${d}`), { registry: '127.0.0.1:5000', apiHost: '127.0.0.1:5000', repository: 'team/app', tag: 'v1', digest: d });
    assert.deepEqual(parseReference(`localhost/app@${d}`), { registry: 'localhost', apiHost: 'localhost', repository: 'app', tag: null, digest: d });
    assert.equal(parseReference('ghcr.io/o/r').tag, 'latest');
    assert.equal(parseReference('ghcr.io/o/r').repository, 'o/r');
  });

  it('refuses bad references with a reason', () => {
    assert.throws(() => parseReference(''), /empty/);
    assert.throws(() => parseReference('Upper/case'), /not a valid repository component/);
    assert.throws(() => parseReference('app@sha256:xyz'), /digest must be sha256/);
    assert.throws(() => parseReference('app:bad/tag'), /not a valid repository component|tag/);
    assert.throws(() => parseReference('app:-x'), /tag "-x"/);
    assert.throws(() => parseReference('a b'), /whitespace/);
    assert.throws(() => parseReference('reg.io/../x'), /repository component/);
  });
});

describe('WWW-Authenticate challenges', () => {
  it('parses Bearer with quoted params containing commas', () => {
    const chs = parseChallenges('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"');
    assert.deepEqual(chs, [{ scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull,push' } }]);
    const url = tokenUrl(chs[0], 'repository:a/b:pull');
    assert.equal(url.searchParams.get('service'), 'registry.example');
    assert.equal(url.searchParams.get('scope'), 'repository:a/b:pull,push');
  });

  it('parses several challenges, unquoted values and escapes', () => {
    const chs = parseChallenges('Basic realm="Registry \\"x\\"", Bearer realm=https://t/x, service=s');
    assert.equal(chs.length, 2);
    assert.deepEqual(chs[0], { scheme: 'basic', params: { realm: 'Registry "x"' } });
    assert.deepEqual(chs[1], { scheme: 'bearer', params: { realm: 'https://t/x', service: 's' } });
  });

  it('refuses a Bearer challenge without realm', () => {
    assert.throws(() => tokenUrl({ scheme: 'bearer', params: {} }, 's'), /no realm/);
  });
});

describe('digests and the blob cache', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'oci-cache-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('verifies bytes against a sha256 digest', () => {
    const b = Buffer.from('hello');
    verifyDigest(b, digestOf(b), 'x');
    assert.throws(() => verifyDigest(Buffer.from('hellO'), digestOf(b), 'the manifest'), (e: Error) => e instanceof DigestMismatchError && /the manifest: digest mismatch/.test(e.message));
    assert.throws(() => verifyDigest(b, 'md5:abc', 'x'), /only sha256/);
  });

  it('keeps a blob only when its digest and size match, and shares concurrent downloads', async () => {
    const cache = new BlobCache(dir);
    const data = Buffer.from('layer bytes');
    const d = digestOf(data);
    let opens = 0;
    const open = async () => {
      opens++;
      return Readable.from([data.subarray(0, 5), data.subarray(5)]);
    };
    const [a, b] = await Promise.all([cache.ensure(d, data.length, open), cache.ensure(d, data.length, open)]);
    assert.equal(opens, 1);
    assert.equal(a.file, b.file);
    assert.deepEqual([a.downloaded, b.downloaded], [true, false]);
    assert.deepEqual(await readFile(a.file), data);
    const again = await cache.ensure(d, data.length, open);
    assert.equal(again.downloaded, false);
    assert.equal(opens, 1);

    const other = digestOf(Buffer.from('other'));
    await assert.rejects(cache.ensure(other, 5, async () => Readable.from([Buffer.from('evil!')])), /digest mismatch/);
    assert.equal(await cache.has(other), false);
    await assert.rejects(cache.ensure(other, 3, async () => Readable.from([Buffer.from('other')])), /more than the 3 bytes/);
    assert.deepEqual(await readdir(cache.tmpDir), [], 'no temp file is left behind');
  });
});

describe('layer unpacking', () => {
  let root: string;
  const roots: string[] = [];
  const fresh = async () => {
    root = await mkdtemp(path.join(tmpdir(), 'oci-root-'));
    roots.push(root);
    return root;
  };
  after(async () => {
    for (const r of roots) await rm(r, { recursive: true, force: true });
  });

  it('unpacks files, dirs, symlinks and hard links; strips setuid', async () => {
    await fresh();
    await apply(root, [
      { path: './', type: '5' },
      { path: 'bin/', type: '5' },
      { path: 'bin/tool', data: '#!x', mode: 0o4755 },
      { path: 'bin/sh', type: '2', linkpath: 'tool' },
      { path: 'bin/hard', type: '1', linkpath: 'bin/tool' },
      { path: 'etc/alt', type: '2', linkpath: '/bin/tool' },
    ]);
    assert.equal(await readFile(path.join(root, 'bin/tool'), 'utf8'), '#!x');
    assert.equal((await stat(path.join(root, 'bin/tool'))).mode & 0o7777, 0o755);
    assert.equal(await readlink(path.join(root, 'bin/sh')), 'tool');
    assert.equal((await stat(path.join(root, 'bin/hard'))).ino, (await stat(path.join(root, 'bin/tool'))).ino);
    assert.equal(await readlink(path.join(root, 'etc/alt')), '/bin/tool');
  });

  it('refuses path traversal and absolute paths', async () => {
    await fresh();
    await assert.rejects(apply(root, [{ path: '../evil', data: 'x' }]), (e: Error) => e instanceof UnsafeLayerError && /leaves the root/.test(e.message));
    await assert.rejects(apply(root, [{ path: 'a/../../evil', data: 'x' }]), /leaves the root/);
    await assert.rejects(apply(root, [{ path: '/etc/evil', data: 'x' }]), /absolute path/);
    await assert.rejects(stat(path.join(path.dirname(root), 'evil')), { code: 'ENOENT' });
  });

  it('refuses symlinks that climb out, and never writes through a link to outside', async () => {
    await fresh();
    await assert.rejects(apply(root, [{ path: 'x', type: '2', linkpath: '../../etc' }]), /points outside the image/);
    await assert.rejects(apply(root, [{ path: 'a/b', type: '2', linkpath: '../..' }]), /points outside the image/);
    // An absolute link is the image's own path: writing below it lands inside the root.
    const outside = await mkdtemp(path.join(tmpdir(), 'oci-outside-'));
    try {
      await apply(root, [{ path: 'esc', type: '2', linkpath: outside }, { path: 'esc/pwned', data: 'x' }]);
      assert.deepEqual(await readdir(outside), [], 'nothing was written outside the root');
      assert.equal(await readFile(path.join(root, outside, 'pwned'), 'utf8'), 'x');
      // A hard link may only name a regular file inside the root.
      await assert.rejects(apply(root, [{ path: 'h', type: '1', linkpath: '../../etc/passwd' }]), /leaves the root/);
      await assert.rejects(apply(root, [{ path: 'h', type: '1', linkpath: 'esc' }]), /must name a regular file/);
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });

  it('refuses device nodes and skips FIFOs', async () => {
    await fresh();
    await assert.rejects(apply(root, [{ path: 'dev/sda', type: '4' }]), /device node/);
    await assert.rejects(apply(root, [{ path: 'mem', type: '3' }]), /device node/);
    await apply(root, [{ path: 'pipe', type: '6' }]);
    await assert.rejects(lstat(path.join(root, 'pipe')), { code: 'ENOENT' });
  });

  it('applies whiteouts and opaque directories across layers', async () => {
    await fresh();
    const l1 = path.join(root, '..', `${path.basename(root)}-l1.tar.gz`);
    const l2 = path.join(root, '..', `${path.basename(root)}-l2.tar`);
    await writeFile(l1, gzipSync(makeTar([
      { path: 'app/', type: '5' }, { path: 'app/keep', data: '1' }, { path: 'app/gone', data: '2' },
      { path: 'cfg/', type: '5' }, { path: 'cfg/old', data: '3' }, { path: 'cfg/sub/', type: '5' }, { path: 'cfg/sub/deep', data: '4' },
    ])));
    await writeFile(l2, makeTar([
      { path: 'app/.wh.gone', data: '' },
      { path: 'cfg/new', data: '5' },
      { path: 'cfg/.wh..wh..opq', data: '' },
      { path: 'app/.wh.never-existed', data: '' },
    ]));
    try {
      await unpackLayers(root, [l1, l2]);
      assert.deepEqual((await readdir(path.join(root, 'app'))).sort(), ['keep']);
      assert.deepEqual((await readdir(path.join(root, 'cfg'))).sort(), ['new'], 'the opaque dir hides lower content but keeps this layer');
      await assert.rejects(apply(root, [{ path: 'app/.wh...', data: '' }]), /bad whiteout/);
    } finally {
      await rm(l1, { force: true });
      await rm(l2, { force: true });
    }
  });

  it('enforces entry and size limits', async () => {
    await fresh();
    const tar = makeTar([{ path: 'a', data: 'x'.repeat(100) }, { path: 'b', data: 'y' }]);
    await assert.rejects(applyLayer(root, Readable.from([tar]), newBudget({ maxBytes: 50 })), /more than 50 bytes/);
    await assert.rejects(applyLayer(root, Readable.from([tar]), newBudget({ maxEntries: 1 })), /more than 1 files/);
    await assert.rejects(applyLayer(root, Readable.from([Buffer.alloc(512, 7)]), newBudget()), /checksum/);
  });

  it('checks symlink targets lexically', () => {
    assert.equal(symlinkStaysInRoot(['a', 'b'], '../../x'), true);
    assert.equal(symlinkStaysInRoot(['a', 'b'], '../../../x'), false);
    assert.equal(symlinkStaysInRoot([], '/abs'), true);
    assert.equal(symlinkStaysInRoot([], ''), false);
  });
});

describe('image user and env', () => {
  it('resolves USER from the image passwd/group without following links out', async () => {
    const root = await mkdtemp(path.join(tmpdir(), 'oci-user-'));
    try {
      await mkdir(path.join(root, 'etc'));
      await writeFile(path.join(root, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\nweb:x:1234:2345::/home/web:/bin/sh\n');
      await writeFile(path.join(root, 'etc/group'), 'root:x:0:\nstaff:x:50:\n');
      assert.deepEqual(await resolveUser(root, ''), { uid: 0, gid: 0 });
      assert.deepEqual(await resolveUser(root, 'web'), { uid: 1234, gid: 2345 });
      assert.deepEqual(await resolveUser(root, '1234'), { uid: 1234, gid: 2345 });
      assert.deepEqual(await resolveUser(root, '77'), { uid: 77, gid: 0 });
      assert.deepEqual(await resolveUser(root, 'web:staff'), { uid: 1234, gid: 50 });
      assert.deepEqual(await resolveUser(root, '5:6'), { uid: 5, gid: 6 });
      await assert.rejects(resolveUser(root, 'nobody-here'), /not in its \/etc\/passwd/);
      await assert.rejects(resolveUser(root, 'web:nogroup'), /not in its \/etc\/group/);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('reads Env lists', () => {
    assert.deepEqual(envFromList(['A=1', 'B=x=y', 'EMPTY', 'bad-key=1']), { A: '1', B: 'x=y', EMPTY: '' });
  });
});
