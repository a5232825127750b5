/**
 * Volume directories on this node (ADR 0020): `<dataDir>/volumes/<volumeId>`, one per volume,
 * shared by every instance of its process type here and bind-mounted read-write at its mount path.
 * They outlive instances, releases and agent restarts. Only an explicit command (the volume was
 * destroyed through the API) removes one: never an absence from the assignments, so a wrong or
 * empty desired state cannot delete data.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { InstanceSpec, VolumeDeleteMessage } from '@shellwego/core';
import type { Mount } from '@shellwego/sandbox';
import { isVolumeId } from './identity.ts';

export class VolumeDirs {
  constructor(readonly root: string, private readonly logger: Logger) {}

  /** 0711: app users pass through to their own volume, but cannot list the others. */
  async init(): Promise<void> {
    await fsp.mkdir(this.root, { recursive: true, mode: 0o711 });
    const st = await fsp.stat(this.root);
    if ((st.mode & 0o7777) !== 0o711) await fsp.chmod(this.root, 0o711);
  }

  path(id: string): string {
    if (!isVolumeId(id)) throw new Error(`invalid volume id ${JSON.stringify(id)}`);
    return path.join(this.root, id);
  }

  /**
   * The instance's volume mounts, each directory made (0700, owned by the app's uid so the
   * sandboxed process can write) if it is not there yet. A link or a file in its place is refused:
   * the bind mount would follow it out of the volumes directory.
   */
  async mounts(spec: InstanceSpec, owner: { uid: number; gid: number } | null): Promise<Mount[]> {
    const out: Mount[] = [];
    for (const v of spec.volumes ?? []) {
      const dir = this.path(v.id);
      await fsp.mkdir(dir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
      const st = await fsp.lstat(dir);
      if (!st.isDirectory()) throw new Error(`volume ${v.name}: ${dir} is not a directory`);
      if (owner && (st.uid !== owner.uid || st.gid !== owner.gid)) await fsp.lchown(dir, owner.uid, owner.gid);
      if ((st.mode & 0o777) !== 0o700) await fsp.chmod(dir, 0o700);
      out.push({ source: dir, target: v.path, readonly: false });
    }
    return out;
  }

  /** The volume was destroyed: its directory goes (idempotent: a redelivered command finds nothing). */
  async remove(m: VolumeDeleteMessage): Promise<void> {
    if (!m || !isVolumeId(m.volumeId)) {
      this.logger.warn({ volume: m?.volumeId }, 'malformed volume delete command ignored');
      return;
    }
    const dir = this.path(m.volumeId);
    const existed = await fsp.lstat(dir).then(() => true, () => false);
    await fsp.rm(dir, { recursive: true, force: true });
    this.logger.info({ volume: m.volumeId, name: m.name, existed }, 'volume destroyed: directory removed');
  }
}
