import type { Kysely } from 'kysely';

/**
 * Inbound GitHub/GitLab webhooks (issue 3). `webhooks` holds one configured repository/branch
 * per row; the repository URL (which may carry credentials) and the shared secret are stored
 * sealed, with a credential-free copy of the URL for display. `webhook_deliveries` makes
 * deliveries replay-safe: the primary key (hook_id, delivery_id) lets exactly one of two
 * identical deliveries in, whatever their timing.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('webhooks')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('app_id', 'text', (c) => c.notNull())
    .addColumn('provider', 'text', (c) => c.notNull())
    .addColumn('repository_url', 'text', (c) => c.notNull())
    .addColumn('repository_sealed', 'text', (c) => c.notNull())
    .addColumn('branch', 'text', (c) => c.notNull())
    .addColumn('secret_sealed', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addForeignKeyConstraint('webhooks_app_fkey', ['app_id', 'organization_id'], 'apps', ['id', 'organization_id'])
    .execute();
  await db.schema.createIndex('webhooks_app_idx').on('webhooks').columns(['organization_id', 'app_id']).execute();

  await db.schema
    .createTable('webhook_deliveries')
    .addColumn('hook_id', 'text', (c) => c.notNull().references('webhooks.id'))
    .addColumn('delivery_id', 'text', (c) => c.notNull())
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('app_id', 'text', (c) => c.notNull())
    .addColumn('event', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('message', 'text', (c) => c.notNull())
    .addColumn('build_id', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('webhook_deliveries_pkey', ['hook_id', 'delivery_id'])
    .addForeignKeyConstraint('webhook_deliveries_app_fkey', ['app_id', 'organization_id'], 'apps', ['id', 'organization_id'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('webhook_deliveries').execute();
  await db.schema.dropTable('webhooks').execute();
}
