/**
 * Running apps built from OCI images. Their artifact is `image.json` + `rootfs/` (see the
 * builder's image-build.ts); each instance gets its own copy like any app, and its `rootfs` is
 * mounted as `/` in the same bubblewrap sandbox, with the image's USER mapped inside the user
 * namespace onto the instance's unprivileged host uid (never a real host root).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { InstanceSpec } from '@shellwego/core';
import type { ImageRunConfig } from '@shellwego/oci';
import { resolveDirInRoot } from '@shellwego/oci';
import type { IsolationMode, SandboxSpec } from '@shellwego/sandbox';

/** The run config when `appDir` holds an image artifact; null for source apps. */
export async function readImageRun(appDir: string): Promise<ImageRunConfig | null> {
  const st = await fsp.lstat(path.join(appDir, 'rootfs')).catch(() => null);
  if (!st?.isDirectory()) return null;
  let raw: any;
  try {
    raw = JSON.parse(await fsp.readFile(path.join(appDir, 'image.json'), 'utf8'));
  } catch {
    return null;
  }
  if (!Array.isArray(raw?.argv) || typeof raw.workdir !== 'string' || !Number.isInteger(raw.uid) || !Number.isInteger(raw.gid)) return null;
  return raw as ImageRunConfig;
}

/**
 * The process's argv: the release's command is the image's exec form (a JSON array) unless
 * someone set a shell command line for the process type, which then runs through the image's sh.
 */
export function imageArgv(command: string): string[] {
  const c = command.trim();
  if (c.startsWith('[')) {
    try {
      const v = JSON.parse(c);
      if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string')) return v;
    } catch {
      // not JSON: a shell command line that happens to start with '['
    }
  }
  return ['/bin/sh', '-c', c];
}

/**
 * `base` (the source-app spec) turned into the image's: rootfs as `/`, argv, env (image env
 * under the app's config vars; PORT and DYNO from the platform), workdir and inside ids.
 * Returns `base` unchanged for source apps.
 */
export async function withImage(base: SandboxSpec, appDir: string, spec: InstanceSpec, isolation: IsolationMode, owner: { uid: number; gid: number } | null): Promise<SandboxSpec> {
  const run = await readImageRun(appDir);
  if (!run) return base;
  if (isolation !== 'sandbox') throw new Error('apps built from OCI images need sandbox isolation (bubblewrap); this node runs without it');
  const rootfs = path.join(appDir, 'rootfs');
  // The instance dir holds the root but is not the app's: it must not be able to swap `rootfs`
  // for a link (the sandbox may bind it as root when the data dir needs staging).
  if (owner && typeof process.getuid === 'function') {
    await fsp.chown(appDir, process.getuid(), process.getgid?.() ?? 0);
    await fsp.chmod(appDir, 0o711);
  }
  // The workdir may not exist in the image (Docker creates it): create it inside the root, never through a link out.
  const wdComps = run.workdir.split('/').filter(Boolean);
  const existed = await fsp.lstat(path.join(rootfs, ...wdComps)).then(() => true, () => false);
  const wd = await resolveDirInRoot(rootfs, wdComps, true);
  if (!existed && owner) await fsp.lchown(wd, owner.uid, owner.gid);
  // Volumes stay mounted at their paths inside the image's root; their mount points are made there like the workdir.
  const volumes = base.mounts.filter((m) => m.target !== '/app');
  for (const m of volumes) {
    const comps = m.target.split('/').filter(Boolean);
    const had = await fsp.lstat(path.join(rootfs, ...comps)).then(() => true, () => false);
    const dir = await resolveDirInRoot(rootfs, comps, true);
    if (!had && owner) await fsp.lchown(dir, owner.uid, owner.gid);
  }
  const { HOME: _home, ...platformEnv } = base.env;
  return {
    ...base,
    argv: imageArgv(spec.command),
    env: { ...run.env, ...platformEnv, PORT: base.env.PORT, DYNO: base.env.DYNO },
    cwd: run.workdir || '/',
    mounts: volumes,
    rootfs: { source: rootfs, readonly: false },
    insideUid: run.uid,
    insideGid: run.gid,
  };
}
