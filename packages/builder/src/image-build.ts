/**
 * Builds from OCI images: pull the image through the node's shared layer cache, unpack it safely
 * into a root filesystem, and package that as the release artifact:
 *
 *   image.json   the run config (exec-form argv, env, workdir, user → numeric ids, reference, digest)
 *   rootfs/…     the image's filesystem
 *
 * The agent recognises this layout and runs `rootfs` as `/` in the same sandbox as source apps.
 * Nothing of the image runs at build time. Process type `web` is the image's ENTRYPOINT+CMD, as
 * a JSON argv (exec form: no shell).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import * as tar from 'tar';
import type { Logger } from 'pino';
import type { BlobStore, BuildRequest, BuildResultMessage } from '@shellwego/core';
import { ImageConfigError, ReferenceError, RegistryError, TarFormatError, UnsafeLayerError, fetchImage } from '@shellwego/oci';

export const IMAGE_CONFIG_FILE = 'image.json';
export const IMAGE_ROOTFS_DIR = 'rootfs';

export interface ImageBuildDeps {
  blobs: BlobStore;
  workDir: string;
  /** Shared layer cache, `<dataDir>/oci`. */
  ociDir: string;
  insecureRegistries?: string[];
  signal?: AbortSignal;
  /** Whole pull + unpack + package; default 15 minutes (like source builds). */
  timeoutMs?: number;
  logger?: Logger;
}

const userError = (e: unknown) =>
  e instanceof RegistryError || e instanceof UnsafeLayerError || e instanceof ReferenceError || e instanceof ImageConfigError || e instanceof TarFormatError;

function fmtSize(n: number): string {
  return n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} KB`;
}

export async function buildImage(req: BuildRequest, deps: ImageBuildDeps, onLog: (line: string) => void): Promise<BuildResultMessage> {
  const started = Date.now();
  const image = req.image!;
  const buildDir = path.join(deps.workDir, `${req.buildId.replace(/[^A-Za-z0-9_-]/g, '_')}-${randomBytes(3).toString('hex')}`);
  const outDir = path.join(buildDir, 'artifact');
  const rootfs = path.join(outDir, IMAGE_ROOTFS_DIR);
  const timeoutMs = deps.timeoutMs ?? 15 * 60_000;
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = deps.signal ? AbortSignal.any([deps.signal, timeout]) : timeout;
  try {
    await fsp.mkdir(rootfs, { recursive: true, mode: 0o755 });
    await fsp.chmod(buildDir, 0o700);
    onLog(`-----> Pulling ${image.reference}${image.credentials ? ' (with credentials)' : ''}`);
    const { pulled, run, entries, bytes } = await fetchImage(image.reference, {
      cacheDir: deps.ociDir, rootfs, credentials: image.credentials, insecureRegistries: deps.insecureRegistries, log: onLog, signal,
    });
    signal.throwIfAborted();
    onLog(`       ${entries} entries, ${fmtSize(bytes)}; manifest ${pulled.manifestDigest}`);
    onLog(`-----> Image config`);
    onLog(`       command: ${JSON.stringify(run.argv)}`);
    onLog(`       workdir: ${run.workdir}, user: ${run.user || 'root'} (${run.uid}:${run.gid} inside the sandbox)`);
    if (Object.keys(run.env).length) onLog(`       env: ${Object.keys(run.env).join(', ')}`);
    await fsp.writeFile(path.join(outDir, IMAGE_CONFIG_FILE), JSON.stringify(run, null, 2) + '\n', { mode: 0o644 });

    onLog('-----> Packaging artifact');
    const out = path.join(buildDir, 'artifact.tar.gz');
    await tar.c({ cwd: outDir, file: out, gzip: { level: 1 }, portable: true }, [IMAGE_CONFIG_FILE, IMAGE_ROOTFS_DIR]);
    const size = (await fsp.stat(out)).size;
    const artifactDigest = await deps.blobs.putFile(out);
    const durationMs = Date.now() - started;
    onLog(`-----> Build succeeded: ${fmtSize(size)} (gzip) in ${(durationMs / 1000).toFixed(1)}s`);
    const cached = pulled.layers.filter((l) => !l.downloaded).length;
    return {
      buildId: req.buildId, ok: true, stack: 'image', artifactDigest, processTypes: { web: JSON.stringify(run.argv) },
      cacheHit: cached === pulled.layers.length, error: null, durationMs,
    };
  } catch (e: any) {
    const msg = timeout.aborted
      ? `the image build took longer than ${Math.round(timeoutMs / 1000)}s and was stopped`
      : deps.signal?.aborted
        ? 'build cancelled: the builder is shutting down'
        : userError(e) ? e.message : `internal builder error: ${e?.message ?? String(e)}`;
    if (!userError(e) && !signal.aborted) deps.logger?.error({ err: e?.stack ?? String(e), buildId: req.buildId }, 'image build crashed');
    for (const line of String(msg).split('\n')) onLog(` !     ${line}`);
    onLog('-----> Build failed');
    return { buildId: req.buildId, ok: false, stack: 'image', artifactDigest: null, processTypes: {}, cacheHit: null, error: msg, durationMs: Date.now() - started };
  } finally {
    await fsp.rm(buildDir, { recursive: true, force: true }).catch((err) => deps.logger?.warn({ err: err?.message, buildDir }, 'removing build dir failed'));
  }
}
