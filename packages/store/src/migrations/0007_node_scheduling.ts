import type { Kysely } from 'kysely';

/**
 * Node scheduling (issue 4): node capacity (disk), labels, taints and the operator's state
 * (cordoned/draining, kept apart from heartbeat liveness so a heartbeat never undoes it); each
 * instance's last placement decision (why it runs where it does, or why it is pending); and
 * per-app placement constraints (required node labels, tolerated taints).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('nodes').addColumn('disk_mb', 'integer').execute();
  /** JSON object: labels the agent reports from its config. */
  await db.schema.alterTable('nodes').addColumn('agent_labels', 'text', (c) => c.notNull().defaultTo('{}')).execute();
  /** JSON object: labels set by operators (win over the agent's). */
  await db.schema.alterTable('nodes').addColumn('labels', 'text', (c) => c.notNull().defaultTo('{}')).execute();
  /** JSON array of { key, value, effect }. */
  await db.schema.alterTable('nodes').addColumn('taints', 'text', (c) => c.notNull().defaultTo('[]')).execute();
  /** null, 'cordoned' or 'draining'. */
  await db.schema.alterTable('nodes').addColumn('operator_state', 'text').execute();
  await db.schema.alterTable('instances').addColumn('placement', 'text').execute();
  await db.schema
    .createTable('app_placements')
    .addColumn('app_id', 'text', (c) => c.primaryKey().references('apps.id'))
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('required_labels', 'text', (c) => c.notNull())
    .addColumn('tolerations', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('app_placements').execute();
  await db.schema.alterTable('instances').dropColumn('placement').execute();
  for (const c of ['operator_state', 'taints', 'labels', 'agent_labels', 'disk_mb']) await db.schema.alterTable('nodes').dropColumn(c).execute();
}
