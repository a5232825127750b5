import type { Kysely } from 'kysely';

/**
 * Persistent volumes (issue 4, ADR 0020): a named directory of an app, mounted into every instance
 * of one process type. `node_id` is null until the first instance using it is placed, and then
 * never changes (the data lives there): the scheduler's volume-locality filter reads it.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('volumes')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('app_id', 'text', (c) => c.notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('process_type', 'text', (c) => c.notNull())
    .addColumn('mount_path', 'text', (c) => c.notNull())
    .addColumn('size_mb', 'integer', (c) => c.notNull())
    .addColumn('node_id', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    // Tenant-owned rows reference apps(id, organization_id): a write cannot cross tenants.
    .addForeignKeyConstraint('volumes_app_fkey', ['app_id', 'organization_id'], 'apps', ['id', 'organization_id'])
    .addUniqueConstraint('volumes_app_id_name_key', ['app_id', 'name'])
    .addUniqueConstraint('volumes_app_id_process_type_mount_path_key', ['app_id', 'process_type', 'mount_path'])
    .execute();
  await db.schema.createIndex('volumes_node_id').on('volumes').column('node_id').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('volumes').execute();
}
