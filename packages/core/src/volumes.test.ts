import { test } from 'node:test';
import assert from 'node:assert/strict';
import { routes } from './api.ts';
import { mountPathProblem, mountPathsOverlap } from './names.ts';

test('mount paths: absolute, normalised, plain characters, not / and not where the platform mounts its own', () => {
  for (const ok of ['/data', '/var/lib/app', '/srv/uploads', '/home/app/.cache', '/data-1/x_y.z', '/application', '/tmpdata']) assert.equal(mountPathProblem(ok), null, ok);
  const bad: [string, RegExp][] = [
    ['/', /cannot be mounted at \//], ['data', /absolute/], ['/data/', /trailing slash/], ['//data', /absolute/], ['/data//x', /absolute/],
    ['/data/../etc', /normalised/], ['/./data', /normalised/], ['/da ta', /letters, digits/], ['/data\0', /letters, digits/], ['/ü', /letters, digits/],
    ['/app', /\/app belongs to the platform/], ['/app/uploads', /\/app belongs/], ['/tmp', /\/tmp belongs/], ['/proc/x', /\/proc belongs/],
    ['/sys', /\/sys belongs/], ['/dev/shm', /\/dev belongs/], ['/etc/app', /\/etc belongs/], ['/usr/local/data', /\/usr belongs/], ['/lib64', /\/lib64 belongs/],
    ['/' + 'a'.repeat(300), /longer than 255/],
  ];
  for (const [p, why] of bad) assert.match(mountPathProblem(p) ?? '', why, p);
  assert.equal(mountPathsOverlap('/data', '/data'), true);
  assert.equal(mountPathsOverlap('/data', '/data/sub'), true);
  assert.equal(mountPathsOverlap('/data/sub', '/data'), true);
  assert.equal(mountPathsOverlap('/data', '/database'), false);
});

test('createVolume body: names like app names, process types, a size in MB with a default; unknown fields refused', () => {
  const body = routes.createVolume.body;
  assert.deepEqual(body.parse({ name: 'data', processType: 'web', mountPath: '/data' }), { name: 'data', processType: 'web', mountPath: '/data', sizeMb: 1024 });
  assert.equal(body.parse({ name: 'db-1', processType: 'worker_2', mountPath: '/var/lib/db', sizeMb: 5 }).sizeMb, 5);
  const issues = (v: unknown) => body.safeParse(v).error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`) ?? [];
  assert.match(issues({ name: 'Data', processType: 'web', mountPath: '/data' })[0], /^name: volume names are lowercase letters/);
  assert.match(issues({ name: 'data', processType: 'Web', mountPath: '/data' })[0], /^processType: process types are lowercase words/);
  assert.match(issues({ name: 'data', processType: 'web', mountPath: '/app' })[0], /^mountPath: \/app belongs to the platform/);
  assert.match(issues({ name: 'data', processType: 'web', mountPath: '/data', sizeMb: 0 })[0], /^sizeMb:/);
  assert.match(issues({ name: 'data', processType: 'web', mountPath: '/data', sizeMb: 1.5 })[0], /^sizeMb:/);
  assert.match(issues({ name: 'data', processType: 'web', mountPath: '/data', nodeId: 'nod_x' })[0], /nodeId/);
  assert.equal(routes.createVolume.role, 'developer');
  assert.equal(routes.deleteVolume.role, 'developer');
  assert.equal(routes.listVolumes.role, 'viewer');
  assert.equal(routes.getVolume.role, 'viewer');
});
