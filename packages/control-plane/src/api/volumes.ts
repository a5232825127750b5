/**
 * Persistent volumes (ADR 0020): a directory of an app on one node, mounted into every instance of
 * one process type there. The store pins a volume to a node when its first instance is placed;
 * destroying one is the only thing that removes its directory, by a command to that node.
 */
import { conflict, mountPathsOverlap, newId, notFound } from '@shellwego/core';
import { subjects } from '@shellwego/core';
import type { VolumeDeleteMessage, VolumeT } from '@shellwego/core';
import { CONSTRAINTS, isConflict } from '@shellwego/store';
import type { VolumeRow } from '@shellwego/store';
import type { ControlPlaneContext } from '../context.ts';
import type { Handlers } from '../http.ts';
import { replaceRequested } from '../controllers/plan.ts';
import { findApp } from './apps.ts';

/** Volumes a process type may mount: enough for data, logs and a cache; more is a design smell. */
export const MAX_VOLUMES_PER_TYPE = 8;

async function toVolume(cp: ControlPlaneContext, v: VolumeRow, names?: Map<string, string>): Promise<VolumeT> {
  const nodeName = v.nodeId === null ? null : names ? names.get(v.nodeId) ?? null : (await cp.store.nodes.byId(v.nodeId))?.name ?? null;
  return { id: v.id, appId: v.appId, name: v.name, processType: v.processType, mountPath: v.mountPath, sizeMb: v.sizeMb, nodeId: v.nodeId, nodeName, createdAt: v.createdAt };
}

async function findVolume(cp: ControlPlaneContext, organizationId: string, appId: string, nameOrId: string): Promise<VolumeRow> {
  const v = await cp.store.volumes.get(organizationId, appId, nameOrId);
  if (!v) throw notFound('volume', nameOrId);
  return v;
}

const taken = (name: string) => conflict('volume_exists', `the app already has a volume named '${name}'`, { name });

export const volumeHandlers = {
  async listVolumes({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const rows = await cp.store.volumes.list(app.organizationId, app.id);
    const names = new Map((await cp.store.nodes.list()).map((n) => [n.id, n.name]));
    return Promise.all(rows.map((v) => toVolume(cp, v, names)));
  },

  async getVolume({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    return toVolume(cp, await findVolume(cp, app.organizationId, app.id, params.volume));
  },

  async createVolume({ auth, params, body, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const existing = await cp.store.volumes.list(app.organizationId, app.id);
    if (existing.some((v) => v.name === body.name)) throw taken(body.name);
    const sameType = existing.filter((v) => v.processType === body.processType);
    const clash = sameType.find((v) => mountPathsOverlap(v.mountPath, body.mountPath));
    if (clash) {
      throw conflict('mount_path_taken', `${body.processType} already mounts volume '${clash.name}' at ${clash.mountPath}, which ${clash.mountPath === body.mountPath ? 'is' : 'overlaps'} ${body.mountPath}`,
        { volume: clash.name, mountPath: clash.mountPath });
    }
    if (sameType.length >= MAX_VOLUMES_PER_TYPE) throw conflict('too_many_volumes', `${body.processType} already mounts ${sameType.length} volumes, the most one process type may have`, { limit: MAX_VOLUMES_PER_TYPE });
    // The volume and the replacement requests are one transaction: a crash between them would
    // leave running instances that never get the mount.
    const { row, replaced } = await cp.store.transaction(async (tx) => {
      const created = await tx.volumes.create({
        id: newId('vol'), organizationId: app.organizationId, appId: app.id, name: body.name, processType: body.processType, mountPath: body.mountPath, sizeMb: body.sizeMb,
      }).catch((err: unknown) => {
        // Two creates at once: the store's unique constraints decide, with the same answers.
        if (isConflict(err, CONSTRAINTS.volumeName)) throw taken(body.name);
        if (isConflict(err, CONSTRAINTS.volumeMountPath)) throw conflict('mount_path_taken', `${body.processType} already mounts a volume at ${body.mountPath}`);
        throw err;
      });
      // Running instances of the type get it by being replaced (new instance first, as a restart):
      // the replacements are placed with the volume, and the first one pins it to its node.
      let n = 0;
      for (const i of await tx.instances.listByApp(app.organizationId, app.id)) {
        if (i.processType !== body.processType || i.desired !== 'running' || i.stopAfter !== null) continue;
        await tx.instances.update(i.id, { restartGeneration: replaceRequested(i.restartGeneration) });
        n++;
      }
      return { row: created, replaced: n };
    });
    await cp.events.record({
      organizationId: app.organizationId, appId: app.id, type: 'volume.created',
      message: `Volume ${row.name} (${row.sizeMb} MB) for ${row.processType} at ${row.mountPath} created by ${auth.user.email}`,
      data: { volumeId: row.id, name: row.name, processType: row.processType, mountPath: row.mountPath, sizeMb: row.sizeMb, replaced },
    });
    cp.logs.platform(app.id, `Volume ${row.name} created for ${row.processType} at ${row.mountPath}${replaced ? `: replacing ${replaced} ${row.processType} instance(s) to mount it` : ''}`);
    if (replaced > 0) await cp.deployer.reconcileApp(app.organizationId, app.id);
    return toVolume(cp, row);
  },

  async deleteVolume({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const v = await findVolume(cp, app.organizationId, app.id, params.volume);
    // Detached first: its process type scaled to 0 and every instance of it gone, so no process
    // still writes there when the directory is removed (and nothing half-deleted is mounted).
    const deleted = await cp.store.transaction(async (tx) => {
      const quantity = (await tx.formation.list(app.organizationId, app.id)).find((f) => f.type === v.processType)?.quantity ?? 0;
      const live = (await tx.instances.listByApp(app.organizationId, app.id)).filter((i) => i.processType === v.processType && (i.desired === 'running' || i.state !== 'stopped'));
      if (quantity > 0 || live.length > 0) {
        throw conflict('volume_in_use', `volume ${v.name} is mounted by ${v.processType} (${quantity > 0 ? `scaled to ${quantity}` : `${live.length} instance(s) still stopping`}): ` +
          `scale it to 0 first (shellwego scale ${v.processType}=0 --app ${app.name}), then destroy the volume`, { processType: v.processType, quantity, instances: live.length });
      }
      return tx.volumes.delete(app.organizationId, app.id, v.id);
    });
    if (!deleted) throw notFound('volume', params.volume);
    // The node removes the directory: a durable command (JetStream), the only path that deletes volume data.
    if (v.nodeId !== null) await cp.bus.publish(subjects.volumeDelete(v.nodeId), { nodeId: v.nodeId, volumeId: v.id, name: v.name } satisfies VolumeDeleteMessage);
    await cp.events.record({
      organizationId: app.organizationId, appId: app.id, type: 'volume.deleted', message: `Volume ${v.name} destroyed by ${auth.user.email}`,
      data: { volumeId: v.id, name: v.name, nodeId: v.nodeId },
    });
    cp.logs.platform(app.id, `Volume ${v.name} destroyed`);
    return { deleted: true };
  },
} satisfies Partial<Handlers>;
