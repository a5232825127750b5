/** Platform-wide secrets the control planes share (migration 0010), e.g. the routers' cluster token. */
import type { ClusterSecretsRepo } from '../types.ts';
import type { Ctx } from '../kysely-store.ts';

export class ClusterSecrets implements ClusterSecretsRepo {
  constructor(private readonly c: Ctx) {}

  async getOrCreate(name: string, make: () => string): Promise<string> {
    // Insert if absent, then read the winner: control planes starting at once agree on one value.
    await this.c.q().insertInto('cluster_secrets').values({ name, value: make(), created_at: new Date().toISOString() })
      .onConflict((oc) => oc.column('name').doNothing()).execute();
    const r = await this.c.q().selectFrom('cluster_secrets').select('value').where('name', '=', name).executeTakeFirstOrThrow();
    return r.value;
  }
}
