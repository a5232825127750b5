/**
 * Config values at rest (issue 3, ADR 0005): two organizations set distinctive values, deploy a
 * static app, change config and roll back; then no file of the data dir (the SQLite database
 * with its -wal/-shm, blobs, logs, instance state — everything but master.key) contains them,
 * nor do the app's events, its log lines or the platform's own output. The API still returns
 * them, and each organization has its own wrapped data key.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import Sqlite from 'better-sqlite3';
import { TestPlatform, waitFor } from './helpers/platform.ts';
import { makeTarGz } from './helpers/tarball.ts';

const CANARY_A = 'plaintext-canary-7f3a91c0-org-a';
const CANARY_A2 = 'plaintext-canary-7f3a91c0-org-a-second';
const CANARY_B = 'plaintext-canary-7f3a91c0-org-b';
const CANARIES = [CANARY_A, CANARY_A2, CANARY_B];

let p: TestPlatform;
let tokenA: string;
let tokenB: string;

async function deployStatic(token: string, app: string): Promise<void> {
  const up = await fetch(`${p.apiUrl}/v1/apps/${app}/builds`, {
    method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' },
    body: makeTarGz([{ name: 'index.html', content: `<h1>${app}</h1>` }]) as unknown as BodyInit,
  });
  assert.equal(up.status, 202, await up.clone().text());
  const { id } = (await up.json()) as { id: string };
  const c = await p.client(token);
  const build = await waitFor(`build of ${app}`, async () => {
    const b = await c.call('getBuild', { params: { app, build: id } });
    return (b.state === 'succeeded' || b.state === 'failed') && b;
  }, 120_000);
  assert.equal(build.state, 'succeeded', build.error ?? '');
}

/** Every file under dir except master.key, with the canaries each contains. */
async function scan(dir: string): Promise<{ files: string[]; hits: string[] }> {
  const files: string[] = [];
  const hits: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const path = join(e.parentPath, e.name);
    if (e.name === 'master.key' && e.parentPath === dir) continue;
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch {
      continue; // removed while we looked (temp files)
    }
    files.push(relative(dir, path));
    for (const c of CANARIES) {
      if (bytes.includes(c) || bytes.includes(Buffer.from(c, 'utf16le'))) hits.push(`${relative(dir, path)}: ${c}`);
    }
  }
  return { files, hits };
}

before(async () => {
  p = await TestPlatform.start({ isolation: 'none', env: { SHELLWEGO_LOG_LEVEL: 'debug' } });
  tokenA = await p.token();
  const a = await p.client(tokenA);
  const added = await a.call('addMember', { body: { email: 'b-owner@example.com', role: 'viewer' } });
  const tmp = await p.client(await p.token('b-owner@example.com', added.initialPassword!));
  await tmp.call('createOrganization', { body: { name: 'org-b' } });
  tokenB = await p.token('b-owner@example.com', added.initialPassword!, 'org-b');
  const b = await p.client(tokenB);

  await a.call('createApp', { body: { name: 'vault-a' } });
  await a.call('updateConfig', { params: { app: 'vault-a' }, body: { vars: { SECRET_TOKEN: CANARY_A, PLAIN: 'x' } } });
  await deployStatic(tokenA, 'vault-a'); // the build request and the release snapshot open and seal config
  await a.call('updateConfig', { params: { app: 'vault-a' }, body: { vars: { SECOND_TOKEN: CANARY_A2 } } }); // a config release
  await a.call('rollback', { params: { app: 'vault-a' }, body: {} }); // back to the first release's config

  await b.call('createApp', { body: { name: 'vault-b' } });
  await b.call('updateConfig', { params: { app: 'vault-b' }, body: { vars: { SECRET_TOKEN: CANARY_B } } });
});

after(async () => {
  await p?.destroy();
});

test('the API returns the values, per app and organization, after config releases and a rollback', async () => {
  const a = await p.client(tokenA);
  const b = await p.client(tokenB);
  assert.deepEqual(await a.call('getConfig', { params: { app: 'vault-a' } }), { PLAIN: 'x', SECRET_TOKEN: CANARY_A });
  assert.deepEqual(await b.call('getConfig', { params: { app: 'vault-b' } }), { SECRET_TOKEN: CANARY_B });
  const releases = await a.call('listReleases', { params: { app: 'vault-a' } });
  assert.deepEqual(releases.map((r) => r.version), [3, 2, 1]);
  assert.deepEqual(releases[1].configKeys, ['PLAIN', 'SECOND_TOKEN', 'SECRET_TOKEN']);
  assert.deepEqual(releases[0].configKeys, ['PLAIN', 'SECRET_TOKEN']);
});

test('events, log lines and the platform output carry keys, never values', async () => {
  const a = await p.client(tokenA);
  const b = await p.client(tokenB);
  const events = JSON.stringify([await a.call('appEvents', { params: { app: 'vault-a' } }), await b.call('appEvents', { params: { app: 'vault-b' } })]);
  const logs = JSON.stringify([
    await a.call('logs', { params: { app: 'vault-a' }, query: { lines: 1000 } }),
    await b.call('logs', { params: { app: 'vault-b' }, query: { lines: 1000 } }),
  ]);
  assert.match(events, /SECRET_TOKEN/, 'events name the keys');
  assert.match(logs, /SECOND_TOKEN/, 'platform log lines name the keys');
  for (const c of CANARIES) {
    assert.ok(!events.includes(c), `events contain ${c}`);
    assert.ok(!logs.includes(c), `logs contain ${c}`);
    assert.ok(!p.output.includes(c), `platform output contains ${c}`);
  }
});

/**
 * No exception: the agent keeps each instance's env (config vars) out of its data dir, in tmpfs
 * (/run/shellwego/agent-…/env, or in memory only when /run is no tmpfs), never in instance.json.
 */
test('no file of the data dir holds a value in plaintext — while running and after shutdown', async () => {
  const running = await scan(p.dataDir);
  for (const f of ['shellwego.db', 'shellwego.db-wal', 'shellwego.db-shm']) assert.ok(running.files.includes(f), `${f} scanned: ${running.files.join(', ')}`);
  assert.ok(running.files.some((f) => f.startsWith('blobs/')), 'blobs scanned');
  assert.deepEqual(running.hits, []);
  await p.stop(); // checkpoints the WAL into the database file
  const stopped = await scan(p.dataDir);
  assert.ok(stopped.files.includes('shellwego.db'));
  assert.deepEqual(stopped.hits, []);
  for (const c of CANARIES) assert.ok(!p.output.includes(c), `platform output contains ${c}`);

  const db = new Sqlite(join(p.dataDir, 'shellwego.db'), { readonly: true });
  try {
    const all = db.prepare('select organization_id, provider, key_id, wrapped_key from organization_keys').all() as { organization_id: string; provider: string; key_id: string; wrapped_key: string }[];
    // The platform's own keys (local CA, ACME account) live under the system organization (ADR 0007).
    const keys = all.filter((k) => k.organization_id !== 'org_platform');
    assert.equal(keys.length, 2, 'one data key per organization that has config');
    assert.ok(all.length - keys.length <= 1);
    assert.notEqual(keys[0].organization_id, keys[1].organization_id);
    assert.notEqual(keys[0].wrapped_key, keys[1].wrapped_key);
    assert.ok(keys.every((k) => k.provider === 'file' && k.key_id.startsWith('file:')));
    const values = db.prepare('select app_id, value from config_vars').all() as { app_id: string; value: string }[];
    assert.equal(values.length, 3);
    assert.ok(values.every((v) => v.value.startsWith('v2:')), 'new writes are v2');
    const snapshots = db.prepare('select config_sealed from releases').all() as { config_sealed: string }[];
    assert.ok(snapshots.length >= 3 && snapshots.every((s) => s.config_sealed.startsWith('v2:')));
  } finally {
    db.close();
  }
});
