import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { migrations } from './migrations/index.ts';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Sqlite from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { newId } from '@shellwego/core';
import { storeSuite } from './store-suite.ts';
import { openSqliteStore } from './sqlite.ts';
import { runMigrations } from './migrations/index.ts';

const CONFIG_KEYS = 25;
const EVENTS = 5;

storeSuite('sqlite (:memory:)', () => openSqliteStore(':memory:'));

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'swg-store-'));
}

describe('sqlite store on disk', () => {
  it('creates the parent directory, uses WAL and enforces foreign keys', async () => {
    const dir = await tempDir();
    try {
      const path = join(dir, 'nested', 'deeper', 'shellwego.db');
      const store = await openSqliteStore(path);
      await store.organizations.create({ id: newId('org'), name: 'acme' });
      await store.close();
      const raw = new Sqlite(path);
      assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
      raw.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('migrations are idempotent: reopening applies nothing and keeps the data', async () => {
    const dir = await tempDir();
    try {
      const path = join(dir, 'shellwego.db');
      const first = await openSqliteStore(path);
      const applied = await first.migrations();
      assert.deepEqual(applied, Object.keys(migrations).sort());
      await first.organizations.create({ id: newId('org'), name: 'acme' });
      await first.close();

      const second = await openSqliteStore(path);
      assert.deepEqual(await second.migrations(), applied);
      assert.ok(await second.organizations.byName('acme'));
      await second.close();

      const db = new Kysely<unknown>({ dialect: new SqliteDialect({ database: new Sqlite(path) }) });
      assert.deepEqual(await runMigrations(db), []);
      await db.destroy();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('survives SIGKILL in the middle of a stream of transactions: intact, and no half transaction', { timeout: 120_000 }, async () => {
    const dir = await tempDir();
    try {
      const path = join(dir, 'shellwego.db');
      const setup = await openSqliteStore(path);
      const org = await setup.organizations.create({ id: newId('org'), name: 'crash' });
      await setup.close();

      const writer = fileURLToPath(new URL('./testing/crash-writer.ts', import.meta.url));
      let reported = -1;
      for (let round = 0; round < 3; round++) {
        const target = reported + 15 + Math.floor(Math.random() * 20);
        const child = spawn(process.execPath, ['--import', 'tsx', writer, path, org.id, String(CONFIG_KEYS), String(EVENTS)], { stdio: ['ignore', 'pipe', 'inherit'] });
        const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
        let buf = '';
        child.stdout.on('data', (chunk: Buffer) => {
          buf += chunk.toString();
          const lines = buf.split('\n');
          buf = lines.pop()!;
          for (const l of lines) reported = Math.max(reported, Number(l));
          if (reported >= target) child.kill('SIGKILL');
        });
        assert.equal(await exited, 'SIGKILL', 'the writer was killed, not finished');
      }

      const raw = new Sqlite(path);
      assert.equal(raw.pragma('integrity_check', { simple: true }), 'ok');
      assert.deepEqual(raw.pragma('foreign_key_check'), []);
      raw.close();

      const store = await openSqliteStore(path);
      const apps = await store.apps.list(org.id);
      // Every transaction reported committed is there (WAL + synchronous=NORMAL loses nothing on a process crash)…
      assert.ok(apps.length >= reported + 1, `${apps.length} apps, ${reported + 1} reported committed`);
      const numbers = apps.map((a) => Number(a.name.slice('crash-'.length))).sort((x, y) => x - y);
      assert.deepEqual(numbers, numbers.map((_, i) => i), 'transactions are committed in order, without gaps');
      // …and each one is whole.
      for (const app of apps) {
        assert.equal(Object.keys(await store.config.get(org.id, app.id)).length, CONFIG_KEYS, app.name);
        assert.equal((await store.formation.list(org.id, app.id)).length, 1, app.name);
        assert.equal((await store.builds.list(org.id, app.id)).length, 1, app.name);
        assert.deepEqual((await store.releases.list(org.id, app.id)).map((r) => r.version), [1], app.name);
        assert.equal((await store.events.list(org.id, { appId: app.id })).length, EVENTS, app.name);
      }
      // Nothing of a half-written transaction is left behind.
      const raw2 = new Sqlite(path, { readonly: true });
      for (const table of ['config_vars', 'formations', 'builds', 'releases', 'events']) {
        const orphans = raw2.prepare(`select count(*) as n from ${table} where app_id is not null and app_id not in (select id from apps)`).get() as { n: number };
        assert.equal(orphans.n, 0, table);
      }
      raw2.close();
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
