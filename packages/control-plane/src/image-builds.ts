import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { badRequest, newId } from '@shellwego/core';
import type { BuildRequest } from '@shellwego/core';
import { ReferenceError, formatReference, parseReference } from '@shellwego/oci';
import type { AppRow, BuildRow, Store } from '@shellwego/store';
import type { ControlPlaneContext } from './context.ts';
import type { SecretBox } from './secrets.ts';

export interface ImageSource {
  image: string;
  credentials?: { username: string; password: string };
}

/**
 * Starts a build that pulls an OCI image: the image path next to `startSourceBuild`. The
 * reference is checked before anything is written; the build's "source" blob is a small JSON
 * naming the canonical reference (so the build row stays content-addressed like source builds),
 * and the credentials, if any, are sealed under the organization's key and kept only in the
 * `image_builds` row. Nothing about them is logged or put in events.
 */
export async function startImageBuild(cp: ControlPlaneContext, app: AppRow, src: ImageSource, opts: { createdBy: string }): Promise<BuildRow> {
  let reference: string;
  try {
    reference = formatReference(parseReference(src.image));
  } catch (e) {
    if (e instanceof ReferenceError) throw badRequest('invalid_image_reference', e.message);
    throw e;
  }
  const tmp = join(cp.settings.dataDir, 'tmp');
  await mkdir(tmp, { recursive: true });
  const file = join(tmp, `image-${randomBytes(8).toString('hex')}.json`);
  let digest: string;
  try {
    await writeFile(file, JSON.stringify({ image: reference }) + '\n');
    digest = await cp.blobs.putFile(file);
  } finally {
    await rm(file, { force: true });
  }
  const credentialsSealed = src.credentials ? await cp.secrets.sealJson(app, src.credentials) : null;
  const build = await cp.store.transaction(async (tx) => {
    const b = await tx.builds.create({ id: newId('bld'), appId: app.id, organizationId: app.organizationId, sourceDigest: digest, createdBy: opts.createdBy });
    await tx.imageBuilds.create({ buildId: b.id, organizationId: app.organizationId, appId: app.id, reference, credentialsSealed });
    return b;
  });
  await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'build.created', message: `Image build of ${reference} started by ${opts.createdBy}`, data: { buildId: build.id, image: reference } });
  cp.logs.platform(app.id, `Build ${build.id} of image ${reference} started by ${opts.createdBy}`);
  await cp.builds.request(build);
  return build;
}

/** The `image` part of a build request, or undefined for source builds. */
export async function imageForBuild(store: Store, secrets: SecretBox, app: AppRow, build: BuildRow): Promise<BuildRequest['image']> {
  const row = await store.imageBuilds.get(build.organizationId, build.id);
  if (!row) return undefined;
  const credentials = row.credentialsSealed ? await secrets.openJson<{ username: string; password: string }>(app, row.credentialsSealed) : null;
  return { reference: row.reference, credentials };
}
