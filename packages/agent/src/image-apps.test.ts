import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { InstanceSpec } from '@shellwego/core';
import type { SandboxSpec } from '@shellwego/sandbox';
import { imageArgv, withImage } from './image-apps.ts';

const base: SandboxSpec = {
  id: 'ins-x', argv: ['/bin/sh', '-c', 'x'], env: { SHARED: 'app', APP_ONLY: '1', PORT: '5000', DYNO: 'web.1', HOME: '/app' }, cwd: '/app',
  mounts: [{ source: '/somewhere', target: '/app', readonly: false }], uid: 70001, gid: 70001, limits: { memoryMb: 64, cpus: 1, pids: 16 },
  network: { mode: 'bridge' }, logFile: '/tmp/log', stateDir: '/tmp/state',
};
const spec = (command: string) => ({ command }) as InstanceSpec;

describe('image apps on the agent', () => {
  it('runs the exec form as argv and anything else through the image shell', () => {
    assert.deepEqual(imageArgv('["/bin/busybox","httpd","-f"]'), ['/bin/busybox', 'httpd', '-f']);
    assert.deepEqual(imageArgv('echo $PORT'), ['/bin/sh', '-c', 'echo $PORT']);
    assert.deepEqual(imageArgv('[ -f x ] && run'), ['/bin/sh', '-c', '[ -f x ] && run']);
    assert.deepEqual(imageArgv('[]'), ['/bin/sh', '-c', '[]']);
  });

  it('leaves source apps alone and turns image apps into a rootfs spec', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'agent-img-'));
    try {
      assert.equal(await withImage(base, dir, spec('web'), 'sandbox', null), base, 'no rootfs/: a source app');
      await mkdir(path.join(dir, 'rootfs/etc'), { recursive: true });
      const outside = await mkdtemp(path.join(tmpdir(), 'agent-out-'));
      await symlink(outside, path.join(dir, 'rootfs/data'));
      await writeFile(path.join(dir, 'image.json'), JSON.stringify({
        reference: 'r/x:1', manifestDigest: 'sha256:0', argv: ['/bin/app'], env: { SHARED: 'image', IMAGE_ONLY: '2', HOME: '/home/app' },
        workdir: '/data/work', user: 'app', uid: 1000, gid: 1001,
      }));
      const s = await withImage(base, dir, spec('["/bin/app","--serve"]'), 'sandbox', null);
      assert.deepEqual(s.argv, ['/bin/app', '--serve']);
      assert.deepEqual(s.env, { SHARED: 'app', IMAGE_ONLY: '2', HOME: '/home/app', APP_ONLY: '1', PORT: '5000', DYNO: 'web.1' });
      assert.equal(s.cwd, '/data/work');
      assert.deepEqual(s.rootfs, { source: path.join(dir, 'rootfs'), readonly: false });
      assert.deepEqual([s.insideUid, s.insideGid, s.uid, s.gid], [1000, 1001, 70001, 70001], 'image ids inside, the unprivileged uid outside');
      assert.deepEqual(s.mounts, []);
      // The missing workdir is created inside the root, following the image's link as the container would.
      assert.ok((await stat(path.join(dir, 'rootfs', outside, 'work'))).isDirectory());
      await assert.rejects(stat(path.join(outside, 'work')), { code: 'ENOENT' });
      await rm(outside, { recursive: true, force: true });
      await assert.rejects(withImage(base, dir, spec('x'), 'none', null), /need sandbox isolation/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
