/**
 * The source tarball `deploy` uploads: what git would commit, more or less. `.gitignore` files
 * are honoured at every level (deeper ones win, as in git), `.git/` and the link file are never
 * sent, and links that would point outside the app are refused rather than silently dropped.
 */
import { lstat, readFile, readdir, readlink, realpath, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import ignore from 'ignore';
import type { Ignore } from 'ignore';
import { create } from 'tar';
import { CliError } from './errors.ts';
import { LINK_FILE } from './link.ts';

export interface SourceListing {
  /** Absolute, real path of the directory packed. */
  root: string;
  /** Paths relative to root, POSIX separators, sorted; directories included (for empty ones). */
  entries: string[];
  files: number;
  /** Sum of regular file sizes. */
  bytes: number;
  /** Things skipped that the user may want to know about (sockets, fifos, devices). */
  skipped: string[];
}

interface Scope {
  /** Directory of the .gitignore, relative to root ('' for root). */
  dir: string;
  ig: Ignore;
}

/** Never sent, whatever .gitignore says: git's own data and the CLI's link file. */
const ALWAYS_SKIPPED = new Set(['.git']);

export async function listSourceFiles(dir: string): Promise<SourceListing> {
  const start = resolve(dir);
  let info;
  try {
    info = await stat(start);
  } catch {
    throw new CliError(`${start} does not exist`, 'not_found');
  }
  if (!info.isDirectory()) throw new CliError(`${start} is not a directory`, 'not_a_directory');
  const root = await realpath(start);
  const out: SourceListing = { root, entries: [], files: 0, bytes: 0, skipped: [] };
  const outside: string[] = [];
  await walk(root, '', [], out, outside);
  if (outside.length) {
    const shown = outside.slice(0, 5).join('; ');
    throw new CliError(
      `refusing to deploy ${start}: ${outside.length === 1 ? 'a symlink points' : `${outside.length} symlinks point`} outside the directory (${shown}${outside.length > 5 ? '; …' : ''}). Copy the files in, or add the links to .gitignore`,
      'symlink_outside',
    );
  }
  out.entries.sort();
  return out;
}

async function walk(root: string, rel: string, parentScopes: Scope[], out: SourceListing, outside: string[]): Promise<void> {
  const abs = rel ? join(root, rel) : root;
  const scopes = [...parentScopes];
  const gitignore = await readFile(join(abs, '.gitignore'), 'utf8').catch(() => null);
  if (gitignore !== null) scopes.push({ dir: rel, ig: ignore().add(gitignore) });

  const dirents = await readdir(abs, { withFileTypes: true });
  for (const d of dirents) {
    const path = rel ? `${rel}/${d.name}` : d.name;
    if (ALWAYS_SKIPPED.has(d.name)) continue;
    if (path === LINK_FILE) continue;
    const isDir = d.isDirectory();
    if (isIgnored(scopes, path, isDir)) continue;

    if (d.isSymbolicLink()) {
      const problem = await symlinkProblem(root, join(abs, d.name));
      if (problem) outside.push(`${path} -> ${problem}`);
      else out.entries.push(path);
    } else if (isDir) {
      out.entries.push(path);
      await walk(root, path, scopes, out, outside);
    } else if (d.isFile()) {
      out.entries.push(path);
      out.files++;
      out.bytes += (await lstat(join(abs, d.name))).size;
    } else {
      out.skipped.push(path);
    }
  }
}

/**
 * Later and deeper rules win, as in git: each .gitignore from the root down can ignore the path
 * or re-include it with `!pattern`.
 */
function isIgnored(scopes: Scope[], path: string, isDir: boolean): boolean {
  let ignored = false;
  for (const s of scopes) {
    const relToScope = s.dir ? path.slice(s.dir.length + 1) : path;
    const r = s.ig.test(isDir ? `${relToScope}/` : relToScope);
    if (r.ignored) ignored = true;
    else if (r.unignored) ignored = false;
  }
  return ignored;
}

/** Why a symlink can't be sent, or null. Links stay links in the archive, so their target must be inside. */
async function symlinkProblem(root: string, linkPath: string): Promise<string | null> {
  const target = await readlink(linkPath);
  if (isAbsolute(target)) {
    // Even one pointing inside would point elsewhere once unpacked on the platform.
    return `${target} (absolute; use a relative link)`;
  }
  const resolved = resolve(dirname(linkPath), target);
  if (!within(root, resolved)) return target;
  // A link through another link can still leave: check where it really ends up when it exists.
  const real = await realpath(resolved).catch(() => null);
  if (real !== null && !within(root, real)) return `${target} (resolves to ${real})`;
  return null;
}

function within(root: string, p: string): boolean {
  const r = relative(root, p);
  return r === '' || (!r.startsWith(`..${sep}`) && r !== '..' && !isAbsolute(r));
}

/** Writes the listing as a gzip tarball to `file`; returns its size. */
export async function writeSourceArchive(listing: SourceListing, file: string): Promise<number> {
  if (listing.entries.length === 0) throw new CliError(`there is nothing to deploy in ${listing.root} (everything is ignored or the directory is empty)`, 'empty_source');
  await create({ gzip: true, file, cwd: listing.root, portable: true, noDirRecurse: true, follow: false }, listing.entries);
  return (await stat(file)).size;
}
