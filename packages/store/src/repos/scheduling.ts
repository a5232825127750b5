/**
 * What the scheduler needs beyond single rows (issue 4): what each node holds in one aggregate
 * query, placement as a compare-and-set, and the bulk reads that let a periodic pass over
 * thousands of apps skip the settled ones without a query per app.
 */
import { sql } from 'kysely';
import type { RawBuilder } from 'kysely';
import { DEFAULT_PLAN, PLANS } from '@shellwego/core';
import type { DeploySettingsT } from '@shellwego/core';
import type { FormationRow, InstanceRow, NodeAllocation, PassPage, PlacementClaim, PlacementClaimResult, SchedulingRepo } from '../types.ts';
import type { Ctx, Dialect } from '../kysely-store.ts';
import { toApp, toFormation } from '../kysely-store.ts';
import { ACTIVE, toDeployment } from './deployments.ts';

/**
 * What an instance holds on its node: its app's plan (as `nodeLoads` always counted it), as SQL.
 * The plans are the platform's own constants, so they are written as literals.
 */
function held(field: 'memoryMb' | 'cpus'): RawBuilder<number> {
  const cases = Object.values(PLANS).map((p) => sql`when ${sql.lit(p.name)} then ${sql.lit(p[field])}`);
  return sql<number>`case a.plan ${sql.join(cases, sql` `)} else ${sql.lit(PLANS[DEFAULT_PLAN][field])} end`;
}

interface AllocationRow { node_id: string; memory_mb: number | string | null; cpus: number | string | null; instances: number | string }
const toAllocation = (r: AllocationRow): NodeAllocation => ({
  // PostgreSQL sums to numeric/bigint, which the driver hands over as strings.
  nodeId: r.node_id, memoryMb: Number(r.memory_mb ?? 0), cpus: Number(r.cpus ?? 0), instances: Number(r.instances),
});

const fmt = (n: number) => String(Math.round(n * 100) / 100);

export class Scheduling implements SchedulingRepo {
  constructor(private readonly c: Ctx, private readonly dialect: Dialect) {}

  async allocations(): Promise<Map<string, NodeAllocation>> {
    const r = await sql<AllocationRow>`
      select i.node_id, sum(${held('memoryMb')}) as memory_mb, sum(${held('cpus')}) as cpus, count(*) as instances
        from instances i join apps a on a.id = i.app_id
       where i.desired = 'running' and i.node_id is not null
       group by i.node_id`.execute(this.c.q());
    return new Map(r.rows.map((row) => [row.node_id, toAllocation(row)]));
  }

  /**
   * The node row is locked first (PostgreSQL `FOR UPDATE`; SQLite serialises writers anyway and
   * fails a transaction whose snapshot another writer overtook), so two control planes placing
   * on one node queue here and the second sees the first's instance in the sum.
   */
  async claim(req: PlacementClaim): Promise<PlacementClaimResult> {
    return this.c.atomic(async (db) => {
      const lock = this.dialect === 'postgres' ? sql` for update` : sql``;
      const node = (await sql<{ name: string; state: string; operator_state: string | null; cpus: number | string; memory_mb: number }>`
        select name, state, operator_state, cpus, memory_mb from nodes where id = ${req.nodeId}${lock}`.execute(db)).rows[0];
      if (!node) return { placed: false, reason: `node ${req.nodeId} is gone` };
      const state = node.state === 'down' ? 'down' : node.operator_state ?? 'ready';
      if (state !== 'ready') return { placed: false, reason: `${node.name} is ${state}` };
      const used = (await sql<AllocationRow>`
        select i.node_id, sum(${held('memoryMb')}) as memory_mb, sum(${held('cpus')}) as cpus, count(*) as instances
          from instances i join apps a on a.id = i.app_id
         where i.desired = 'running' and i.node_id = ${req.nodeId}
         group by i.node_id`.execute(db)).rows[0];
      const allocation = used ? toAllocation(used) : { nodeId: req.nodeId, memoryMb: 0, cpus: 0, instances: 0 };
      const freeMb = node.memory_mb - allocation.memoryMb;
      const cpuCap = Number(node.cpus) * req.cpuOvercommit;
      const reasons: string[] = [];
      if (freeMb < req.memoryMb) reasons.push(`needs ${req.memoryMb} MB, has ${Math.max(0, freeMb)} MB free`);
      if (allocation.cpus + req.cpus > cpuCap + 1e-9) reasons.push(`needs ${fmt(req.cpus)} CPU, has ${fmt(Math.max(0, cpuCap - allocation.cpus))} free`);
      if (reasons.length > 0) return { placed: false, reason: `${node.name} ${reasons.join(', ')} (taken meanwhile)`, allocation };
      // Volume locality: the instance's volumes live on this node or on none yet. Their rows are
      // locked (PostgreSQL) so two placements pinning one volume to two nodes queue, and the
      // second sees the first's pin. Nothing is written before every check passed.
      // (No join here: a row PostgreSQL re-reads after waiting for its lock comes without fresh joined rows.)
      const volumes = req.volumeIds?.length
        ? (await sql<{ id: string; name: string; node_id: string | null }>`
            select id, name, node_id from volumes where id in (${sql.join(req.volumeIds)}) order by id${lock}`.execute(db)).rows
        : [];
      const elsewhere = volumes.find((v) => v.node_id !== null && v.node_id !== req.nodeId);
      if (elsewhere) {
        const home = await db.selectFrom('nodes').select('name').where('id', '=', elsewhere.node_id!).executeTakeFirst();
        return { placed: false, reason: `volume "${elsewhere.name}" lives on node ${home?.name ?? elsewhere.node_id} (pinned meanwhile)`, pinned: { [elsewhere.id]: elsewhere.node_id! } };
      }
      // Only an instance still waiting for a node and still wanted: a claim never moves one.
      const r = await db.updateTable('instances')
        .set({ node_id: req.nodeId, placement: req.placement, last_log: '[]', updated_at: new Date().toISOString() })
        .where('id', '=', req.instanceId).where('node_id', 'is', null).where('desired', '=', 'running')
        .executeTakeFirst();
      if (Number(r.numUpdatedRows) === 0) return { placed: false, reason: 'the instance is no longer waiting for a node' };
      const unpinned = volumes.filter((v) => v.node_id === null).map((v) => v.id);
      if (unpinned.length > 0) {
        const p = await db.updateTable('volumes').set({ node_id: req.nodeId }).where('id', 'in', unpinned).where('node_id', 'is', null).executeTakeFirst();
        // Checked under lock above, so this cannot happen; if it did, the throw rolls the placement back with it.
        if (Number(p.numUpdatedRows) !== unpinned.length) throw new Error(`volumes ${unpinned.join(', ')} were pinned by another placement meanwhile`);
      }
      return { placed: true, allocation: { nodeId: req.nodeId, memoryMb: allocation.memoryMb + req.memoryMb, cpus: allocation.cpus + req.cpus, instances: allocation.instances + 1 } };
    });
  }

  async markDown(nodeId: string, lastHeartbeatAt: string): Promise<boolean> {
    const r = await this.c.q().updateTable('nodes').set({ state: 'down' })
      .where('id', '=', nodeId).where('state', '=', 'ready').where('last_heartbeat_at', '=', lastHeartbeatAt)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async passPage(after: string | null, limit: number): Promise<PassPage> {
    const db = this.c.q();
    let q = db.selectFrom('apps').selectAll().orderBy('id').limit(limit);
    if (after !== null) q = q.where('id', '>', after);
    const apps = (await q.execute()).map(toApp);
    if (apps.length === 0) return { apps, formations: new Map(), settings: new Map(), withStoppedRows: new Set(), instances: [], deployments: [] };
    const ids = apps.map((a) => a.id);
    const [formations, settings, stopped, instances, deployments] = await Promise.all([
      db.selectFrom('formations').selectAll().where('app_id', 'in', ids).orderBy('app_id').orderBy('type').execute(),
      db.selectFrom('deploy_settings').select(['app_id', 'settings']).where('app_id', 'in', ids).execute(),
      db.selectFrom('instances').select('app_id').distinct().where('app_id', 'in', ids).where('state', '=', 'stopped').where('desired', '=', 'stopped').execute(),
      db.selectFrom('instances')
        .select(['id', 'organization_id', 'app_id', 'release_id', 'release_version', 'process_type', 'process_index', 'node_id', 'desired', 'state', 'exit_code', 'signal',
          'oom_killed', 'restarts', 'address', 'started_at', 'restart_generation', 'created_at', 'updated_at', 'stop_after',
          // The scheduler's explanations are long; only the "leaving <node>" and "kept on <node>" (a volume holds it) notes matter to a pass.
          sql<string | null>`case when placement like 'leaving %' or placement like 'kept on %' then placement else null end`.as('placement')])
        .where('app_id', 'in', ids)
        .where((eb) => eb.or([eb('state', '!=', 'stopped'), eb('desired', '!=', 'stopped')]))
        .orderBy('created_at').orderBy('id')
        .execute(),
      db.selectFrom('deployments').selectAll().where('app_id', 'in', ids).where('state', 'in', ACTIVE).orderBy('created_at').execute(),
    ]);
    const byApp = new Map<string, FormationRow[]>();
    for (const f of formations) {
      const list = byApp.get(f.app_id);
      if (list) list.push(toFormation(f));
      else byApp.set(f.app_id, [toFormation(f)]);
    }
    return {
      apps,
      formations: byApp,
      settings: new Map(settings.map((s) => [s.app_id, JSON.parse(s.settings) as DeploySettingsT])),
      withStoppedRows: new Set(stopped.map((s) => s.app_id)),
      instances: instances.map((r) => ({
        id: r.id, appId: r.app_id, organizationId: r.organization_id, releaseId: r.release_id, releaseVersion: r.release_version,
        processType: r.process_type, index: r.process_index, nodeId: r.node_id, desired: r.desired as InstanceRow['desired'],
        state: r.state as InstanceRow['state'], exitCode: r.exit_code, signal: r.signal, oomKilled: Boolean(r.oom_killed), restarts: r.restarts,
        address: r.address, startedAt: r.started_at, restartGeneration: r.restart_generation, lastLog: [],
        createdAt: r.created_at, updatedAt: r.updated_at, stopAfter: r.stop_after, placement: r.placement ?? null,
      })),
      deployments: deployments.map(toDeployment),
    };
  }

  async processTypes(releaseIds: string[]): Promise<Map<string, Record<string, string>>> {
    const out = new Map<string, Record<string, string>>();
    // Chunks keep the statement under SQLite's and PostgreSQL's parameter limits.
    for (let i = 0; i < releaseIds.length; i += 500) {
      const rows = await this.c.q().selectFrom('releases').select(['id', 'process_types']).where('id', 'in', releaseIds.slice(i, i + 500)).execute();
      for (const r of rows) out.set(r.id, JSON.parse(r.process_types) as Record<string, string>);
    }
    return out;
  }
}
