/**
 * The stored login: `$XDG_CONFIG_HOME/shellwego/config.json` (or `~/.config/shellwego/config.json`),
 * readable by its owner only because it holds a bearer token.
 */
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { CliError } from './errors.ts';

export interface StoredLogin {
  apiUrl: string;
  token: string;
  email: string;
  organization?: string;
}

export function configPath(env: Record<string, string | undefined>, home: string): string {
  // The XDG spec says relative values are invalid and must be ignored.
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg && isAbsolute(xdg) ? xdg : join(home, '.config');
  return join(base, 'shellwego', 'config.json');
}

export async function readStoredLogin(path: string): Promise<StoredLogin | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new CliError(`cannot read ${path}: ${(err as Error).message}`, 'config_unreadable');
  }
  let data: Partial<StoredLogin>;
  try {
    data = JSON.parse(text) as Partial<StoredLogin>;
  } catch {
    throw new CliError(`${path} is not valid JSON: fix it, or delete it and run \`shellwego login\``, 'config_invalid');
  }
  if (typeof data?.apiUrl !== 'string' || typeof data.token !== 'string') return null;
  return { apiUrl: data.apiUrl, token: data.token, email: String(data.email ?? ''), ...(data.organization ? { organization: String(data.organization) } : {}) };
}

/** Written to a private temporary file and renamed, so the token is never readable by others, even briefly. */
export async function writeStoredLogin(path: string, login: StoredLogin): Promise<void> {
  const dir = join(path, '..');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(login, null, 2)}\n`, { mode: 0o600 });
  await chmod(tmp, 0o600); // in case a umask or an old file got in the way
  await rename(tmp, path);
}

export async function deleteStoredLogin(path: string): Promise<boolean> {
  try {
    await rm(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
