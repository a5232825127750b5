/**
 * From a pulled image to what the platform runs: the rootfs (unpacked safely) and the run
 * config (exec-form argv, env, workdir, numeric user resolved from the image's own /etc/passwd).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Credentials } from './auth.ts';
import { BlobCache } from './cache.ts';
import { RegistryClient } from './registry.ts';
import type { ImageConfig, Platform, PulledImage } from './registry.ts';
import { resolveDirInRoot, unpackLayers } from './unpack.ts';
import type { UnpackLimits } from './unpack.ts';

/** Recorded next to the rootfs in the artifact (`image.json`); the agent runs from it. */
export interface ImageRunConfig {
  reference: string;
  manifestDigest: string;
  /** Exec form: no shell unless the image's own entrypoint/cmd is one. */
  argv: string[];
  env: Record<string, string>;
  workdir: string;
  /** The image's USER as written, and the ids it resolved to inside the container. */
  user: string;
  uid: number;
  gid: number;
}

export class ImageConfigError extends Error {}

/** Read a small file of the image (e.g. etc/passwd) without following links out of it. */
async function readImageFile(root: string, rel: string): Promise<string | null> {
  const comps = rel.split('/').filter(Boolean);
  const dir = await resolveDirInRoot(root, comps.slice(0, -1), false).catch(() => null);
  if (!dir) return null;
  const p = path.join(dir, comps[comps.length - 1]);
  const st = await fsp.lstat(p).catch(() => null);
  if (!st || !st.isFile() || st.size > 4 * 1024 * 1024) return null;
  return fsp.readFile(p, 'utf8');
}

function lookup(text: string | null, key: string, byName: boolean): string[] | null {
  for (const line of (text ?? '').split('\n')) {
    const f = line.split(':');
    if (f.length < 3) continue;
    if (byName ? f[0] === key : f[2] === key) return f;
  }
  return null;
}

const ID_MAX = 0xfffffffe;
const isNum = (s: string) => /^\d+$/.test(s) && Number(s) <= ID_MAX;

/**
 * USER as Docker reads it: `""` (root), `uid`, `name`, `uid:gid`, `name:group`. Names come from
 * the image's /etc/passwd and /etc/group; a name that is not there is an error. The ids are the
 * ones *inside* the container; the sandbox maps them onto an unprivileged host uid.
 */
export async function resolveUser(root: string, user: string): Promise<{ uid: number; gid: number }> {
  const u = user.trim();
  if (!u) return { uid: 0, gid: 0 };
  const [name, group] = u.split(':', 2);
  const passwd = await readImageFile(root, 'etc/passwd');
  let uid: number;
  let gid = 0;
  if (isNum(name)) {
    uid = Number(name);
    const entry = lookup(passwd, name, false);
    if (entry && isNum(entry[3] ?? '')) gid = Number(entry[3]);
  } else {
    const entry = lookup(passwd, name, true);
    if (!entry || !isNum(entry[2]) || !isNum(entry[3] ?? '')) throw new ImageConfigError(`the image's USER "${u}" is not in its /etc/passwd`);
    uid = Number(entry[2]);
    gid = Number(entry[3]);
  }
  if (group !== undefined && group !== '') {
    if (isNum(group)) gid = Number(group);
    else {
      const g = lookup(await readImageFile(root, 'etc/group'), group, true);
      if (!g || !isNum(g[2])) throw new ImageConfigError(`the image's USER group "${group}" is not in its /etc/group`);
      gid = Number(g[2]);
    }
  }
  return { uid, gid };
}

export function envFromList(list: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const kv of list) {
    const eq = kv.indexOf('=');
    const k = eq < 0 ? kv : kv.slice(0, eq);
    if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) env[k] = eq < 0 ? '' : kv.slice(eq + 1);
  }
  return env;
}

export async function runConfigFor(root: string, pulled: Pick<PulledImage, 'reference' | 'manifestDigest'>, cfg: ImageConfig): Promise<ImageRunConfig> {
  const argv = [...cfg.entrypoint, ...cfg.cmd];
  if (argv.length === 0) throw new ImageConfigError(`image ${pulled.reference} has neither ENTRYPOINT nor CMD: there is nothing to run`);
  const workdir = cfg.workingDir && path.posix.isAbsolute(cfg.workingDir) ? path.posix.normalize(cfg.workingDir) : '/';
  const { uid, gid } = await resolveUser(root, cfg.user);
  return { reference: pulled.reference, manifestDigest: pulled.manifestDigest, argv, env: envFromList(cfg.env), workdir, user: cfg.user, uid, gid };
}

export interface FetchImageOptions {
  /** Shared cache root, e.g. `<dataDir>/oci`. */
  cacheDir: string;
  /** Empty directory that receives the root filesystem. */
  rootfs: string;
  credentials?: Credentials | null;
  insecureRegistries?: string[];
  platform?: Platform;
  limits?: Partial<UnpackLimits>;
  log?: (line: string) => void;
  signal?: AbortSignal;
}

/** Pull (through the shared cache), unpack safely, and derive the run config. */
export async function fetchImage(reference: string, opts: FetchImageOptions): Promise<{ pulled: PulledImage; run: ImageRunConfig; entries: number; bytes: number }> {
  const log = opts.log ?? (() => {});
  const client = new RegistryClient(reference, { credentials: opts.credentials, insecureRegistries: opts.insecureRegistries, platform: opts.platform, signal: opts.signal });
  const pulled = await client.pull(new BlobCache(opts.cacheDir), log);
  log(`-----> Unpacking ${pulled.layers.length} layer${pulled.layers.length === 1 ? '' : 's'}`);
  const budget = await unpackLayers(opts.rootfs, pulled.layers.map((l) => l.file), opts.limits);
  // Mount points the sandbox needs in the new root (bwrap cannot create them on a read-only root).
  for (const d of ['proc', 'dev', 'tmp', 'etc']) {
    const p = path.join(opts.rootfs, d);
    const st = await fsp.lstat(p).catch(() => null);
    if (!st) await fsp.mkdir(p, { mode: d === 'tmp' ? 0o1777 : 0o755 });
    else if (!st.isDirectory()) throw new ImageConfigError(`the image's /${d} is not a directory`);
  }
  const run = await runConfigFor(opts.rootfs, pulled, pulled.config);
  return { pulled, run, entries: budget.entries, bytes: budget.bytes };
}
