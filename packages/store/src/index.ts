export type * from './types.ts';
export * from './schema.ts';
export { KyselyStore } from './kysely-store.ts';
export type { Dialect } from './kysely-store.ts';
export { openSqliteStore } from './sqlite.ts';
export { FileBlobStore, assertDigest } from './blobs.ts';
export { StoreConflictError, StoreReferenceError, StoreMisuseError, isConflict, translateError } from './errors.ts';
export { runMigrations, appliedMigrations, migrations } from './migrations/index.ts';
