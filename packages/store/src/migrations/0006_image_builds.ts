import type { Kysely } from 'kysely';

/**
 * OCI image builds (issue 3): what a build pulls. One row per image build, next to its `builds`
 * row: the image reference and, when the registry needs them, the credentials sealed with the
 * organization's key (the store never sees them in plaintext). Kept so a build interrupted by a
 * restart can be requested again.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('image_builds')
    .addColumn('build_id', 'text', (c) => c.primaryKey().references('builds.id'))
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('app_id', 'text', (c) => c.notNull())
    .addColumn('reference', 'text', (c) => c.notNull())
    .addColumn('credentials_sealed', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('image_builds_app_idx').on('image_builds').columns(['organization_id', 'app_id']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('image_builds').execute();
}
