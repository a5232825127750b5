import { promises as fsp } from 'node:fs';
import path from 'node:path';

/**
 * chown -R (without following symlinks) so a sandbox running as uid:gid can write `dir`.
 * Callers populate app dirs as root, then hand them over with this.
 */
export async function prepareWritableDir(dir: string, uid: number, gid: number): Promise<void> {
  if (!path.isAbsolute(dir)) throw new Error(`prepareWritableDir: path must be absolute, got "${dir}"`);
  const resolved = path.resolve(dir);
  if (resolved === '/' || ['/usr', '/etc', '/bin', '/sbin', '/lib', '/lib64', '/var', '/home', '/root', '/proc', '/sys', '/dev'].includes(resolved)) {
    throw new Error(`prepareWritableDir: refusing to chown system directory "${resolved}"`);
  }
  if (!Number.isInteger(uid) || uid < 0 || !Number.isInteger(gid) || gid < 0) throw new Error('prepareWritableDir: uid/gid must be non-negative integers');
  await fsp.mkdir(resolved, { recursive: true });
  const walk = async (p: string): Promise<void> => {
    await fsp.lchown(p, uid, gid);
    const st = await fsp.lstat(p);
    if (!st.isDirectory()) return;
    for (const ent of await fsp.readdir(p, { withFileTypes: true })) {
      const child = path.join(p, ent.name);
      if (ent.isDirectory()) await walk(child);
      else await fsp.lchown(child, uid, gid);
    }
  };
  await walk(resolved);
}
