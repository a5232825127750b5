import { promises as fsp } from 'node:fs';

/** True when something is at `p` (a link counts as itself: it is not followed). */
export async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}
