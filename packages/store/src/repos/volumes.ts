/** Persistent volumes of apps (migration 0012). Pinning to a node happens in `scheduling.claim()`. */
import type { Selectable } from 'kysely';
import type { VolumesTable } from '../schema.ts';
import type { VolumeRow, VolumesRepo } from '../types.ts';
import type { Ctx } from '../kysely-store.ts';

export const toVolume = (r: Selectable<VolumesTable>): VolumeRow => ({
  id: r.id, organizationId: r.organization_id, appId: r.app_id, name: r.name, processType: r.process_type, mountPath: r.mount_path,
  sizeMb: r.size_mb, nodeId: r.node_id, createdAt: r.created_at,
});

export class Volumes implements VolumesRepo {
  constructor(private readonly c: Ctx) {}

  async create(row: Omit<VolumeRow, 'createdAt' | 'nodeId'>): Promise<VolumeRow> {
    const r = await this.c.q().insertInto('volumes').values({
      id: row.id, organization_id: row.organizationId, app_id: row.appId, name: row.name, process_type: row.processType,
      mount_path: row.mountPath, size_mb: row.sizeMb, node_id: null, created_at: new Date().toISOString(),
    }).returningAll().executeTakeFirstOrThrow();
    return toVolume(r);
  }

  async get(organizationId: string, appId: string, nameOrId: string): Promise<VolumeRow | undefined> {
    const r = await this.c.q().selectFrom('volumes').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId)
      .where((eb) => eb.or([eb('name', '=', nameOrId), eb('id', '=', nameOrId)]))
      .executeTakeFirst();
    return r && toVolume(r);
  }

  async list(organizationId: string, appId: string): Promise<VolumeRow[]> {
    const rows = await this.c.q().selectFrom('volumes').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId).orderBy('name').execute();
    return rows.map(toVolume);
  }

  async byNode(nodeId: string): Promise<VolumeRow[]> {
    return (await this.c.q().selectFrom('volumes').selectAll().where('node_id', '=', nodeId).orderBy('id').execute()).map(toVolume);
  }

  async listPinned(): Promise<VolumeRow[]> {
    return (await this.c.q().selectFrom('volumes').selectAll().where('node_id', 'is not', null).orderBy('id').execute()).map(toVolume);
  }

  async delete(organizationId: string, appId: string, id: string): Promise<boolean> {
    const r = await this.c.q().deleteFrom('volumes').where('organization_id', '=', organizationId).where('app_id', '=', appId).where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }
}
