/**
 * Where the agent keeps each instance's env (config vars: secrets) while the instance exists:
 * Kubernetes-style, in tmpfs, never on disk. instance.json holds everything else.
 *
 * Default directory: /run/shellwego/agent-<first 16 hex of sha256(dataDir)>/env/<instanceId>.json
 * (directories 0700, files 0600, atomic writes). /run is a tmpfs on systemd hosts and is cleared by
 * a reboot, which also ends every instance process. When /run is not a tmpfs or not writable the
 * env is kept in memory only: a restarted agent then learns it again from the next assignments
 * message. `AgentOptions.secretsDir` replaces the default directory (the operator's choice: it
 * should be a tmpfs too; it is used even when it is not, with a warning).
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';

export type Env = Record<string, string>;

export interface EnvStore {
  /** The directory env files live in; null when env is kept in memory only. */
  readonly dir: string | null;
  write(instanceId: string, env: Env): Promise<void>;
  /** The stored env, or null when unknown (never written, or lost with a reboot). */
  read(instanceId: string): Promise<Env | null>;
  remove(instanceId: string): Promise<void>;
  /** Instance ids with a stored env. */
  list(): Promise<string[]>;
}

export function defaultSecretsDir(dataDir: string): string {
  const hash = createHash('sha256').update(path.resolve(dataDir)).digest('hex').slice(0, 16);
  return path.join('/run/shellwego', `agent-${hash}`);
}

/** The filesystem type of the mount holding `p` (longest mount-point prefix in /proc/mounts), or null. */
async function fsTypeOf(p: string): Promise<string | null> {
  let mounts: string;
  try {
    mounts = await fsp.readFile('/proc/mounts', 'utf8');
  } catch {
    return null;
  }
  let best: { point: string; type: string } | null = null;
  for (const line of mounts.split('\n')) {
    const [, rawPoint, type] = line.split(' ');
    if (!rawPoint || !type) continue;
    const point = rawPoint.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    const inside = point === '/' || p === point || p.startsWith(point + '/');
    if (inside && (!best || point.length >= best.point.length)) best = { point, type };
  }
  return best?.type ?? null;
}

const unopened = (): never => {
  throw new Error('agent not started: env store not open');
};

/** Placeholder until the agent's start() opens the real store. */
export const UNOPENED_ENV_STORE: EnvStore = { dir: null, write: unopened, read: unopened, remove: unopened, list: unopened };

const MEMORY_TYPES = new Set(['tmpfs', 'ramfs']);

export async function openEnvStore(opts: { dataDir: string; secretsDir?: string; logger: Logger }): Promise<EnvStore> {
  const explicit = opts.secretsDir !== undefined;
  const dir = opts.secretsDir ?? defaultSecretsDir(opts.dataDir);
  if (!path.isAbsolute(dir)) throw new Error(`agent secretsDir must be an absolute path, got "${dir}"`);
  const type = await fsTypeOf(explicit ? dir : '/run');
  if (!explicit && type !== null && !MEMORY_TYPES.has(type)) {
    opts.logger.warn({ fsType: type }, '/run is not a tmpfs: instance env is kept in memory only (a restarted agent waits for its assignments)');
    return new MemoryEnvStore();
  }
  const envDir = path.join(dir, 'env');
  try {
    await fsp.mkdir(envDir, { recursive: true, mode: 0o700 });
    await fsp.chmod(dir, 0o700);
    await fsp.chmod(envDir, 0o700);
    const probe = path.join(envDir, `.probe-${randomBytes(4).toString('hex')}`);
    await fsp.writeFile(probe, '', { mode: 0o600 });
    await fsp.rm(probe, { force: true });
  } catch (err) {
    if (explicit) throw new Error(`agent secretsDir ${dir} is not usable: ${(err as Error).message}`);
    opts.logger.warn({ err, dir }, 'secrets directory not writable: instance env is kept in memory only');
    return new MemoryEnvStore();
  }
  if (explicit && type !== null && !MEMORY_TYPES.has(type)) opts.logger.warn({ dir, fsType: type }, 'agent secretsDir is not on a tmpfs: instance env is written to disk');
  return new DirEnvStore(envDir);
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

class DirEnvStore implements EnvStore {
  constructor(readonly dir: string) {}

  private file(instanceId: string): string {
    if (!ID_RE.test(instanceId)) throw new Error(`invalid instance id "${instanceId}"`);
    return path.join(this.dir, `${instanceId}.json`);
  }

  async write(instanceId: string, env: Env): Promise<void> {
    const file = this.file(instanceId);
    const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await fsp.writeFile(tmp, JSON.stringify(env), { mode: 0o600 });
      await fsp.rename(tmp, file);
    } catch (err) {
      await fsp.rm(tmp, { force: true }).catch(() => {});
      throw err;
    }
  }

  async read(instanceId: string): Promise<Env | null> {
    try {
      const env = JSON.parse(await fsp.readFile(this.file(instanceId), 'utf8')) as unknown;
      if (!env || typeof env !== 'object' || Array.isArray(env)) return null;
      if (!Object.values(env).every((v) => typeof v === 'string')) return null;
      return env as Env;
    } catch {
      return null;
    }
  }

  async remove(instanceId: string): Promise<void> {
    await fsp.rm(this.file(instanceId), { force: true });
  }

  async list(): Promise<string[]> {
    const names = await fsp.readdir(this.dir).catch(() => [] as string[]);
    return names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)).filter((id) => ID_RE.test(id));
  }
}

class MemoryEnvStore implements EnvStore {
  readonly dir = null;
  private envs = new Map<string, Env>();

  async write(instanceId: string, env: Env): Promise<void> {
    this.envs.set(instanceId, { ...env });
  }

  async read(instanceId: string): Promise<Env | null> {
    const env = this.envs.get(instanceId);
    return env ? { ...env } : null;
  }

  async remove(instanceId: string): Promise<void> {
    this.envs.delete(instanceId);
  }

  async list(): Promise<string[]> {
    return [...this.envs.keys()];
  }
}
