import { DEFAULT_DEPLOY_SETTINGS, DeploySettings, conflict, notFound, unprocessable } from '@shellwego/core';
import type { Handlers } from '../http.ts';
import { toDeployment } from '../controllers/deployments.ts';
import { findApp } from './apps.ts';
import { toFormation } from './convert.ts';

export const deploymentHandlers = {
  async setHealthcheck({ auth, params, body, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const formation = await cp.store.formation.list(app.organizationId, app.id);
    const row = formation.find((f) => f.type === params.type && f.command !== null);
    if (!row) {
      const known = formation.filter((f) => f.command !== null).map((f) => f.type);
      throw unprocessable('unknown_process_type', known.length ? `no process type ${params.type} in the current release; it has: ${known.join(', ')}` : 'the app has no release yet: deploy it first', { known });
    }
    const updated = await cp.store.formation.upsert(app.organizationId, app.id, params.type, { healthcheck: body.healthcheck });
    const what = body.healthcheck ? `HTTP GET ${body.healthcheck.path} every ${body.healthcheck.intervalSeconds}s` : 'TCP connect on $PORT';
    await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'healthcheck.changed', message: `${params.type} readiness: ${what} (by ${auth.user.email})`, data: { type: params.type, healthcheck: body.healthcheck } });
    // Running instances pick the check up with their next assignment; new ones start with it.
    await cp.deployer.publishAssignments();
    return toFormation(updated);
  },

  async getDeploySettings({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    return (await cp.store.deployments.getSettings(app.organizationId, app.id)) ?? DEFAULT_DEPLOY_SETTINGS;
  },

  async updateDeploySettings({ auth, params, body, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const current = (await cp.store.deployments.getSettings(app.organizationId, app.id)) ?? DEFAULT_DEPLOY_SETTINGS;
    const merged = DeploySettings.safeParse({ ...current, ...body });
    if (!merged.success) throw unprocessable('invalid_deploy_settings', merged.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
    await cp.store.deployments.setSettings(app.organizationId, app.id, merged.data);
    const summary = Object.entries(body).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ');
    await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'deploy_settings.changed', message: `Deploy settings: ${summary} (by ${auth.user.email})`, data: body });
    await cp.deployer.publishAssignments(); // stop timeouts travel with assignments
    return merged.data;
  },

  async listDeployments({ auth, params, query, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    return (await cp.store.deployments.list(app.organizationId, app.id, query.limit ?? 20)).map(toDeployment);
  },

  async getDeployment({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const d = await cp.store.deployments.get(app.organizationId, app.id, params.deployment);
    if (!d) throw notFound('deployment', params.deployment);
    return toDeployment(d);
  },

  async abortDeployment({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const d = await cp.store.deployments.get(app.organizationId, app.id, params.deployment);
    if (!d) throw notFound('deployment', params.deployment);
    if (d.state !== 'in_progress' && d.state !== 'pending') throw conflict('deployment_not_running', `deployment ${d.id} is ${d.state}; only a pending or in-progress deployment can be aborted`);
    if (d.fromReleaseId === null) throw conflict('nothing_to_roll_back_to', `v${d.toVersion} is the app's first release: there is nothing to roll back to`);
    const moved = await cp.deployer.deployments.fail(app, d, 'aborted', { by: auth.user.email });
    if (!moved) throw conflict('deployment_moved_on', `deployment ${d.id} changed state meanwhile; look again`);
    await cp.deployer.reconcileApp(app.organizationId, app.id);
    return toDeployment((await cp.store.deployments.get(app.organizationId, app.id, d.id))!);
  },
} satisfies Partial<Handlers>;
