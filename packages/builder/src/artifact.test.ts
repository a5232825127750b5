import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import * as tar from 'tar';
import { createArtifact } from './artifact.ts';
import { listTar, tempRoot, writeTree } from './test-helpers.ts';

let root: string;
before(async () => {
  root = await tempRoot('swgb-artifact-');
});
after(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

describe('createArtifact', () => {
  for (const engine of ['gnu', 'node'] as const) {
    it(`${engine} tar: sorted relative entries, .git left out, unsafe links dropped, extractable`, async () => {
      const app = await writeTree(path.join(root, `app-${engine}`), {
        'package.json': '{}',
        'node_modules/a/index.js': 'module.exports = 1',
        '.profile.d/shellwego.sh': 'export X=1\n',
        '.git/HEAD': 'ref: refs/heads/main',
      });
      await fsp.mkdir(path.join(app, 'node_modules/.bin'));
      await fsp.symlink('../a/index.js', path.join(app, 'node_modules/.bin/a'));
      await fsp.symlink('/etc/passwd', path.join(app, 'leak'));
      await fsp.symlink('../../..', path.join(app, 'node_modules/up'));
      await fsp.symlink('/app/package.json', path.join(app, 'abs-inside'));
      await fsp.chmod(path.join(app, 'node_modules/a/index.js'), 0o755);
      for (const compression of ['gzip', 'none'] as const) {
        const out = path.join(root, `a-${engine}-${compression}.tar`);
        const info = await createArtifact(app, out, compression, engine);
        assert.equal(info.engine, engine);
        assert.equal(info.gzip, compression === 'gzip');
        const magic = (await fsp.readFile(out)).subarray(0, 2);
        assert.equal(magic[0] === 0x1f && magic[1] === 0x8b, compression === 'gzip');
        const entries = await listTar(out);
        for (const e of ['package.json', 'node_modules/a/index.js', 'node_modules/.bin/a', '.profile.d/shellwego.sh', 'abs-inside']) assert.ok(entries.includes(e), e);
        assert.ok(!entries.some((e) => e.startsWith('.git')), '.git left out');
        assert.ok(!entries.includes('leak') && !entries.includes('node_modules/up'), 'escaping links dropped');
        assert.ok(entries.every((e) => !e.startsWith('/') && !e.startsWith('./')));
        const x = path.join(root, `x-${engine}-${compression}`);
        await fsp.mkdir(x);
        await tar.x({ file: out, cwd: x });
        assert.equal(await fsp.readlink(path.join(x, 'node_modules/.bin/a')), '../a/index.js');
        assert.ok((await fsp.stat(path.join(x, 'node_modules/a/index.js'))).mode & 0o100, 'modes kept');
      }
    });
  }

  it('auto compression gzips small trees', async () => {
    const app = await writeTree(path.join(root, 'small'), { 'index.html': '<h1>x</h1>' });
    const info = await createArtifact(app, path.join(root, 'small.tar'));
    assert.equal(info.gzip, true);
  });
});
