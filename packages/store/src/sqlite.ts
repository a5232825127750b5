/**
 * The embedded store: one SQLite file opened with better-sqlite3, driven by Kysely.
 *
 * Settings (see README):
 * - journal_mode=WAL: readers don't block the writer, and a crash leaves the last committed
 *   transaction intact (the WAL is replayed or ignored up to the last commit frame).
 * - synchronous=NORMAL: with WAL, commits are not fsynced one by one, only at checkpoints. A
 *   process crash loses nothing (the WAL is in the OS page cache); a power loss may lose the
 *   last few commits but never corrupts the database. FULL would fsync every commit and cost
 *   an order of magnitude in write latency on the control plane's small transactions.
 * - foreign_keys=ON: SQLite enforces references only when asked, per connection.
 * - busy_timeout=5000: another process holding the write lock (a CLI maintenance command, a
 *   backup) makes us wait up to 5 s instead of failing at once.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Sqlite from 'better-sqlite3';
import { CompiledQuery, Kysely, SqliteAdapter, SqliteDialect, SqliteDriver } from 'kysely';
import type { DatabaseConnection, DialectAdapter, Driver, SqliteDatabase, SqliteStatement } from 'kysely';
import type { Store } from './types.ts';
import type { Database } from './schema.ts';
import { KyselyStore } from './kysely-store.ts';
import { runMigrations } from './migrations/index.ts';

/**
 * Transactions start with BEGIN IMMEDIATE: they take the write lock up front (waiting up to
 * busy_timeout), so a transaction that reads then writes (release version allocation) can't
 * fail half-way with SQLITE_BUSY when another process wrote in between.
 */
class ImmediateSqliteDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }
}

/** SQLite has transactional DDL; Kysely's adapter says no, which would let a crash half-apply a migration. */
class TransactionalDdlSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

class StoreSqliteDialect extends SqliteDialect {
  readonly #database: SqliteDatabase;
  constructor(database: SqliteDatabase) {
    super({ database });
    this.#database = database;
  }
  override createDriver(): Driver {
    return new ImmediateSqliteDriver({ database: this.#database });
  }
  override createAdapter(): DialectAdapter {
    return new TransactionalDdlSqliteAdapter();
  }
}

/** Kysely prepares every query anew; the store runs the same few dozen statements all day. */
function withStatementCache(db: Sqlite.Database, size = 256): SqliteDatabase {
  const cache = new Map<string, SqliteStatement>();
  return {
    close: () => db.close(),
    prepare(sql: string): SqliteStatement {
      let stmt = cache.get(sql);
      if (stmt) {
        // Map keeps insertion order: re-insert to make it the most recently used.
        cache.delete(sql);
      } else {
        stmt = db.prepare(sql) as unknown as SqliteStatement;
        if (cache.size >= size) cache.delete(cache.keys().next().value as string);
      }
      cache.set(sql, stmt);
      return stmt;
    },
  };
}

/** Opens (creating if needed) the SQLite store at `path` and brings its schema up to date. `:memory:` works for tests. */
export async function openSqliteStore(path: string): Promise<Store> {
  const memory = path === ':memory:' || path === '';
  if (!memory) mkdirSync(dirname(path), { recursive: true });
  const sqlite = new Sqlite(path);
  try {
    // busy_timeout first: switching to WAL needs a lock another process may hold.
    sqlite.pragma('busy_timeout = 5000');
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('foreign_keys = ON');
  } catch (err) {
    sqlite.close();
    throw err;
  }
  const db = new Kysely<Database>({ dialect: new StoreSqliteDialect(withStatementCache(sqlite)) });
  try {
    await runMigrations(db);
  } catch (err) {
    await db.destroy();
    throw err;
  }
  return new KyselyStore(db, 'sqlite');
}
