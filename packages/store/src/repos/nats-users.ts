/** NATS users issued to nodes, and the revoked ones (migration 0011). */
import type { Selectable } from 'kysely';
import type { NatsUsersTable } from '../schema.ts';
import type { NatsUserRow, NatsUsersRepo } from '../types.ts';
import type { Ctx } from '../kysely-store.ts';

const toRow = (r: Selectable<NatsUsersTable>): NatsUserRow => ({ userKey: r.user_key, nodeId: r.node_id, issuedAt: r.issued_at, revokedAt: r.revoked_at });

export class NatsUsers implements NatsUsersRepo {
  constructor(private readonly c: Ctx) {}

  async add(row: { userKey: string; nodeId: string }): Promise<void> {
    await this.c.q().insertInto('nats_users').values({ user_key: row.userKey, node_id: row.nodeId, issued_at: new Date().toISOString(), revoked_at: null }).execute();
  }

  async byNode(nodeId: string): Promise<NatsUserRow[]> {
    return (await this.c.q().selectFrom('nats_users').selectAll().where('node_id', '=', nodeId).orderBy('issued_at').execute()).map(toRow);
  }

  async revokeNode(nodeId: string, at: string): Promise<number> {
    const r = await this.c.q().updateTable('nats_users').set({ revoked_at: at }).where('node_id', '=', nodeId).where('revoked_at', 'is', null).executeTakeFirst();
    return Number(r.numUpdatedRows);
  }

  async revoked(): Promise<NatsUserRow[]> {
    return (await this.c.q().selectFrom('nats_users').selectAll().where('revoked_at', 'is not', null).orderBy('revoked_at').execute()).map(toRow);
  }
}
