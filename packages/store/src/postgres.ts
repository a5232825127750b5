/**
 * The clustered store: PostgreSQL through a `pg` Pool, driven by the same Kysely queries and
 * the same migrations as SQLite (schema.ts keeps them portable: JSON as text, booleans 0/1,
 * timestamps as ISO text).
 *
 * Differences handled here, not in the queries:
 * - Text columns are created `collate "C"`: ordering and equality are by bytes, as SQLite's
 *   BINARY collation does, whatever locale the database was created with (en_US would sort
 *   `A_B` after `AC` and ignore case and hyphens at first level, changing list orders).
 * - PostgreSQL text can't hold NUL (U+0000), SQLite's can: string parameters have it replaced
 *   with U+FFFD, so a stray NUL in, say, a build error message can't turn a write into a 500.
 *   (JSON columns are unaffected: JSON.stringify already escapes it.)
 * - The pool reconnects by itself: a broken connection is dropped when released, and idle
 *   connections that die (server restart) are removed quietly. While the server is down,
 *   calls fail with StoreUnavailableError (503) instead of hanging or crashing the process.
 */
import type pg from 'pg';
import { Kysely, PostgresDialect, PostgresQueryCompiler } from 'kysely';
import type { ColumnDefinitionNode, CompiledQuery, DatabaseConnection, DataTypeNode, QueryCompiler } from 'kysely';
import type { Store } from './types.ts';
import type { Database } from './schema.ts';
import { KyselyStore } from './kysely-store.ts';
import { runMigrations } from './migrations/index.ts';
import { StoreUnavailableError, translateError } from './errors.ts';

export interface PostgresStoreOptions {
  /** Connections in the pool (default 10). */
  poolSize?: number;
  /** How long to wait for a connection, new or from the pool, before failing (default 5000 ms). */
  connectTimeoutMs?: number;
  /** Shown in pg_stat_activity (default `shellwego`). */
  applicationName?: string;
}

/** Byte-order text columns, so PostgreSQL sorts and compares like SQLite (see the file comment). */
class StorePostgresQueryCompiler extends PostgresQueryCompiler {
  #columnType: DataTypeNode | undefined;

  protected override visitColumnDefinition(node: ColumnDefinitionNode): void {
    const outer = this.#columnType;
    this.#columnType = node.dataType.kind === 'DataTypeNode' ? (node.dataType as DataTypeNode) : undefined;
    try {
      super.visitColumnDefinition(node);
    } finally {
      this.#columnType = outer;
    }
  }

  protected override visitDataType(node: DataTypeNode): void {
    super.visitDataType(node);
    // Only the column's own type: a cast inside a default expression can't take a collation.
    if (node === this.#columnType && node.dataType === 'text') this.append(' collate "C"');
  }
}

class StorePostgresDialect extends PostgresDialect {
  override createQueryCompiler(): QueryCompiler {
    return new StorePostgresQueryCompiler();
  }
}

/** Makes a connection replace NUL in string parameters (see the file comment). */
function withoutNul(connection: DatabaseConnection): void {
  const execute = connection.executeQuery.bind(connection);
  connection.executeQuery = (query: CompiledQuery) => {
    if (!query.parameters.some((p) => typeof p === 'string' && p.includes('\u0000'))) return execute(query);
    return execute({ ...query, parameters: query.parameters.map((p) => (typeof p === 'string' ? p.replaceAll('\u0000', '\uFFFD') : p)) });
  };
}

/** Hides the password of a connection URL in error messages. */
function redact(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:/@]*):[^/]*@/i, '$1:***@').replace(/([?&]password=)[^&]*/gi, '$1***');
}

/**
 * Opens the PostgreSQL store at `url` (`postgres://user:pass@host:port/db`, or a unix socket
 * directory as `?host=/run/postgresql`) and brings its schema up to date. The database must
 * exist; concurrent openers (two control planes starting at once) are serialised by the
 * migrator's advisory lock.
 */
export async function openPostgresStore(url: string, opts: PostgresStoreOptions = {}): Promise<Store> {
  // Loaded here, not with the module: a daemon on SQLite never needs pg (≈ 1.4 MB of heap).
  const { Pool } = (await import('pg')).default;
  const pool: pg.Pool = new Pool({
    connectionString: url,
    max: opts.poolSize ?? 10,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5000,
    application_name: opts.applicationName ?? 'shellwego',
  });
  // An idle connection killed by a server restart emits 'error' on the pool; pg-pool already
  // drops it, and without a listener Node would crash the process on the unhandled event.
  pool.on('error', () => {});
  // Same for a connection checked out (in a transaction, say) when the server goes: the error
  // arrives between queries, on the client. The client is then unusable — its next query fails
  // and the pool drops it on release — so the listener only keeps the process alive.
  pool.on('connect', (client) => client.on('error', () => {}));
  const db = new Kysely<Database>({ dialect: new StorePostgresDialect({ pool, onCreateConnection: async (c) => withoutNul(c) }) });
  try {
    await runMigrations(db);
  } catch (err) {
    await db.destroy();
    // runMigrations wraps the driver error; an unreachable server should read as such.
    const cause = err instanceof Error && err.cause !== undefined ? err.cause : err;
    if (translateError(cause) instanceof StoreUnavailableError) {
      throw new StoreUnavailableError(`PostgreSQL at ${redact(url)} is unavailable: ${(cause as Error).message}`, { cause });
    }
    throw err;
  }
  return new KyselyStore(db, 'postgres');
}
