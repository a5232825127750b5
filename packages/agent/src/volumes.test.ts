import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { InstanceSpec } from '@shellwego/core';
import { VolumeDirs } from './volumes.ts';
import { specProblem } from './identity.ts';
import { replaceReason } from './reconcile.ts';

const spec = (volumes?: InstanceSpec['volumes']): InstanceSpec => ({
  instanceId: 'ins_1', appId: 'app_1', appName: 'a', organizationId: 'org_1', releaseId: 'rel_1', releaseVersion: 1, processType: 'web', index: 1,
  command: 'node s.js', env: {}, artifactDigest: 'a'.repeat(64), limits: { memoryMb: 256, cpus: 1, pids: 100 }, port: 5000, restartGeneration: 0,
  ...(volumes ? { volumes } : {}),
});

test('volume directories: made 0700 once, kept across mounts, refused when a link stands in their place, removed only by command', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-vols-'));
  try {
    const vols = new VolumeDirs(join(dir, 'volumes'), pino({ level: 'silent' }));
    await vols.init();
    assert.equal((await stat(vols.root)).mode & 0o777, 0o711);
    const s = spec([{ id: 'vol_a', name: 'data', path: '/data' }]);
    const mounts = await vols.mounts(s, null);
    assert.deepEqual(mounts, [{ source: join(vols.root, 'vol_a'), target: '/data', readonly: false }]);
    assert.equal((await stat(mounts[0].source)).mode & 0o777, 0o700);
    await writeFile(join(mounts[0].source, 'f'), 'kept');
    await vols.mounts(s, null); // the next start finds it as it was
    assert.deepEqual(await readdir(mounts[0].source), ['f']);
    // A link in a volume's place would make the bind mount follow it out of the volumes directory.
    await mkdir(join(dir, 'elsewhere'));
    await symlink(join(dir, 'elsewhere'), join(vols.root, 'vol_b'));
    await assert.rejects(vols.mounts(spec([{ id: 'vol_b', name: 'b', path: '/b' }]), null), /is not a directory/);
    // Remove: malformed ids are ignored, removal is idempotent.
    await vols.remove({ nodeId: 'n', volumeId: '../escape', name: 'x' });
    await vols.remove({ nodeId: 'n', volumeId: 'vol_a', name: 'data' });
    await vols.remove({ nodeId: 'n', volumeId: 'vol_a', name: 'data' });
    assert.deepEqual((await readdir(vols.root)).sort(), ['vol_b']);
    assert.deepEqual(await readdir(join(dir, 'elsewhere')), [], 'nothing outside the volumes directory was touched');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('assigned volumes are checked like every path the agent uses; a change of mounts replaces the process', () => {
  assert.equal(specProblem(spec([{ id: 'vol_a', name: 'data', path: '/data' }])), null);
  assert.match(specProblem(spec([{ id: '../x', name: 'data', path: '/data' }])) ?? '', /invalid volume id/);
  assert.match(specProblem(spec([{ id: 'vol_a', name: 'data', path: '/etc' }])) ?? '', /invalid volume mount path "\/etc"/);
  assert.match(specProblem({ ...spec(), volumes: 'x' } as unknown as InstanceSpec) ?? '', /invalid volumes/);
  // Specs without volumes keep their old shape (no replacement when the agent is upgraded); adding one replaces.
  assert.equal(replaceReason(spec(), spec([])), null);
  assert.equal(replaceReason(spec(), spec([{ id: 'vol_a', name: 'data', path: '/data' }])), 'spec');
  assert.equal(replaceReason(spec([{ id: 'vol_a', name: 'data', path: '/data' }]), spec([{ id: 'vol_a', name: 'renamed', path: '/data' }])), null);
});
