import { rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { join } from 'node:path';
import { newId } from '@shellwego/core';
import type { AppRow, BuildRow } from '@shellwego/store';
import type { ControlPlaneContext } from './context.ts';
import { receiveUpload, validateSourceTarball } from './uploads.ts';

/**
 * Starts a build of a source tarball (tar.gz) for an app: the one path shared by
 * `POST /v1/apps/:app/builds` and `git push`. Streams the upload to disk under the size limit,
 * validates it, stores it as a blob and requests the build; returns the pending build.
 */
export async function startSourceBuild(cp: ControlPlaneContext, app: AppRow, source: Readable, opts: { createdBy: string; declaredLength?: number; via?: string }): Promise<BuildRow> {
  const tmp = join(cp.settings.dataDir, 'tmp');
  const file = await receiveUpload(source, tmp, cp.settings.maxUploadBytes, opts.declaredLength);
  let digest: string;
  try {
    await validateSourceTarball(file, { maxBytes: cp.settings.maxUploadBytes, maxUnpackedBytes: 2 * 1024 ** 3, maxEntries: 200_000 });
    digest = await cp.blobs.putFile(file);
  } finally {
    await rm(file, { force: true });
  }
  const build = await cp.store.builds.create({ id: newId('bld'), appId: app.id, organizationId: app.organizationId, sourceDigest: digest, createdBy: opts.createdBy });
  const via = opts.via ? ` (${opts.via})` : '';
  await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'build.created', message: `Build started by ${opts.createdBy}${via}`, data: { buildId: build.id } });
  cp.logs.platform(app.id, `Build ${build.id} started by ${opts.createdBy}${via}`);
  await cp.builds.request(build);
  return build;
}
