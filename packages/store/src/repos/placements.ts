/** Per-app placement constraints: required node labels and tolerated taints (migration 0007). */
import type { AppPlacement } from '@shellwego/core';
import type { PlacementsRepo } from '../types.ts';
import type { Ctx } from '../kysely-store.ts';

export class Placements implements PlacementsRepo {
  constructor(private readonly c: Ctx) {}

  async get(organizationId: string, appId: string): Promise<AppPlacement | undefined> {
    const r = await this.c.q().selectFrom('app_placements').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId).executeTakeFirst();
    return r && { requiredLabels: JSON.parse(r.required_labels) as AppPlacement['requiredLabels'], tolerations: JSON.parse(r.tolerations) as AppPlacement['tolerations'] };
  }

  async set(organizationId: string, appId: string, placement: AppPlacement): Promise<void> {
    const values = { required_labels: JSON.stringify(placement.requiredLabels), tolerations: JSON.stringify(placement.tolerations), updated_at: new Date().toISOString() };
    await this.c.q().insertInto('app_placements')
      .values({ app_id: appId, organization_id: organizationId, ...values })
      .onConflict((oc) => oc.column('app_id').doUpdateSet(values))
      .execute();
  }
}
