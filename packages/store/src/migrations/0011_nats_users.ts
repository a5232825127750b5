import type { Kysely } from 'kysely';

/**
 * NATS users issued to nodes at join (issue 4): the user's public key, so removing the node can
 * revoke it. Revoked rows are kept: they are the account JWT's revocation list, pushed to
 * nats-server again at every start (the store is its truth, not nats-server's resolver directory).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('nats_users')
    .addColumn('user_key', 'text', (c) => c.primaryKey())
    .addColumn('node_id', 'text', (c) => c.notNull())
    .addColumn('issued_at', 'text', (c) => c.notNull())
    .addColumn('revoked_at', 'text')
    .execute();
  await db.schema.createIndex('nats_users_node_id').on('nats_users').column('node_id').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('nats_users').execute();
}
