/** What an OCI image build pulls (migration 0006); credentials arrive and leave sealed. */
import type { Selectable } from 'kysely';
import type { ImageBuildsTable } from '../schema.ts';
import type { ImageBuildRow, ImageBuildsRepo } from '../types.ts';
import type { Ctx } from '../kysely-store.ts';

const toRow = (r: Selectable<ImageBuildsTable>): ImageBuildRow => ({
  buildId: r.build_id, organizationId: r.organization_id, appId: r.app_id, reference: r.reference,
  credentialsSealed: r.credentials_sealed, createdAt: r.created_at,
});

export class ImageBuilds implements ImageBuildsRepo {
  constructor(private readonly c: Ctx) {}

  async create(row: Omit<ImageBuildRow, 'createdAt'>): Promise<ImageBuildRow> {
    const r = await this.c.q().insertInto('image_builds')
      .values({
        build_id: row.buildId, organization_id: row.organizationId, app_id: row.appId, reference: row.reference,
        credentials_sealed: row.credentialsSealed, created_at: new Date().toISOString(),
      })
      .returningAll().executeTakeFirstOrThrow();
    return toRow(r);
  }

  async get(organizationId: string, buildId: string): Promise<ImageBuildRow | undefined> {
    const r = await this.c.q().selectFrom('image_builds').selectAll()
      .where('organization_id', '=', organizationId).where('build_id', '=', buildId)
      .executeTakeFirst();
    return r && toRow(r);
  }
}
