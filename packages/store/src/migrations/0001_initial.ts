import type { Kysely } from 'kysely';

/**
 * The first schema. Written with Kysely's schema builder only, so SQLite and PostgreSQL run the
 * same migration. Migrations take `Kysely<any>` on purpose: they describe the schema as it was
 * at their version, not as `schema.ts` says it is today.
 *
 * Tenant-owned tables carry `organization_id` and reference `apps(id, organization_id)` with a
 * composite foreign key, so a row can never point at another organization's app.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('users')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('email', 'text', (c) => c.notNull())
    .addColumn('password_hash', 'text', (c) => c.notNull())
    .addColumn('platform_admin', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('users_email_key', ['email'])
    .execute();

  await db.schema
    .createTable('organizations')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('organizations_name_key', ['name'])
    .execute();

  await db.schema
    .createTable('memberships')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id'))
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id'))
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('memberships_organization_id_user_id_key', ['organization_id', 'user_id'])
    .execute();
  await db.schema.createIndex('memberships_user_id_idx').on('memberships').column('user_id').execute();

  await db.schema
    .createTable('api_tokens')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id'))
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('token_hash', 'text', (c) => c.notNull())
    .addColumn('scopes', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'text')
    .addColumn('last_used_at', 'text')
    .addUniqueConstraint('api_tokens_token_hash_key', ['token_hash'])
    .execute();
  await db.schema.createIndex('api_tokens_org_user_idx').on('api_tokens').columns(['organization_id', 'user_id']).execute();

  await db.schema
    .createTable('apps')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('plan', 'text', (c) => c.notNull())
    // No foreign key: releases reference apps, and a cycle would complicate deletes for no gain.
    .addColumn('current_release_id', 'text')
    .addColumn('restart_generation', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    // App names are hostnames: unique across the platform, not per organization.
    .addUniqueConstraint('apps_name_key', ['name'])
    // Target of the composite foreign keys that keep child rows in their app's organization.
    .addUniqueConstraint('apps_id_organization_id_key', ['id', 'organization_id'])
    .execute();
  await db.schema.createIndex('apps_organization_id_idx').on('apps').columns(['organization_id', 'name']).execute();

  await db.schema
    .createTable('config_vars')
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('app_id', 'text', (c) => c.notNull())
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('value', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('config_vars_pkey', ['app_id', 'key'])
    .addForeignKeyConstraint('config_vars_app_fkey', ['app_id', 'organization_id'], 'apps', ['id', 'organization_id'])
    .execute();

  await db.schema
    .createTable('formations')
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('app_id', 'text', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('quantity', 'integer', (c) => c.notNull())
    .addColumn('command', 'text')
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('formations_pkey', ['app_id', 'type'])
    .addForeignKeyConstraint('formations_app_fkey', ['app_id', 'organization_id'], 'apps', ['id', 'organization_id'])
    .execute();

  await db.schema
    .createTable('builds')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('app_id', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('stack', 'text')
    .addColumn('source_digest', 'text', (c) => c.notNull())
    .addColumn('artifact_digest', 'text')
    .addColumn('process_types', 'text', (c) => c.notNull())
    .addColumn('cache_hit', 'integer')
    .addColumn('error', 'text')
    // No foreign key: the release references the build (cycle).
    .addColumn('release_id', 'text')
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('finished_at', 'text')
    .addForeignKeyConstraint('builds_app_fkey', ['app_id', 'organization_id'], 'apps', ['id', 'organization_id'])
    .execute();
  await db.schema.createIndex('builds_app_id_created_at_idx').on('builds').columns(['app_id', 'created_at']).execute();
  await db.schema.createIndex('builds_state_idx').on('builds').column('state').execute();

  await db.schema
    .createTable('releases')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('app_id', 'text', (c) => c.notNull())
    .addColumn('version', 'integer', (c) => c.notNull())
    .addColumn('build_id', 'text', (c) => c.notNull().references('builds.id'))
    .addColumn('description', 'text', (c) => c.notNull())
    .addColumn('process_types', 'text', (c) => c.notNull())
    .addColumn('artifact_digest', 'text', (c) => c.notNull())
    .addColumn('config_sealed', 'text', (c) => c.notNull())
    .addColumn('config_keys', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addUniqueConstraint('releases_app_id_version_key', ['app_id', 'version'])
    .addForeignKeyConstraint('releases_app_fkey', ['app_id', 'organization_id'], 'apps', ['id', 'organization_id'])
    .execute();

  await db.schema
    .createTable('instances')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('app_id', 'text', (c) => c.notNull())
    .addColumn('release_id', 'text', (c) => c.notNull().references('releases.id'))
    .addColumn('release_version', 'integer', (c) => c.notNull())
    .addColumn('process_type', 'text', (c) => c.notNull())
    .addColumn('process_index', 'integer', (c) => c.notNull())
    // No foreign key: nodes come and go by heartbeat; the reconciler handles unknown nodes.
    .addColumn('node_id', 'text')
    .addColumn('desired', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('exit_code', 'integer')
    .addColumn('signal', 'text')
    .addColumn('oom_killed', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('restarts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('address', 'text')
    .addColumn('started_at', 'text')
    .addColumn('restart_generation', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('last_log', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addForeignKeyConstraint('instances_app_fkey', ['app_id', 'organization_id'], 'apps', ['id', 'organization_id'])
    .execute();
  await db.schema.createIndex('instances_app_id_idx').on('instances').column('app_id').execute();
  await db.schema.createIndex('instances_node_id_idx').on('instances').column('node_id').execute();
  await db.schema.createIndex('instances_release_id_idx').on('instances').column('release_id').execute();

  await db.schema
    .createTable('events')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id'))
    // No foreign key: events are a log and may name an app that is being deleted.
    .addColumn('app_id', 'text')
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('message', 'text', (c) => c.notNull())
    .addColumn('data', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('events_organization_id_created_at_idx').on('events').columns(['organization_id', 'created_at']).execute();
  await db.schema.createIndex('events_app_id_created_at_idx').on('events').columns(['app_id', 'created_at']).execute();

  await db.schema
    .createTable('nodes')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('isolation', 'text', (c) => c.notNull())
    .addColumn('cpus', 'double precision', (c) => c.notNull())
    .addColumn('memory_mb', 'integer', (c) => c.notNull())
    .addColumn('last_heartbeat_at', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ['nodes', 'events', 'instances', 'releases', 'builds', 'formations', 'config_vars', 'apps', 'api_tokens', 'memberships', 'organizations', 'users']) {
    await db.schema.dropTable(t).execute();
  }
}
