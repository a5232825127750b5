/** Inbound webhooks and their delivery records (migration 0005). */
import type { Selectable, Updateable } from 'kysely';
import type { WebhooksTable, WebhookDeliveriesTable } from '../schema.ts';
import type { WebhookDeliveryRow, WebhookDeliveryStatus, WebhookProvider, WebhookRow, WebhooksRepo } from '../types.ts';
import type { Ctx } from '../kysely-store.ts';

const now = () => new Date().toISOString();

const toWebhook = (r: Selectable<WebhooksTable>): WebhookRow => ({
  id: r.id, organizationId: r.organization_id, appId: r.app_id, provider: r.provider as WebhookProvider, repositoryUrl: r.repository_url,
  repositorySealed: r.repository_sealed, branch: r.branch, secretSealed: r.secret_sealed, createdBy: r.created_by, createdAt: r.created_at,
});

const toDelivery = (r: Selectable<WebhookDeliveriesTable>): WebhookDeliveryRow => ({
  hookId: r.hook_id, deliveryId: r.delivery_id, organizationId: r.organization_id, appId: r.app_id, event: r.event,
  status: r.status as WebhookDeliveryStatus, message: r.message, buildId: r.build_id, createdAt: r.created_at, updatedAt: r.updated_at,
});

export class Webhooks implements WebhooksRepo {
  constructor(private readonly c: Ctx) {}

  async create(row: Omit<WebhookRow, 'createdAt'>): Promise<WebhookRow> {
    const r = await this.c.q().insertInto('webhooks')
      .values({
        id: row.id, organization_id: row.organizationId, app_id: row.appId, provider: row.provider, repository_url: row.repositoryUrl,
        repository_sealed: row.repositorySealed, branch: row.branch, secret_sealed: row.secretSealed, created_by: row.createdBy, created_at: now(),
      })
      .returningAll().executeTakeFirstOrThrow();
    return toWebhook(r);
  }

  async get(organizationId: string, appId: string, id: string): Promise<WebhookRow | undefined> {
    const r = await this.c.q().selectFrom('webhooks').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId).where('id', '=', id)
      .executeTakeFirst();
    return r && toWebhook(r);
  }

  async byId(id: string): Promise<WebhookRow | undefined> {
    const r = await this.c.q().selectFrom('webhooks').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toWebhook(r);
  }

  async list(organizationId: string, appId: string): Promise<WebhookRow[]> {
    const rows = await this.c.q().selectFrom('webhooks').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId)
      .orderBy('created_at').orderBy('id')
      .execute();
    return rows.map(toWebhook);
  }

  async delete(organizationId: string, appId: string, id: string): Promise<boolean> {
    return this.c.atomic(async (db) => {
      const hook = await db.selectFrom('webhooks').select('id')
        .where('organization_id', '=', organizationId).where('app_id', '=', appId).where('id', '=', id)
        .executeTakeFirst();
      if (!hook) return false;
      await db.deleteFrom('webhook_deliveries').where('hook_id', '=', id).where('organization_id', '=', organizationId).execute();
      await db.deleteFrom('webhooks').where('id', '=', id).where('organization_id', '=', organizationId).execute();
      return true;
    });
  }

  async recordDelivery(row: Omit<WebhookDeliveryRow, 'createdAt' | 'updatedAt' | 'buildId'>): Promise<WebhookDeliveryRow | undefined> {
    const at = now();
    // Insert-or-nothing on the primary key: of two identical deliveries exactly one gets a row back.
    const r = await this.c.q().insertInto('webhook_deliveries')
      .values({
        hook_id: row.hookId, delivery_id: row.deliveryId, organization_id: row.organizationId, app_id: row.appId, event: row.event,
        status: row.status, message: row.message, build_id: null, created_at: at, updated_at: at,
      })
      .onConflict((oc) => oc.columns(['hook_id', 'delivery_id']).doNothing())
      .returningAll().executeTakeFirst();
    return r && toDelivery(r);
  }

  async getDelivery(hookId: string, deliveryId: string): Promise<WebhookDeliveryRow | undefined> {
    const r = await this.c.q().selectFrom('webhook_deliveries').selectAll()
      .where('hook_id', '=', hookId).where('delivery_id', '=', deliveryId)
      .executeTakeFirst();
    return r && toDelivery(r);
  }

  async updateDelivery(hookId: string, deliveryId: string, patch: Partial<Pick<WebhookDeliveryRow, 'status' | 'message' | 'buildId'>>): Promise<void> {
    const set: Updateable<WebhookDeliveriesTable> = {};
    if (patch.status !== undefined) set.status = patch.status;
    if (patch.message !== undefined) set.message = patch.message;
    if (patch.buildId !== undefined) set.build_id = patch.buildId;
    await this.c.q().updateTable('webhook_deliveries').set({ ...set, updated_at: now() })
      .where('hook_id', '=', hookId).where('delivery_id', '=', deliveryId)
      .execute();
  }

  async listDeliveries(organizationId: string, hookId: string, limit = 20): Promise<WebhookDeliveryRow[]> {
    const rows = await this.c.q().selectFrom('webhook_deliveries').selectAll()
      .where('organization_id', '=', organizationId).where('hook_id', '=', hookId)
      .orderBy('created_at', 'desc').orderBy('delivery_id', 'desc')
      .limit(limit)
      .execute();
    return rows.map(toDelivery);
  }
}
