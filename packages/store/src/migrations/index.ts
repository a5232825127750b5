import { Migrator } from 'kysely';
import type { Kysely, Migration, MigrationProvider } from 'kysely';
import * as m0001 from './0001_initial.ts';
import * as m0002 from './0002_organization_keys.ts';
import * as m0003 from './0003_domains.ts';
import * as m0004 from './0004_deployments.ts';
import * as m0005 from './0005_webhooks.ts';
import * as m0006 from './0006_image_builds.ts';
import * as m0007 from './0007_node_scheduling.ts';
import * as m0008 from './0008_node_credentials.ts';
import * as m0010 from './0010_cluster_routing.ts';
import * as m0011 from './0011_nats_users.ts';
import * as m0012 from './0012_volumes.ts';

/**
 * Every migration, by name. Names sort in the order they run (Kysely sorts them); never rename
 * or edit an applied migration — add the next `NNNN_what.ts` and list it here.
 */
export const migrations: Record<string, Migration> = {
  '0001_initial': m0001,
  '0002_organization_keys': m0002,
  '0003_domains': m0003,
  '0004_deployments': m0004,
  '0005_webhooks': m0005,
  '0006_image_builds': m0006,
  '0007_node_scheduling': m0007,
  '0008_node_credentials': m0008,
  '0010_cluster_routing': m0010,
  '0011_nats_users': m0011,
  '0012_volumes': m0012,
};

const provider: MigrationProvider = { getMigrations: async () => migrations };

export function migrator(db: Kysely<any>): Migrator {
  return new Migrator({ db, provider });
}

/** Applies pending migrations; returns the names applied by this call (empty when up to date). */
export async function runMigrations(db: Kysely<any>): Promise<string[]> {
  const { error, results } = await migrator(db).migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error) {
    const cause = error instanceof Error ? error : new Error(String(error));
    throw new Error(`store migration${failed ? ` ${failed.migrationName}` : ''} failed: ${cause.message}`, { cause });
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** Applied migration names, oldest first. */
export async function appliedMigrations(db: Kysely<any>): Promise<string[]> {
  const all = await migrator(db).getMigrations();
  return all.filter((m) => m.executedAt !== undefined).map((m) => m.name);
}
