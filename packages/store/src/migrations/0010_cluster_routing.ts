import type { Kysely } from 'kysely';

/**
 * Routing across nodes (issue 4): each node's router cluster endpoint (host:port, from its
 * heartbeats), and platform-wide secrets the control planes share — the cluster token routers
 * present to each other's cluster listeners, created once so every server (HA) and every restart
 * publishes the same one.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('nodes').addColumn('cluster_endpoint', 'text').execute();
  await db.schema
    .createTable('cluster_secrets')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('value', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('cluster_secrets').execute();
  await db.schema.alterTable('nodes').dropColumn('cluster_endpoint').execute();
}
