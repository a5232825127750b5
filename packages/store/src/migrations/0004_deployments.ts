import type { Kysely } from 'kysely';

/**
 * Deployments as a persisted state machine (issue 3): one row per release rollout, with the
 * strategy and limits it started with, so a control plane that restarts mid-deploy resumes it
 * from the database. Also: per-app deploy settings, a readiness check per process type, and
 * the drain deadline of an instance leaving the router (`stop_after`).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('deployments')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id'))
    .addColumn('app_id', 'text', (c) => c.notNull().references('apps.id'))
    .addColumn('from_release_id', 'text')
    .addColumn('from_version', 'integer')
    .addColumn('to_release_id', 'text', (c) => c.notNull())
    .addColumn('to_version', 'integer', (c) => c.notNull())
    .addColumn('strategy', 'text', (c) => c.notNull())
    .addColumn('settings', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('phase', 'text', (c) => c.notNull())
    .addColumn('reason', 'text')
    .addColumn('step', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('step_started_at', 'text')
    .addColumn('progress_at', 'text', (c) => c.notNull())
    .addColumn('history', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addColumn('finished_at', 'text')
    .execute();
  await db.schema.createIndex('deployments_app_idx').on('deployments').columns(['app_id', 'created_at']).execute();
  await db.schema.createIndex('deployments_state_idx').on('deployments').column('state').execute();

  await db.schema
    .createTable('deploy_settings')
    .addColumn('app_id', 'text', (c) => c.primaryKey().references('apps.id'))
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id'))
    .addColumn('settings', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();

  await db.schema.alterTable('formations').addColumn('healthcheck', 'text').execute();
  await db.schema.alterTable('instances').addColumn('stop_after', 'text').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('instances').dropColumn('stop_after').execute();
  await db.schema.alterTable('formations').dropColumn('healthcheck').execute();
  await db.schema.dropTable('deploy_settings').execute();
  await db.schema.dropTable('deployments').execute();
}
