import type { Kysely } from 'kysely';

/**
 * Per-organization data keys for envelope encryption of config values (ADR 0005). Only the
 * wrapped key is stored: `provider` and `key_id` name the master key that wrapped it, so a
 * later rotation can re-wrap rows key by key. One key per organization (the primary key), so
 * concurrent first uses agree on one winner.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('organization_keys')
    .addColumn('organization_id', 'text', (c) => c.primaryKey().references('organizations.id'))
    .addColumn('provider', 'text', (c) => c.notNull())
    .addColumn('key_id', 'text', (c) => c.notNull())
    .addColumn('wrapped_key', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('organization_keys').execute();
}
