/**
 * Directory links: `.shellwego.json` ({"app": NAME}) makes `--app` optional in that directory
 * and below, the way a git remote does for Heroku.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { CliError } from './errors.ts';

export const LINK_FILE = '.shellwego.json';

export interface Link {
  app: string;
  /** The directory holding the link file. */
  dir: string;
  file: string;
}

/** Walks up from `start` to the filesystem root; the nearest link wins. */
export async function findLink(start: string): Promise<Link | null> {
  let dir = resolve(start);
  for (;;) {
    const file = join(dir, LINK_FILE);
    let text: string | null = null;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR' && code !== 'EACCES') throw err;
    }
    if (text !== null) {
      let app: unknown;
      try {
        app = (JSON.parse(text) as { app?: unknown }).app;
      } catch {}
      if (typeof app !== 'string' || !app) throw new CliError(`${file} is not a valid link (expected {"app": "NAME"}); fix or delete it`, 'invalid_link');
      return { app, dir, file };
    }
    const parent = dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
}

export async function writeLink(dir: string, app: string): Promise<string> {
  const file = join(resolve(dir), LINK_FILE);
  await writeFile(file, `${JSON.stringify({ app }, null, 2)}\n`);
  return file;
}
