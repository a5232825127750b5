/**
 * Dependency cache. One entry per (app, key) where key = sha256 of the stack, runtime version,
 * package manager and lockfile (or dependency fields) — see nodeCacheKey / pythonCacheKey.
 *
 *   <cacheDir>/apps/<app>/deps/<key>/full/node_modules   node_modules right after install
 *   <cacheDir>/apps/<app>/deps/<key>/prod/node_modules   same after the production prune (optional)
 *   <cacheDir>/apps/<app>/deps/<key>/python/.python      pip --target output
 *
 * Entries are scoped per app so one tenant's install scripts can never poison another tenant's
 * build. Entries are written to a temp dir and renamed into place (atomic); the newest few per
 * app are kept.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { exists } from './fsutil.ts';

/** JSON with sorted object keys, so equal values hash equally. */
export function stableStringify(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(stableStringify).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .sort()
    .filter((k) => o[k] !== undefined)
    .map((k) => `${JSON.stringify(k)}:${stableStringify(o[k])}`)
    .join(',')}}`;
}

export function hashKey(parts: Record<string, unknown>): string {
  return createHash('sha256').update(stableStringify({ v: 1, ...parts })).digest('hex');
}

const NODE_DEP_FIELDS = ['dependencies', 'devDependencies', 'optionalDependencies', 'peerDependencies', 'bundleDependencies', 'bundledDependencies', 'overrides', 'resolutions', 'workspaces', 'pnpm'];
const INSTALL_SCRIPTS = ['preinstall', 'install', 'postinstall', 'prepare'];

async function readOpt(p: string): Promise<string | null> {
  return fsp.readFile(p, 'utf8').catch(() => null);
}

/** Key for node_modules: runtime + package manager + lockfile content (or package.json dependency fields). */
export async function nodeCacheKey(
  appDir: string,
  plan: { packageManager: string; lockfile: string | null; pkg: Record<string, any> },
  nodeVersion: string,
  pmVersion: string,
): Promise<string> {
  const fields: Record<string, unknown> = {};
  for (const f of NODE_DEP_FIELDS) fields[f] = plan.pkg[f];
  const scripts: Record<string, unknown> = {};
  for (const s of INSTALL_SCRIPTS) scripts[s] = plan.pkg.scripts?.[s];
  return hashKey({
    stack: 'node',
    node: nodeVersion,
    arch: process.arch,
    pm: plan.packageManager,
    pmVersion,
    lockfile: plan.lockfile,
    lock: plan.lockfile ? await readOpt(path.join(appDir, plan.lockfile)) : null,
    // With a lockfile the dependency fields are in it; without one they are the input.
    deps: plan.lockfile ? null : fields,
    scripts,
    npmrc: await readOpt(path.join(appDir, '.npmrc')),
    yarnrc: await readOpt(path.join(appDir, '.yarnrc.yml')),
  });
}

export async function pythonCacheKey(appDir: string, requirementsFile: string, pythonVersion: string): Promise<string> {
  return hashKey({
    stack: 'python',
    python: pythonVersion,
    arch: process.arch,
    file: requirementsFile,
    content: await readOpt(path.join(appDir, requirementsFile)),
  });
}

/** `cp -a` (owner, modes, symlinks as links; reflinks where the filesystem can). `dst` must not exist. */
export function copyTree(src: string, dst: string, opts: { hardlink?: boolean } = {}): Promise<void> {
  const args = opts.hardlink ? ['-a', '-l', '--', src, dst] : ['-a', '--reflink=auto', '--', src, dst];
  return new Promise((resolve, reject) => {
    execFile('cp', args, { maxBuffer: 1024 * 1024 }, (err, _out, stderr) => {
      if (err) reject(new Error(`cp ${src} → ${dst} failed: ${String(stderr).trim() || err.message}`));
      else resolve();
    });
  });
}

/** Hard-link copy when possible (same filesystem), plain copy otherwise. */
export async function linkOrCopyTree(src: string, dst: string): Promise<void> {
  try {
    await copyTree(src, dst, { hardlink: true });
  } catch {
    await fsp.rm(dst, { recursive: true, force: true });
    await copyTree(src, dst);
  }
}

export function safeName(s: string): string {
  return /^[A-Za-z0-9_-]{1,100}$/.test(s) ? s : createHash('sha256').update(s).digest('hex').slice(0, 32);
}

export class DepCache {
  constructor(
    private readonly root: string,
    private readonly keepPerApp = 3,
  ) {}

  private appDir(app: string): string {
    return path.join(this.root, 'apps', safeName(app), 'deps');
  }

  entryDir(app: string, key: string): string {
    return path.join(this.appDir(app), key);
  }

  /** Entry dir when a complete entry exists (its mtime is refreshed for LRU), else null. */
  async lookup(app: string, key: string): Promise<string | null> {
    const dir = this.entryDir(app, key);
    try {
      await fsp.access(path.join(dir, 'entry.json'));
      const now = new Date();
      await fsp.utimes(dir, now, now).catch(() => {});
      return dir;
    } catch {
      return null;
    }
  }

  /**
   * Create `<entry>/<part>` by copying `src` into it (temp dir + rename). Creates the entry on
   * first use. A concurrent writer that got there first wins; ours is discarded.
   */
  async savePart(app: string, key: string, part: string, src: string, meta: Record<string, unknown> = {}): Promise<void> {
    const dir = this.entryDir(app, key);
    await fsp.mkdir(this.appDir(app), { recursive: true, mode: 0o700 });
    const tmpEntry = `${dir}.tmp-${randomBytes(4).toString('hex')}`;
    try {
      // Make sure the entry dir exists (atomically, with its marker).
      if (!(await exists(path.join(dir, 'entry.json')))) {
        await fsp.mkdir(tmpEntry, { mode: 0o700 });
        await fsp.writeFile(path.join(tmpEntry, 'entry.json'), JSON.stringify({ key, createdAt: new Date().toISOString(), ...meta }));
        await fsp.rename(tmpEntry, dir).catch(async (e) => {
          if (!(await exists(path.join(dir, 'entry.json')))) throw e;
        });
      }
      const finalPart = path.join(dir, part);
      if (await exists(finalPart)) return;
      const tmpPart = path.join(dir, `.${part}.tmp-${randomBytes(4).toString('hex')}`);
      try {
        await fsp.mkdir(tmpPart, { mode: 0o700 });
        await copyTree(src, path.join(tmpPart, path.basename(src)));
        await fsp.rename(tmpPart, finalPart).catch(async (e) => {
          if (!(await exists(finalPart))) throw e;
        });
      } finally {
        await fsp.rm(tmpPart, { recursive: true, force: true });
      }
    } finally {
      await fsp.rm(tmpEntry, { recursive: true, force: true });
    }
    await this.prune(app).catch(() => {});
  }

  async hasPart(entryDir: string, part: string): Promise<boolean> {
    return exists(path.join(entryDir, part));
  }

  /** Keep the `keepPerApp` most recently used entries of an app. */
  async prune(app: string): Promise<void> {
    const base = this.appDir(app);
    const names = await fsp.readdir(base).catch(() => [] as string[]);
    const entries: Array<{ name: string; mtime: number }> = [];
    for (const n of names) {
      const st = await fsp.stat(path.join(base, n)).catch(() => null);
      if (!st) continue;
      if (n.includes('.tmp-')) {
        if (Date.now() - st.mtimeMs > 3600_000) await fsp.rm(path.join(base, n), { recursive: true, force: true });
        continue;
      }
      entries.push({ name: n, mtime: st.mtimeMs });
    }
    entries.sort((a, b) => b.mtime - a.mtime);
    for (const e of entries.slice(this.keepPerApp)) await fsp.rm(path.join(base, e.name), { recursive: true, force: true });
  }
}

