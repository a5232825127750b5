/** Join tokens and joined nodes' credentials (migration 0008). */
import type { Selectable } from 'kysely';
import type { JoinTokensTable, NodeCredentialsTable } from '../schema.ts';
import type { JoinTokenRefusal, JoinTokenRow, NodeCredentialRow, NodeJoinRepo } from '../types.ts';
import type { Ctx } from '../kysely-store.ts';

const now = () => new Date().toISOString();

const toToken = (r: Selectable<JoinTokensTable>): JoinTokenRow => ({
  id: r.id, tokenHash: r.token_hash, usesLeft: Number(r.uses_left), expiresAt: r.expires_at, createdBy: r.created_by, createdAt: r.created_at,
});

const toCredential = (r: Selectable<NodeCredentialsTable>): NodeCredentialRow => ({
  nodeId: r.node_id, secretHash: r.secret_hash, joinTokenId: r.join_token_id, createdAt: r.created_at,
});

export class NodeJoin implements NodeJoinRepo {
  constructor(private readonly c: Ctx) {}

  async createToken(row: Omit<JoinTokenRow, 'createdAt'>): Promise<JoinTokenRow> {
    const r = await this.c.q().insertInto('join_tokens')
      .values({ id: row.id, token_hash: row.tokenHash, uses_left: row.usesLeft, expires_at: row.expiresAt, created_by: row.createdBy, created_at: now() })
      .returningAll().executeTakeFirstOrThrow();
    return toToken(r);
  }

  async consumeToken(tokenHash: string, at: string): Promise<{ ok: true; token: JoinTokenRow } | { ok: false; reason: JoinTokenRefusal }> {
    // One statement decides: the database serialises concurrent updates of the row.
    const r = await this.c.q().updateTable('join_tokens')
      .set((eb) => ({ uses_left: eb('uses_left', '-', 1) }))
      .where('token_hash', '=', tokenHash).where('uses_left', '>', 0).where('expires_at', '>', at)
      .returningAll().executeTakeFirst();
    if (r) return { ok: true, token: toToken(r) };
    const t = await this.c.q().selectFrom('join_tokens').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
    if (!t) return { ok: false, reason: 'unknown' };
    return { ok: false, reason: Number(t.uses_left) <= 0 ? 'used' : 'expired' };
  }

  async setCredential(row: Omit<NodeCredentialRow, 'createdAt'>): Promise<void> {
    await this.c.q().insertInto('node_credentials')
      .values({ node_id: row.nodeId, secret_hash: row.secretHash, join_token_id: row.joinTokenId, created_at: now() })
      .execute();
  }

  async credential(nodeId: string): Promise<NodeCredentialRow | undefined> {
    const r = await this.c.q().selectFrom('node_credentials').selectAll().where('node_id', '=', nodeId).executeTakeFirst();
    return r && toCredential(r);
  }

  async deleteCredential(nodeId: string): Promise<boolean> {
    const r = await this.c.q().deleteFrom('node_credentials').where('node_id', '=', nodeId).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }
}
