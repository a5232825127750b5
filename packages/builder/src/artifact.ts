/**
 * The artifact ("slug"): a tarball of the final /app tree, entries relative to /app
 * (`package.json`, `node_modules/…`, `.profile.d/shellwego.sh`, `.shellwego/…`).
 *
 * - compression 'auto' (default): gzip level 1 while the tree holds less than 64 MB of file data
 *   (small Express app: 3 MB → 0.8 MB), a plain tar above that, where gzip would dominate the
 *   build (a shipped node runtime: ~1.2 s gzip vs ~0.4 s plain for ~100 MB). 'gzip' / 'none'
 *   force one. node-tar and GNU tar detect either on extraction.
 * - written by GNU tar when the host has it (≈5x faster than node-tar on a node_modules tree;
 *   gzip is done by Node's zlib off the main thread), else by node-tar.
 * - owner 0:0 numeric, no user names; hard links stored as files; entries sorted by name.
 * - `.git` at the root is left out. Before packaging, symlinks leading outside the tree (absolute
 *   ones are allowed only under /app) and sockets/FIFOs/devices are removed from the tree and
 *   reported in `dropped`.
 */
import { execFile, spawn } from 'node:child_process';
import { createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import * as tar from 'tar';
import { symlinkStaysInside } from './extract.ts';

export type Compression = 'auto' | 'gzip' | 'none';
export type TarEngine = 'auto' | 'gnu' | 'node';

/** 'auto' switches to a plain tar from this much file data on. */
export const AUTO_GZIP_LIMIT = 64 * 1024 * 1024;

export interface ArtifactInfo {
  bytes: number;
  gzip: boolean;
  engine: 'gnu' | 'node';
  /** Paths left out (unsafe links, special files). */
  dropped: string[];
}

const EXCLUDE_TOP = new Set(['.git']);

function linkAllowed(rel: string, target: string): boolean {
  if (target.startsWith('/')) return target === '/app' || (target.startsWith('/app/') && !target.split('/').includes('..'));
  return symlinkStaysInside(rel, target);
}

/**
 * Walk the tree once: sum regular file sizes and remove what must not ship (escaping symlinks,
 * special files). Links are never followed.
 */
export async function sanitizeTree(dir: string): Promise<{ bytes: number; dropped: string[] }> {
  let bytes = 0;
  const dropped: string[] = [];
  const walk = async (abs: string, rel: string): Promise<void> => {
    const ents = await fsp.readdir(abs, { withFileTypes: true });
    for (const e of ents) {
      if (rel === '' && EXCLUDE_TOP.has(e.name)) continue;
      const a = path.join(abs, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(a, r);
      else if (e.isFile()) bytes += (await fsp.lstat(a)).size;
      else if (e.isSymbolicLink()) {
        const target = await fsp.readlink(a).catch(() => '');
        if (!linkAllowed(r, target)) {
          await fsp.rm(a, { force: true });
          dropped.push(r);
        }
      } else {
        await fsp.rm(a, { force: true });
        dropped.push(r);
      }
    }
  };
  await walk(dir, '');
  return { bytes, dropped };
}

/** Kept for callers that only need the size. */
export async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) total += (await fsp.lstat(p).catch(() => ({ size: 0 }))).size;
    }
  };
  await walk(dir);
  return total;
}

let gnuTarMemo: Promise<boolean> | null = null;
function haveGnuTar(): Promise<boolean> {
  gnuTarMemo ??= new Promise((resolve) => {
    execFile('tar', ['--version'], { timeout: 5000 }, (err, out) => resolve(!err && /GNU tar/.test(String(out))));
  });
  return gnuTarMemo;
}

async function gnuTarCreate(appDir: string, names: string[], outFile: string, gzip: boolean): Promise<void> {
  const list = `${outFile}.files`;
  await fsp.writeFile(list, names.map((n) => n + '\0').join(''));
  try {
    const child = spawn(
      'tar',
      [
        '--create', '--file=-', `--directory=${appDir}`,
        '--owner=0', '--group=0', '--numeric-owner', '--sort=name', '--hard-dereference',
        '--null', '--verbatim-files-from', `--files-from=${list}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code) => resolve(code));
    });
    const sink = createWriteStream(outFile);
    if (gzip) await pipeline(child.stdout!, createGzip({ level: 1 }), sink);
    else await pipeline(child.stdout!, sink);
    const code = await exited;
    if (code !== 0) throw new Error(`tar exited with ${code}: ${stderr.trim().slice(0, 500)}`);
  } finally {
    await fsp.rm(list, { force: true });
  }
}

/**
 * Package `appDir` into `outFile`. Removes unsafe links / special files from `appDir` first
 * (it is the build's scratch copy).
 */
export async function createArtifact(appDir: string, outFile: string, compression: Compression = 'auto', engine: TarEngine = 'auto'): Promise<ArtifactInfo> {
  const { bytes: size, dropped } = await sanitizeTree(appDir);
  const gzip = compression === 'gzip' || (compression === 'auto' && size <= AUTO_GZIP_LIMIT);
  const names = (await fsp.readdir(appDir)).filter((n) => !EXCLUDE_TOP.has(n)).sort();
  if (names.length === 0) throw new Error('nothing to package: the app directory is empty');
  const useGnu = engine === 'gnu' || (engine === 'auto' && (await haveGnuTar()));
  if (useGnu) {
    await gnuTarCreate(appDir, names, outFile, gzip);
  } else {
    await tar.c({ cwd: appDir, file: outFile, portable: true, gzip: gzip ? { level: 1 } : false }, names);
  }
  const bytes = (await fsp.stat(outFile)).size;
  return { bytes, gzip, engine: useGnu ? 'gnu' : 'node', dropped };
}
