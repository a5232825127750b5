import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { extractSource, safeEntryPath, symlinkStaysInside } from './extract.ts';
import { BuildError } from './errors.ts';
import { rawTar as rawTarIn, tempRoot } from './test-helpers.ts';
import type { RawEntry } from './test-helpers.ts';

let root: string;
let n = 0;

before(async () => {
  root = await tempRoot('swgb-extract-');
});
after(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

const rawTar = (entries: RawEntry[], gzip = true) => rawTarIn(path.join(root, `t${++n}.tar${gzip ? '.gz' : ''}`), entries, gzip);

async function extractTo(file: string): Promise<{ dest: string; err: unknown }> {
  const dest = path.join(root, `out${++n}`);
  try {
    await extractSource(file, dest);
    return { dest, err: null };
  } catch (err) {
    return { dest, err };
  }
}

describe('extractSource', () => {
  it('extracts a normal tree (files, dirs, inside symlinks), gzip or not, and drops setuid bits', async () => {
    for (const gz of [true, false]) {
      const file = await rawTar(
        [
          { path: 'app/', type: 'Directory' },
          { path: 'app/index.js', body: 'console.log(1)\n', mode: 0o4755 },
          { path: './package.json', body: '{}' },
          { path: 'app/link', type: 'SymbolicLink', linkpath: 'index.js' },
          { path: 'up', type: 'SymbolicLink', linkpath: 'app/../package.json' },
        ],
        gz,
      );
      const { dest, err } = await extractTo(file);
      assert.equal(err, null);
      assert.equal(await fsp.readFile(path.join(dest, 'app/index.js'), 'utf8'), 'console.log(1)\n');
      assert.equal(await fsp.readlink(path.join(dest, 'app/link')), 'index.js');
      const st = await fsp.stat(path.join(dest, 'app/index.js'));
      assert.equal(st.mode & 0o7000, 0, 'setuid dropped');
      assert.equal(st.mode & 0o100, 0o100, 'still executable');
    }
  });

  const hostile: Array<[string, RawEntry[], RegExp]> = [
    ['../x', [{ path: '../x', body: 'evil' }], /"\.\.\/x" contains "\.\."/],
    ['a/../../x', [{ path: 'a/../../x', body: 'evil' }], /contains "\.\."/],
    ['absolute path', [{ path: '/tmp/evil', body: 'evil' }], /is an absolute path/],
    ['symlink to an absolute path', [{ path: 'l', type: 'SymbolicLink', linkpath: '/etc/passwd' }], /symbolic link pointing outside/],
    ['symlink climbing out', [{ path: 'a/l', type: 'SymbolicLink', linkpath: '../../etc' }], /symbolic link pointing outside/],
    [
      'write through a symlink',
      [
        { path: 'd', type: 'SymbolicLink', linkpath: '.' },
        { path: 'd/x', body: 'hi' },
      ],
      /through the symbolic link "d"/,
    ],
    ['hard link outside', [{ path: 'h', type: 'Link', linkpath: '/etc/shadow' }], /hard link to an unsafe path/],
    ['character device', [{ path: 'null', type: 'CharacterDevice' }], /is a CharacterDevice/],
    ['fifo', [{ path: 'p', type: 'FIFO' }], /is a FIFO/],
  ];
  for (const [name, entries, re] of hostile) {
    it(`rejects ${name}`, async () => {
      const { dest, err } = await extractTo(await rawTar([{ path: 'ok.txt', body: 'fine' }, ...entries]));
      assert.ok(err instanceof BuildError, `expected a BuildError, got ${String(err)}`);
      assert.match((err as Error).message, /^source archive rejected: /);
      assert.match((err as Error).message, re);
      // Rejected before anything was written.
      assert.deepEqual(await fsp.readdir(dest).catch(() => []), []);
    });
  }

  it('rejects garbage and empty archives, and enforces limits', async () => {
    const junk = path.join(root, 'junk.tgz');
    await fsp.writeFile(junk, 'definitely not a tarball'.repeat(40));
    const r1 = await extractTo(junk);
    assert.match(String((r1.err as Error)?.message), /not a valid tar|empty/);
    const many = await rawTar(Array.from({ length: 5 }, (_, i) => ({ path: `f${i}`, body: 'x' })));
    await assert.rejects(extractSource(many, path.join(root, 'lim'), { maxEntries: 3 }), /more than 3 entries/);
    await assert.rejects(extractSource(many, path.join(root, 'lim2'), { maxBytes: 2 }), /MB of files/);
  });

  it('path helpers', () => {
    assert.deepEqual(safeEntryPath('./a//b/'), { ok: true, path: 'a/b' });
    assert.equal(safeEntryPath('a/../b').ok, false);
    assert.equal(safeEntryPath('/a').ok, false);
    assert.equal(symlinkStaysInside('a/b/l', '../c'), true);
    assert.equal(symlinkStaysInside('a/l', '../../c'), false);
    assert.equal(symlinkStaysInside('l', '.'), true);
    assert.equal(symlinkStaysInside('l', '/abs'), false);
  });
});
