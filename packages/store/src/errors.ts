import { ApiError } from '@shellwego/core';
import { UNIQUE_CONSTRAINTS } from './schema.ts';

/**
 * A write broke a unique constraint (duplicate app name, email, membership, token hash, release
 * version…). `constraint` is a dialect-independent identifier, `table(columns)`; compare it with
 * `CONSTRAINTS`. It is an ApiError (409) so a race the caller did not pre-check still reaches
 * the user as a conflict, not a 500.
 */
export class StoreConflictError extends ApiError {
  readonly constraint: string;

  constructor(constraint: string, options?: { cause?: unknown }) {
    super(409, 'already_exists', `a record with the same ${constraint} already exists`, { constraint });
    this.name = 'StoreConflictError';
    this.constraint = constraint;
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/**
 * A write referenced a row that does not exist — or exists in another organization (tenant
 * checks and foreign keys fail the same way, so nothing leaks). 404 `not_found`.
 */
export class StoreReferenceError extends ApiError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(404, 'not_found', message);
    this.name = 'StoreReferenceError';
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/**
 * The outer Store was used inside its own `transaction(fn)` callback. With one SQLite
 * connection (or a row lock in PostgreSQL) that call would wait for the transaction forever;
 * use the Store passed to `fn` instead.
 */
export class StoreMisuseError extends Error {
  readonly code = 'store_misuse';
  constructor(message: string) {
    super(message);
    this.name = 'StoreMisuseError';
  }
}

/**
 * The database server can't be reached (PostgreSQL down, restarting, or the network to it
 * broken). 503 `store_unavailable`: the request may be retried; the pool reconnects by itself
 * once the server is back.
 */
export class StoreUnavailableError extends ApiError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(503, 'store_unavailable', message);
    this.name = 'StoreUnavailableError';
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/** Socket errors and what node-postgres says when a connection breaks or can't be made. */
const CONNECTION_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOENT', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const CONNECTION_MESSAGES = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error)/;

export function isConflict(err: unknown, constraint?: string): err is StoreConflictError {
  return err instanceof StoreConflictError && (constraint === undefined || err.constraint === constraint);
}

/** Translates driver errors (better-sqlite3, node-postgres) into the store's error types. */
export function translateError(err: unknown): unknown {
  if (!err || typeof err !== 'object' || err instanceof ApiError) return err;
  const e = err as { code?: unknown; message?: unknown; constraint?: unknown; table?: unknown; detail?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  const message = typeof e.message === 'string' ? e.message : '';

  // SQLite: "UNIQUE constraint failed: memberships.organization_id, memberships.user_id"
  if (code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
    const cols = /constraint failed: (.+)$/.exec(message)?.[1]?.split(',').map((s) => s.trim()) ?? [];
    const table = cols[0]?.split('.')[0] ?? 'unknown';
    return new StoreConflictError(`${table}(${cols.map((c) => c.split('.').slice(1).join('.')).join(',')})`, { cause: err });
  }
  if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY') {
    return new StoreReferenceError('a referenced record does not exist in this organization', { cause: err });
  }
  // PostgreSQL: unique_violation / foreign_key_violation, with the constraint name.
  if (code === '23505') {
    const name = typeof e.constraint === 'string' ? e.constraint : '';
    const known = (UNIQUE_CONSTRAINTS as Record<string, string>)[name];
    // Not listed (a newer migration): build the same `table(columns)` SQLite would report from
    // the error's detail, "Key (app_id, key)=(…) already exists.".
    const cols = typeof e.detail === 'string' ? /^Key \((.+?)\)=/.exec(e.detail)?.[1] : undefined;
    const derived = typeof e.table === 'string' && cols ? `${e.table}(${cols.split(',').map((c) => c.trim()).join(',')})` : undefined;
    return new StoreConflictError(known ?? derived ?? (name || 'unknown'), { cause: err });
  }
  if (code === '23503') {
    return new StoreReferenceError('a referenced record does not exist in this organization', { cause: err });
  }
  // PostgreSQL unreachable: class 08 (connection exception), 57P01-57P03 (shutting down,
  // crashed, starting up), or the socket/driver failing before the server said anything.
  if (/^08/.test(code) || code === '57P01' || code === '57P02' || code === '57P03' || CONNECTION_ERRNOS.has(code) || CONNECTION_MESSAGES.test(message)) {
    return new StoreUnavailableError(`the database is unavailable: ${message || code}`, { cause: err });
  }
  return err;
}
