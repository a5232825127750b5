import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configPath, deleteStoredLogin, readStoredLogin, writeStoredLogin } from './config-file.ts';
import { CliError } from './errors.ts';
import { findLink, writeLink } from './link.ts';

let root = '';
after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

test('app links: the nearest .shellwego.json walking up from the directory wins', async () => {
  root = await mkdtemp(join(tmpdir(), 'swg-link-'));
  const deep = join(root, 'project', 'src', 'lib', 'deep');
  await mkdir(deep, { recursive: true });
  assert.equal(await findLink(deep), null, 'nothing linked yet (and nothing above the temp dir either)');

  const file = await writeLink(join(root, 'project'), 'hello');
  assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), { app: 'hello' });
  assert.deepEqual(await findLink(deep), { app: 'hello', dir: join(root, 'project'), file });
  assert.equal((await findLink(join(root, 'project')))?.app, 'hello');

  await writeLink(join(root, 'project', 'src'), 'other');
  assert.equal((await findLink(deep))?.app, 'other', 'a nearer link wins');
  assert.equal((await findLink(join(root, 'project')))?.app, 'hello', 'links below do not count');

  await writeFile(join(root, 'project', 'src', 'lib', '.shellwego.json'), '{"nope": 1}');
  await assert.rejects(findLink(deep), (e: unknown) => e instanceof CliError && e.code === 'invalid_link');
});

test('config file location follows XDG_CONFIG_HOME (absolute only), else ~/.config', () => {
  assert.equal(configPath({ XDG_CONFIG_HOME: '/x/cfg' }, '/home/u'), '/x/cfg/shellwego/config.json');
  assert.equal(configPath({}, '/home/u'), '/home/u/.config/shellwego/config.json');
  assert.equal(configPath({ XDG_CONFIG_HOME: 'relative' }, '/home/u'), '/home/u/.config/shellwego/config.json');
});

test('the stored login is written with mode 0600 in a 0700 directory, and replaced atomically', async () => {
  const base = await mkdtemp(join(tmpdir(), 'swg-cfg-'));
  try {
    const path = configPath({ XDG_CONFIG_HOME: base }, '/nonexistent');
    assert.equal(await readStoredLogin(path), null);
    const login = { apiUrl: 'http://127.0.0.1:8080', token: 'swg_secret', email: 'a@b.c' };
    await writeStoredLogin(path, login);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.equal((await stat(join(base, 'shellwego'))).mode & 0o777, 0o700);
    assert.deepEqual(await readStoredLogin(path), login);

    // A world-readable file left by something else is replaced by a private one.
    await writeFile(path, '{}', { mode: 0o644 });
    await writeStoredLogin(path, { ...login, token: 'swg_new', organization: 'acme' });
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.deepEqual(await readStoredLogin(path), { ...login, token: 'swg_new', organization: 'acme' });

    await writeFile(path, 'not json');
    await assert.rejects(readStoredLogin(path), (e: unknown) => e instanceof CliError && e.code === 'config_invalid');
    assert.equal(await deleteStoredLogin(path), true);
    assert.equal(await deleteStoredLogin(path), false);
  } finally {
    await rm(base, { recursive: true, force: true });
  }
});
