import type { Kysely } from 'kysely';

/**
 * Nodes that join over the network (issue 4): join tokens an operator creates (only the sha256
 * of the secret is kept, with an expiry and the uses left) and each joined node's credential
 * (the sha256 of the secret it was given at join).
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('join_tokens')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('token_hash', 'text', (c) => c.notNull().unique())
    .addColumn('uses_left', 'integer', (c) => c.notNull())
    .addColumn('expires_at', 'text', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('node_credentials')
    .addColumn('node_id', 'text', (c) => c.primaryKey())
    .addColumn('secret_hash', 'text', (c) => c.notNull())
    .addColumn('join_token_id', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('node_credentials').execute();
  await db.schema.dropTable('join_tokens').execute();
}
