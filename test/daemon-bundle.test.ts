// scripts/daemon.mjs (ADR 0021): the daemons run from a bundle made on start and remade when an input changed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync, utimesSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = resolve(import.meta.dirname, '..');
const BUNDLE = join(ROOT, 'dist/server/main.mjs');
const run = (env: Record<string, string> = {}) => spawnSync(process.execPath, [join(ROOT, 'scripts/daemon.mjs'), '--help'], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env } });

test('the daemon runs from the bundle, remade only when one of its inputs changed', () => {
  const first = run();
  assert.equal(first.status, 0, first.stderr);
  assert.match(first.stdout, /Usage: shellwego-server/);
  assert.equal(first.stderr, '', 'no fallback to tsx');
  const made = JSON.parse(readFileSync(join(ROOT, 'dist/server/inputs.json'), 'utf8')) as { root: string; inputs: string[] };
  assert.equal(made.root, ROOT);
  assert.ok(made.inputs.includes('packages/server/src/main.ts') && made.inputs.includes('packages/control-plane/src/controllers/deployer.ts'));
  assert.ok(!made.inputs.some((f) => f.includes('node_modules')), 'npm packages stay outside the bundle');
  // Workspace files keep their own location (the builder ships static-server.mjs from next to its source).
  assert.ok(readFileSync(BUNDLE, 'utf8').includes(JSON.stringify(pathToFileURL(join(ROOT, 'packages/builder/src/build.ts')).href)));

  const built = statSync(BUNDLE).mtimeMs;
  assert.equal(run().status, 0);
  assert.equal(statSync(BUNDLE).mtimeMs, built, 'unchanged inputs: the same bundle');

  const input = join(ROOT, 'packages/core/src/ids.ts');
  const was = statSync(input);
  try {
    utimesSync(input, was.atime, new Date(built + 5000));
    assert.equal(run().status, 0);
    assert.ok(statSync(BUNDLE).mtimeMs > built, 'a newer input: bundled again');
  } finally {
    utimesSync(input, was.atime, was.mtime);
  }
});

test('SHELLWEGO_RUN_WITH_TSX=1 runs the TypeScript entry through tsx', () => {
  const r = run({ SHELLWEGO_RUN_WITH_TSX: '1' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /Usage: shellwego-server/);
});

test('scripts/daemon.sh starts the daemon with its malloc and V8 heap settings (ADR 0024); the environment wins', () => {
  // The node flags a caller adds come after the wrapper's: here one that prints what the process got instead of starting.
  const probe = (env: Record<string, string>) => {
    const r = spawnSync('sh', [join(ROOT, 'scripts/daemon.sh'), 'up'], {
      cwd: ROOT, encoding: 'utf8',
      env: { ...process.env, MALLOC_ARENA_MAX: '', MALLOC_MMAP_THRESHOLD_: '', MALLOC_TRIM_THRESHOLD_: '', ...env, SHELLWEGO_NODE_FLAGS: '-p JSON.stringify([process.env.MALLOC_ARENA_MAX,process.env.MALLOC_MMAP_THRESHOLD_,process.env.MALLOC_TRIM_THRESHOLD_,process.execArgv])' },
    });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as [string, string, string, string[]];
  };
  const [arenas, mmap, trim, argv] = probe({});
  assert.deepEqual([arenas, mmap, trim], ['2', '131072', '131072']);
  assert.equal(argv[0], '--max-semi-space-size=4');
  const mine = probe({ MALLOC_ARENA_MAX: '4', SHELLWEGO_SEMI_SPACE_MB: '16' });
  assert.equal(mine[0], '4');
  assert.equal(mine[3][0], '--max-semi-space-size=16');
});
