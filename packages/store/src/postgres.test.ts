/**
 * The store contract against a real PostgreSQL (Debian `postgresql` package, started here on
 * loopback), plus what only a server database has: concurrent openers, restarts, collation.
 */
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { newId } from '@shellwego/core';
import { storeSuite } from './store-suite.ts';
import { openPostgresStore } from './postgres.ts';
import { migrations } from './migrations/index.ts';
import { StoreConflictError, StoreUnavailableError, translateError } from './errors.ts';
import { UNIQUE_CONSTRAINTS } from './schema.ts';
import { startPostgres } from './testing/postgres-server.ts';
import type { PostgresServer } from './testing/postgres-server.ts';

// Started at load, not in a hook: missing binaries then fail this file with the install hint
// (counted as a failure), where a failing `before` would only mark the tests "not ok".
const server: PostgresServer = await startPostgres();
after(() => server.close());

describe('postgres store', () => {

  storeSuite('postgres', async () => openPostgresStore(await server.createDatabase()));

  it('two stores opening the same new database at once apply the migrations exactly once', async () => {
    const url = await server.createDatabase();
    const [a, b] = await Promise.all([openPostgresStore(url), openPostgresStore(url)]);
    try {
      assert.deepEqual(await a.migrations(), Object.keys(migrations).sort());
      assert.deepEqual(await b.migrations(), Object.keys(migrations).sort());
      // Both see one database: a write through one is read through the other.
      const org = await a.organizations.create({ id: newId('org'), name: 'shared' });
      assert.deepEqual(await b.organizations.byId(org.id), org);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('text columns use byte order ("C" collation) whatever the database locale, as SQLite does', async () => {
    const url = await server.createDatabase();
    const store = await openPostgresStore(url);
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      // The test server's default collation is ICU en-US, which would sort these differently.
      const locale = await client.query<{ datlocprovider: string }>('select datlocprovider from pg_database where datname = current_database()');
      assert.equal(locale.rows[0]?.datlocprovider, 'i');
      const cols = await client.query<{ n: string }>(
        `select count(*) as n from information_schema.columns
          where table_schema = 'public' and data_type = 'text' and table_name not like 'kysely%' and coalesce(collation_name, '') <> 'C'`,
      );
      assert.equal(Number(cols.rows[0]?.n), 0, 'every text column is collate "C"');

      const org = await store.organizations.create({ id: newId('org'), name: 'bytes' });
      const app = await store.apps.create({ id: newId('app'), organizationId: org.id, name: 'bytes-app', plan: 'free' });
      await store.config.apply(org.id, app.id, { a: '1', B: '2', AC: '3', A_B: '4' });
      assert.deepEqual(Object.keys(await store.config.get(org.id, app.id)), ['AC', 'A_B', 'B', 'a']);
    } finally {
      await client.end();
      await store.close();
    }
  });

  it('every unique constraint maps to the identifier SQLite reports; unlisted ones are derived the same way', async () => {
    const url = await server.createDatabase();
    const store = await openPostgresStore(url);
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      const { rows } = await client.query<{ conname: string; relname: string; cols: string }>(
        `select con.conname, rel.relname,
                array_to_string(array(select a.attname from unnest(con.conkey) with ordinality k(n, i)
                  join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.n order by k.i), ',') as cols
           from pg_constraint con join pg_class rel on rel.oid = con.conrelid join pg_namespace ns on ns.oid = rel.relnamespace
          where ns.nspname = 'public' and con.contype in ('p', 'u') and rel.relname not like 'kysely%'`,
      );
      assert.ok(rows.length >= 20, `${rows.length} constraints`);
      for (const r of rows) {
        assert.equal((UNIQUE_CONSTRAINTS as Record<string, string>)[r.conname], `${r.relname}(${r.cols})`, r.conname);
      }
      // A constraint a future migration forgets to list still reads like SQLite's `table(columns)`.
      await client.query('create table later_things (a text, b text, constraint later_things_a_b_key unique (a, b))');
      await client.query(`insert into later_things values ('x', 'y')`);
      const err = await client.query(`insert into later_things values ('x', 'y')`).then(() => undefined, (e: unknown) => e);
      const translated = translateError(err);
      assert.ok(translated instanceof StoreConflictError, String(translated));
      assert.equal(translated.constraint, 'later_things(a,b)');
    } finally {
      await client.end();
      await store.close();
    }
  });

  it('a NUL character in text is stored as U+FFFD instead of failing the write; JSON keeps it exactly', async () => {
    const store = await openPostgresStore(await server.createDatabase());
    try {
      const org = await store.organizations.create({ id: newId('org'), name: 'nul' });
      const e = await store.events.append({ id: newId('evt'), organizationId: org.id, appId: null, type: 'build.failed', message: 'out\u0000put', data: { raw: 'a\u0000b' } });
      assert.equal(e.message, 'out\uFFFDput');
      const [listed] = await store.events.list(org.id);
      assert.equal(listed?.message, 'out\uFFFDput');
      assert.deepEqual(listed?.data, { raw: 'a\u0000b' });
    } finally {
      await store.close();
    }
  });

  it('opening against a server that is not there fails with StoreUnavailableError and no password in the message', async () => {
    const url = `postgres://shellwego:s3cret-pw@127.0.0.1:1/shellwego`;
    await assert.rejects(openPostgresStore(url, { connectTimeoutMs: 2000 }), (err) => {
      assert.ok(err instanceof StoreUnavailableError, String(err));
      assert.equal(err.status, 503);
      assert.equal(err.code, 'store_unavailable');
      assert.match(err.message, /PostgreSQL at postgres:\/\/shellwego:\*\*\*@127\.0\.0\.1:1\/shellwego is unavailable/);
      assert.doesNotMatch(err.message, /s3cret/);
      return true;
    });
  });

  it('PostgreSQL restarted under an open store: calls fail with 503 while it is down and work again once it is back', async () => {
    const store = await openPostgresStore(await server.createDatabase(), { connectTimeoutMs: 2000 });
    try {
      const org = await store.organizations.create({ id: newId('org'), name: 'restart' });
      // Several pooled connections, idle when the server goes away.
      await Promise.all(Array.from({ length: 4 }, (_, i) => store.apps.create({ id: newId('app'), organizationId: org.id, name: `restart-${i}`, plan: 'free' })));

      // A transaction cut in the middle by the shutdown is rolled back as a whole.
      let inside!: () => void;
      const reachedInside = new Promise<void>((resolve) => (inside = resolve));
      let resume!: () => void;
      const resumed = new Promise<void>((resolve) => (resume = resolve));
      const cut = store.transaction(async (tx) => {
        await tx.apps.create({ id: newId('app'), organizationId: org.id, name: 'half-done', plan: 'free' });
        inside();
        await resumed;
        await tx.apps.create({ id: newId('app'), organizationId: org.id, name: 'never', plan: 'free' });
      });
      await reachedInside;
      await server.stop();
      resume();
      await assert.rejects(cut, (err) => err instanceof StoreUnavailableError && err.status === 503);

      for (let i = 0; i < 3; i++) {
        await assert.rejects(store.apps.list(org.id), (err) => {
          assert.ok(err instanceof StoreUnavailableError, String(err));
          assert.equal(err.status, 503);
          assert.match(err.message, /database is unavailable/);
          return true;
        });
      }
      await assert.rejects(store.transaction((tx) => tx.organizations.byId(org.id)), StoreUnavailableError);

      await server.start();
      // The pool reconnects by itself: reads, writes and transactions work again, committed data survived.
      assert.deepEqual((await store.apps.list(org.id)).map((a) => a.name), ['restart-0', 'restart-1', 'restart-2', 'restart-3']);
      await store.apps.create({ id: newId('app'), organizationId: org.id, name: 'after', plan: 'free' });
      const n = await store.transaction(async (tx) => (await tx.apps.list(org.id)).length);
      assert.equal(n, 5);
    } finally {
      await store.close();
    }
  });
});
