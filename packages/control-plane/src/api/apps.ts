import type { Readable } from 'node:stream';
import { DEFAULT_PLAN, PLANS, badRequest, conflict, isReservedEnvKey, newId, notFound, unprocessable } from '@shellwego/core';
import { CONSTRAINTS, isConflict } from '@shellwego/store';
import type { AppRow } from '@shellwego/store';
import type { ControlPlaneContext } from '../context.ts';
import type { Handlers } from '../http.ts';
import { createRelease, readConfig, toRelease } from '../releases.ts';
import { startSourceBuild } from '../source-builds.ts';
import { replaceRequested } from '../controllers/plan.ts';
import { toApp, toBuild, toFormation, toInstance } from './convert.ts';
import { setNextPage } from './paging.ts';

export async function findApp(cp: ControlPlaneContext, organizationId: string, nameOrId: string): Promise<AppRow> {
  const app = await cp.store.apps.get(organizationId, nameOrId);
  if (!app) throw notFound('app', nameOrId);
  return app;
}

async function appView(cp: ControlPlaneContext, app: AppRow) {
  const current = app.currentReleaseId ? await cp.store.releases.byId(app.organizationId, app.currentReleaseId) : null;
  return toApp(app, cp.settings, current);
}

function checkPlan(plan: string): void {
  if (!PLANS[plan]) throw badRequest('unknown_plan', `unknown plan '${plan}'; plans: ${Object.keys(PLANS).join(', ')}`);
}

export const appHandlers = {
  async listApps({ auth, query, req, reply, cp }) {
    // One more than asked tells whether a next page exists without counting the table.
    const apps = await cp.store.apps.list(auth.organization.id, { after: query.after, limit: query.limit + 1 });
    if (apps.length > query.limit) {
      apps.length = query.limit;
      setNextPage(req, reply, { ...query, after: apps[apps.length - 1]!.name });
    }
    // One bulk read of the current releases' versions, not one query per app.
    const ids = apps.flatMap((a) => (a.currentReleaseId ? [a.currentReleaseId] : []));
    const versions = await cp.store.releases.versionsByIds(auth.organization.id, ids);
    return apps.map((a) => {
      const version = a.currentReleaseId ? versions.get(a.currentReleaseId) : undefined;
      return { ...toApp(a, cp.settings, null), currentRelease: version ?? null };
    });
  },

  async createApp({ auth, body, cp }) {
    const plan = body.plan ?? DEFAULT_PLAN;
    checkPlan(plan);
    if (await cp.store.apps.nameTaken(body.name)) throw conflict('name_taken', `the name '${body.name}' is taken; app names are unique on this platform`);
    const app = await cp.store.apps.create({ id: newId('app'), organizationId: auth.organization.id, name: body.name, plan }).catch((err) => {
      // Two creates of one name at once: the store's unique constraint decides; same answer as above.
      throw isConflict(err, CONSTRAINTS.appName) ? conflict('name_taken', `the name '${body.name}' is taken; app names are unique on this platform`) : err;
    });
    await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'app.created', message: `App ${app.name} created by ${auth.user.email}`, data: { plan } });
    return appView(cp, app);
  },

  async getApp({ auth, params, cp }) {
    return appView(cp, await findApp(cp, auth.organization.id, params.app));
  },

  async updateApp({ auth, params, body, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    checkPlan(body.plan);
    const updated = await cp.store.apps.update(app.organizationId, app.id, { plan: body.plan });
    await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'app.updated', message: `Plan changed to ${body.plan}`, data: { plan: body.plan } });
    if (app.plan !== body.plan) {
      // New limits apply to new processes: replace the running ones, one by one without downtime.
      for (const i of await cp.store.instances.listByApp(app.organizationId, app.id)) {
        if (i.desired === 'running' && i.stopAfter === null) await cp.store.instances.update(i.id, { restartGeneration: replaceRequested(i.restartGeneration) });
      }
      await cp.deployer.reconcileApp(app.organizationId, app.id);
    }
    return appView(cp, updated!);
  },

  async deleteApp({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    // Volume data is only ever removed by destroying the volume (ADR 0020), never as a side effect.
    const volumes = await cp.store.volumes.list(app.organizationId, app.id);
    if (volumes.length > 0) {
      throw conflict('app_has_volumes', `${app.name} has ${volumes.length} volume(s) (${volumes.map((v) => v.name).join(', ')}): destroy them first (shellwego volumes destroy NAME --app ${app.name})`,
        { volumes: volumes.map((v) => v.name) });
    }
    await cp.store.apps.delete(app.organizationId, app.id);
    await cp.events.record({ organizationId: app.organizationId, appId: null, type: 'app.deleted', message: `App ${app.name} deleted by ${auth.user.email}`, data: { appId: app.id, name: app.name } });
    // The app's instances are gone from the store, so they vanish from assignments and routes.
    await cp.deployer.publishRoutes(false);
    await cp.deployer.publishAssignments();
    await cp.logs.forget(app.id);
    return { deleted: true };
  },

  async getConfig({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    return readConfig(cp.store, cp.secrets, app);
  },

  async updateConfig({ auth, params, body, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const reserved = Object.keys(body.vars).filter(isReservedEnvKey);
    if (reserved.length) throw badRequest('reserved_config_key', `${reserved.join(', ')} ${reserved.length > 1 ? 'are' : 'is'} set by the platform and cannot be configured`, { keys: reserved });
    const changes: Record<string, string | null> = {};
    for (const [k, v] of Object.entries(body.vars)) changes[k] = v === null ? null : await cp.secrets.seal(app, v);
    await cp.secrets.ensureKey(app.organizationId); // the release snapshot below is sealed inside the transaction
    const set = Object.keys(body.vars).filter((k) => body.vars[k] !== null);
    const unset = Object.keys(body.vars).filter((k) => body.vars[k] === null);
    const description = [set.length ? `Set ${set.join(', ')}` : '', unset.length ? `Unset ${unset.join(', ')}` : ''].filter(Boolean).join('; ');
    const result = await cp.store.transaction(async (tx) => {
      await tx.config.apply(app.organizationId, app.id, changes);
      const config = await readConfig(tx, cp.secrets, app);
      const current = app.currentReleaseId ? await tx.releases.byId(app.organizationId, app.currentReleaseId) : undefined;
      if (!current) return { config, release: null };
      const release = await createRelease(tx, cp.secrets, app, {
        buildId: current.buildId, processTypes: current.processTypes, artifactDigest: current.artifactDigest, config, description, createdBy: auth.user.email,
      });
      return { config, release };
    });
    // Keys only: values never reach logs or events.
    await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'config.changed', message: description, data: { set, unset, releaseVersion: result.release?.version ?? null } });
    if (result.release) {
      cp.logs.platform(app.id, `Release v${result.release.version}: ${description}`);
      await cp.deployer.reconcileApp(app.organizationId, app.id);
    }
    return { config: result.config, release: result.release ? toRelease(result.release, result.release.id) : null };
  },

  async getFormation({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    return (await cp.store.formation.list(app.organizationId, app.id)).map(toFormation);
  },

  async scale({ auth, params, body, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const formation = await cp.store.formation.list(app.organizationId, app.id);
    const known = new Set(formation.filter((f) => f.command !== null).map((f) => f.type));
    const unknown = Object.keys(body.quantities).filter((t) => !known.has(t));
    if (unknown.length) {
      throw unprocessable('unknown_process_type', known.size
        ? `no process type ${unknown.join(', ')} in the current release; it has: ${[...known].join(', ')}`
        : 'the app has no release yet: deploy it first', { unknown, known: [...known] });
    }
    await cp.store.transaction(async (tx) => {
      for (const [type, quantity] of Object.entries(body.quantities)) await tx.formation.upsert(app.organizationId, app.id, type, { quantity });
    });
    const summary = Object.entries(body.quantities).map(([t, q]) => `${t}=${q}`).join(' ');
    await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'formation.scaled', message: `Scaled to ${summary} by ${auth.user.email}`, data: { quantities: body.quantities } });
    cp.logs.platform(app.id, `Scaled to ${summary}`);
    await cp.deployer.reconcileApp(app.organizationId, app.id);
    return (await cp.store.formation.list(app.organizationId, app.id)).map(toFormation);
  },

  async createBuild({ auth, params, body, req, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const declared = req.headers['content-length'] ? Number(req.headers['content-length']) : undefined;
    const build = await startSourceBuild(cp, app, body as unknown as Readable, { createdBy: auth.user.email, declaredLength: declared });
    return toBuild(build, null);
  },

  async listReleases({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    return (await cp.store.releases.list(app.organizationId, app.id)).map((r) => toRelease(r, app.currentReleaseId));
  },

  async rollback({ auth, params, body, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const current = app.currentReleaseId ? await cp.store.releases.byId(app.organizationId, app.currentReleaseId) : undefined;
    if (!current) throw unprocessable('no_release', 'the app has no release to roll back from');
    let targetVersion = body.version;
    if (targetVersion === undefined) {
      const earlier = (await cp.store.releases.list(app.organizationId, app.id)).filter((r) => r.version < current.version);
      if (!earlier.length) throw unprocessable('no_earlier_release', `v${current.version} is the first release; there is nothing to roll back to`);
      targetVersion = earlier[0].version;
    }
    const target = await cp.store.releases.byVersion(app.organizationId, app.id, targetVersion);
    if (!target) throw notFound('release', `v${targetVersion}`);
    const config = await cp.secrets.openJson<Record<string, string>>(app, target.configSealed);
    await cp.secrets.ensureKey(app.organizationId); // a v1 (pre-0005) snapshot: make the org's key before sealing in the transaction
    // Like Heroku: a rollback restores the code and the config of the target release.
    const release = await cp.store.transaction(async (tx) => {
      const existing = await tx.config.get(app.organizationId, app.id);
      const changes: Record<string, string | null> = {};
      for (const k of Object.keys(existing)) if (!(k in config)) changes[k] = null;
      for (const [k, v] of Object.entries(config)) changes[k] = await cp.secrets.seal(app, v, tx);
      if (Object.keys(changes).length) await tx.config.apply(app.organizationId, app.id, changes);
      return createRelease(tx, cp.secrets, app, {
        buildId: target.buildId, processTypes: target.processTypes, artifactDigest: target.artifactDigest, config,
        description: `Rollback to v${target.version}`, createdBy: auth.user.email,
      });
    });
    await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'release.created', message: `Release v${release.version}: rollback to v${target.version}`, data: { releaseId: release.id, version: release.version, rollbackTo: target.version } });
    cp.logs.platform(app.id, `Release v${release.version}: rollback to v${target.version} by ${auth.user.email}`);
    await cp.deployer.reconcileApp(app.organizationId, app.id);
    return toRelease(release, release.id);
  },

  async restart({ auth, params, body, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    let n = 0;
    for (const i of await cp.store.instances.listByApp(app.organizationId, app.id)) {
      if (i.desired !== 'running' || i.stopAfter !== null || (body.type && i.processType !== body.type)) continue;
      // Replaced like a deploy: a new instance starts, the old one drains once it is ready.
      await cp.store.instances.update(i.id, { restartGeneration: replaceRequested(i.restartGeneration) });
      n++;
    }
    await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'app.restarted', message: `Restarted ${body.type ?? 'all'} (${n} instance${n === 1 ? '' : 's'}) by ${auth.user.email}`, data: { type: body.type ?? null, count: n } });
    cp.logs.platform(app.id, `Restarting ${body.type ?? 'all processes'}`);
    await cp.deployer.reconcileApp(app.organizationId, app.id);
    return { restarted: n };
  },

  async listInstances({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const rows = await cp.store.instances.listByApp(app.organizationId, app.id);
    return rows
      .sort((a, b) => a.processType.localeCompare(b.processType) || a.index - b.index || b.releaseVersion - a.releaseVersion)
      .map(toInstance);
  },
} satisfies Partial<Handlers>;

