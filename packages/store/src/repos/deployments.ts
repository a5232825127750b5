/** Deployments (release rollouts) and per-app deploy settings (migration 0004). */
import type { Selectable } from 'kysely';
import type { DeploySettingsT, DeploymentState, DeployStrategy } from '@shellwego/core';
import type { DeploymentsTable } from '../schema.ts';
import type { DeploymentRow, DeploymentsRepo } from '../types.ts';
import type { Ctx } from '../kysely-store.ts';

const now = () => new Date().toISOString();
export const ACTIVE: DeploymentState[] = ['pending', 'in_progress', 'rolling_back'];
/** History is for people reading `deployments info`; a crash-looping deploy must not grow it without bound. */
const MAX_HISTORY = 100;

export const toDeployment = (r: Selectable<DeploymentsTable>): DeploymentRow => ({
  id: r.id, organizationId: r.organization_id, appId: r.app_id, fromReleaseId: r.from_release_id, fromVersion: r.from_version,
  toReleaseId: r.to_release_id, toVersion: r.to_version, strategy: r.strategy as DeployStrategy, settings: JSON.parse(r.settings) as DeploySettingsT,
  state: r.state as DeploymentState, phase: r.phase, reason: r.reason, step: r.step, stepStartedAt: r.step_started_at, progressAt: r.progress_at,
  history: JSON.parse(r.history) as DeploymentRow['history'], createdBy: r.created_by, createdAt: r.created_at, updatedAt: r.updated_at,
  finishedAt: r.finished_at,
});

export class Deployments implements DeploymentsRepo {
  constructor(private readonly c: Ctx) {}

  async create(row: Omit<DeploymentRow, 'createdAt' | 'updatedAt' | 'finishedAt' | 'history'> & { history?: DeploymentRow['history'] }): Promise<DeploymentRow> {
    const at = now();
    const r = await this.c.q().insertInto('deployments')
      .values({
        id: row.id, organization_id: row.organizationId, app_id: row.appId, from_release_id: row.fromReleaseId, from_version: row.fromVersion,
        to_release_id: row.toReleaseId, to_version: row.toVersion, strategy: row.strategy, settings: JSON.stringify(row.settings),
        state: row.state, phase: row.phase, reason: row.reason, step: row.step, step_started_at: row.stepStartedAt, progress_at: row.progressAt,
        history: JSON.stringify(row.history ?? []), created_by: row.createdBy, created_at: at, updated_at: at, finished_at: null,
      })
      .returningAll().executeTakeFirstOrThrow();
    return toDeployment(r);
  }

  async get(organizationId: string, appId: string, id: string): Promise<DeploymentRow | undefined> {
    const r = await this.c.q().selectFrom('deployments').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId).where('id', '=', id)
      .executeTakeFirst();
    return r && toDeployment(r);
  }

  async list(organizationId: string, appId: string, limit = 20): Promise<DeploymentRow[]> {
    const rows = await this.c.q().selectFrom('deployments').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId)
      .orderBy('created_at', 'desc').orderBy('to_version', 'desc').limit(limit)
      .execute();
    return rows.map(toDeployment);
  }

  async active(organizationId: string, appId: string): Promise<DeploymentRow | undefined> {
    const r = await this.c.q().selectFrom('deployments').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId).where('state', 'in', ACTIVE)
      .orderBy('created_at', 'desc').orderBy('to_version', 'desc')
      .executeTakeFirst();
    return r && toDeployment(r);
  }

  async listActive(): Promise<DeploymentRow[]> {
    const rows = await this.c.q().selectFrom('deployments').selectAll().where('state', 'in', ACTIVE).orderBy('created_at').execute();
    return rows.map(toDeployment);
  }

  async transition(
    id: string, from: DeploymentState,
    patch: Partial<Pick<DeploymentRow, 'state' | 'phase' | 'reason' | 'step' | 'stepStartedAt' | 'progressAt' | 'finishedAt'>>,
    note?: string,
  ): Promise<DeploymentRow | undefined> {
    return this.c.atomic(async (db) => {
      const cur = await db.selectFrom('deployments').selectAll().where('id', '=', id).where('state', '=', from).executeTakeFirst();
      if (!cur) return undefined;
      const at = now();
      const history = JSON.parse(cur.history) as DeploymentRow['history'];
      if (note) history.push({ at, message: note });
      const r = await db.updateTable('deployments')
        .set({
          updated_at: at, history: JSON.stringify(history.slice(-MAX_HISTORY)),
          ...(patch.state !== undefined ? { state: patch.state } : {}),
          ...(patch.phase !== undefined ? { phase: patch.phase } : {}),
          ...(patch.reason !== undefined ? { reason: patch.reason } : {}),
          ...(patch.step !== undefined ? { step: patch.step } : {}),
          ...(patch.stepStartedAt !== undefined ? { step_started_at: patch.stepStartedAt } : {}),
          ...(patch.progressAt !== undefined ? { progress_at: patch.progressAt } : {}),
          ...(patch.finishedAt !== undefined ? { finished_at: patch.finishedAt } : {}),
        })
        .where('id', '=', id).where('state', '=', from)
        .returningAll().executeTakeFirst();
      return r && toDeployment(r);
    });
  }

  async getSettings(organizationId: string, appId: string): Promise<DeploySettingsT | undefined> {
    const r = await this.c.q().selectFrom('deploy_settings').select('settings')
      .where('organization_id', '=', organizationId).where('app_id', '=', appId).executeTakeFirst();
    return r && (JSON.parse(r.settings) as DeploySettingsT);
  }

  async setSettings(organizationId: string, appId: string, settings: DeploySettingsT): Promise<void> {
    const at = now();
    await this.c.q().insertInto('deploy_settings')
      .values({ app_id: appId, organization_id: organizationId, settings: JSON.stringify(settings), updated_at: at })
      .onConflict((oc) => oc.column('app_id').doUpdateSet({ settings: JSON.stringify(settings), updated_at: at }).where('deploy_settings.organization_id', '=', organizationId))
      .execute();
  }
}
