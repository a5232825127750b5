import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { list } from 'tar';
import { listSourceFiles, writeSourceArchive } from './archive.ts';
import { CliError } from './errors.ts';

const made: string[] = [];
after(async () => {
  for (const d of made) await rm(d, { recursive: true, force: true });
});

async function tree(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'swg-archive-'));
  made.push(dir);
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), content);
  }
  return dir;
}

async function tarEntries(file: string): Promise<Map<string, { type: string; linkpath?: string; size: number }>> {
  const out = new Map<string, { type: string; linkpath?: string; size: number }>();
  await list({ file, onReadEntry: (e) => void out.set(e.path.replace(/\/$/, ''), { type: e.type, linkpath: e.linkpath, size: e.size }) });
  return out;
}

test('the tarball honours .gitignore at every level and never includes .git or the link file', async () => {
  const dir = await tree({
    '.gitignore': 'node_modules/\n*.log\n!keep.log\n/build\n',
    'package.json': '{"name":"x"}',
    'server.js': 'console.log(1)',
    'debug.log': 'noise',
    'keep.log': 'kept by a negation',
    'build/out.js': 'generated',
    'src/build/kept.js': 'only the root build/ is ignored',
    'node_modules/dep/index.js': 'dependency',
    'src/.gitignore': 'secret.txt\n!important.log\n',
    'src/secret.txt': 'ignored by the nested .gitignore',
    'src/important.log': 're-included by the nested .gitignore',
    'src/app.js': 'app',
    '.git/HEAD': 'ref: refs/heads/main',
    '.git/config': '[core]',
    'lib/.git': 'gitdir: ../.git/modules/lib',
    '.shellwego.json': '{"app":"x"}',
    'empty/.keep': '',
  });
  const listing = await listSourceFiles(dir);
  assert.deepEqual(listing.entries, [
    '.gitignore',
    'empty',
    'empty/.keep',
    'keep.log',
    'lib',
    'package.json',
    'server.js',
    'src',
    'src/.gitignore',
    'src/app.js',
    'src/build',
    'src/build/kept.js',
    'src/important.log',
  ]);
  const file = join(dir, '..', `${dir.split('/').pop()}.tgz`);
  made.push(file);
  const size = await writeSourceArchive(listing, file);
  assert.ok(size > 0);
  const entries = await tarEntries(file);
  assert.deepEqual([...entries.keys()].sort(), listing.entries);
  assert.equal(entries.get('server.js')!.size, 'console.log(1)'.length);
});

test('node_modules is sent when nothing ignores it', async () => {
  const dir = await tree({ 'index.js': '', 'node_modules/dep/index.js': 'x' });
  const { entries, files } = await listSourceFiles(dir);
  assert.ok(entries.includes('node_modules/dep/index.js'));
  assert.equal(files, 2);
});

test('links inside the directory are kept as links', async () => {
  const dir = await tree({ 'public/index.html': '<h1>hi</h1>', 'src/a.js': '' });
  await symlink('public/index.html', join(dir, 'index.html'));
  await symlink('../public', join(dir, 'src/assets'));
  await symlink('missing-but-inside', join(dir, 'dangling'));
  const listing = await listSourceFiles(dir);
  assert.ok(listing.entries.includes('index.html'));
  assert.ok(listing.entries.includes('src/assets'));
  assert.ok(!listing.entries.some((e) => e.startsWith('src/assets/')), 'a linked directory is not followed');
  const file = join(dir, '..', `${dir.split('/').pop()}-links.tgz`);
  made.push(file);
  await writeSourceArchive(listing, file);
  const entries = await tarEntries(file);
  assert.equal(entries.get('index.html')?.type, 'SymbolicLink');
  assert.equal(entries.get('index.html')?.linkpath, 'public/index.html');
});

test('links pointing outside the directory are refused, relative or absolute', async () => {
  const outside = await tree({ 'secret.txt': 'not yours' });
  for (const [name, target] of [
    ['up', '../../etc/passwd'],
    ['abs', '/etc/passwd'],
    ['abs-inside', 'ABS_INSIDE'],
    ['via', 'hop/secret.txt'],
  ]) {
    const dir = await tree({ 'index.js': '', '.gitignore': 'hop\n' });
    // `via` looks inside (hop/…), but hop — ignored, so not itself checked — leads out.
    if (name === 'via') await symlink(outside, join(dir, 'hop'));
    await symlink(target === 'ABS_INSIDE' ? join(dir, 'index.js') : target, join(dir, name));
    await assert.rejects(listSourceFiles(dir), (e: unknown) => {
      assert.ok(e instanceof CliError);
      assert.equal(e.code, 'symlink_outside');
      assert.match(e.message, new RegExp(`refusing to deploy .*: a symlink points outside the directory \\(${name} -> `));
      if (name.startsWith('abs')) assert.match(e.message, /use a relative link/);
      if (name === 'via') assert.match(e.message, /resolves to .*secret\.txt/);
      return true;
    });
  }
});

test('an ignored outside link is not a problem; an empty or missing directory is an error', async () => {
  const dir = await tree({ '.gitignore': 'escape\n', 'index.js': '' });
  await symlink('/etc', join(dir, 'escape'));
  assert.deepEqual((await listSourceFiles(dir)).entries, ['.gitignore', 'index.js']);

  const empty = await tree({ '.gitignore': '*\n' });
  await assert.rejects(writeSourceArchive(await listSourceFiles(empty), join(empty, 'x.tgz')), /nothing to deploy/);
  await assert.rejects(listSourceFiles(join(empty, 'nope')), /does not exist/);
  await assert.rejects(listSourceFiles(join(dir, 'index.js')), /is not a directory/);
});
