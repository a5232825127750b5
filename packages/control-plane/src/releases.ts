import { newId } from '@shellwego/core';
import type { ReleaseT } from '@shellwego/core';
import type { AppRow, ReleaseRow, Store } from '@shellwego/store';
import type { SecretBox } from './secrets.ts';
import { beginDeployment } from './controllers/deployments.ts';

export function toRelease(r: ReleaseRow, currentReleaseId: string | null): ReleaseT {
  return {
    id: r.id, appId: r.appId, version: r.version, buildId: r.buildId, description: r.description, processTypes: r.processTypes,
    configKeys: r.configKeys, createdBy: r.createdBy, createdAt: r.createdAt, current: r.id === currentReleaseId,
  };
}

/** The app's config vars, opened. */
export async function readConfig(store: Store, secrets: SecretBox, app: Pick<AppRow, 'id' | 'organizationId'>): Promise<Record<string, string>> {
  const sealed = await store.config.get(app.organizationId, app.id);
  const out: Record<string, string> = {};
  for (const k of Object.keys(sealed).sort()) out[k] = await secrets.open(app, sealed[k], store);
  return out;
}

/**
 * A release is immutable: a build plus a snapshot of config. Creating one makes it current,
 * starts its deployment (rolled out by the deployer with the app's strategy), and lines the
 * formation up with its process types (new web types start at 1, others at 0, like Heroku; the
 * `release` type is the release phase, never a process). Call inside a transaction.
 */
export async function createRelease(
  tx: Store,
  secrets: SecretBox,
  app: AppRow,
  r: { buildId: string; processTypes: Record<string, string>; artifactDigest: string; config: Record<string, string>; description: string; createdBy: string | null },
): Promise<ReleaseRow> {
  const release = await tx.releases.create({
    id: newId('rel'), appId: app.id, organizationId: app.organizationId, buildId: r.buildId, description: r.description,
    processTypes: r.processTypes, artifactDigest: r.artifactDigest, configSealed: await secrets.sealJson(app, r.config, tx),
    configKeys: Object.keys(r.config).sort(), createdBy: r.createdBy,
  });
  const before = (await tx.apps.get(app.organizationId, app.id)) ?? app;
  await beginDeployment(tx, before, release, r.createdBy);
  await tx.apps.update(app.organizationId, app.id, { currentReleaseId: release.id });
  const existing = new Map((await tx.formation.list(app.organizationId, app.id)).map((f) => [f.type, f]));
  for (const [type, command] of Object.entries(r.processTypes)) {
    if (type === 'release') continue;
    if (!existing.has(type)) await tx.formation.upsert(app.organizationId, app.id, type, { quantity: type === 'web' ? 1 : 0, command });
    else if (existing.get(type)!.command !== command) await tx.formation.upsert(app.organizationId, app.id, type, { command });
  }
  for (const f of existing.values()) {
    if (!(f.type in r.processTypes) && f.command !== null) await tx.formation.upsert(app.organizationId, app.id, f.type, { command: null });
  }
  return release;
}
