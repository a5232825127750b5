/** volumes (list|create|info|destroy): persistent directories mounted into a process type's instances */
import type { Command } from 'commander';
import type { VolumeT } from '@shellwego/core';
import type { Ctx } from '../context.ts';
import { UsageError } from '../errors.ts';
import { ago, table } from '../format.ts';
import { confirmName, withApp, withJson } from './shared.ts';
import type { AppOpts, JsonOpts } from './shared.ts';

const where = (v: VolumeT) => (v.nodeId === null ? 'not placed yet' : v.nodeName ?? v.nodeId);

function parseSize(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new UsageError(`--size must be a whole number of MB, got '${value}'`);
  return Number(value);
}

export function registerVolumes(program: Command, ctx: Ctx): void {
  const volumes = program.command('volumes').description('persistent volumes: a directory on one node, mounted into every instance of a process type there');

  withJson(withApp(volumes.command('list', { isDefault: true }).description("the app's volumes and the node each lives on"))).action(async (opts: AppOpts & JsonOpts) => {
    const app = await ctx.app(opts.app);
    const list = await (await ctx.client()).call('listVolumes', { params: { app } });
    if (opts.json) return ctx.json(list);
    if (list.length === 0) return ctx.err(`${app} has no volumes. Create one with \`shellwego volumes create NAME --process web --mount /data\``);
    const now = ctx.now();
    const rows = list.map((v) => [v.name, v.processType, v.mountPath, `${v.sizeMb} MB`, where(v), ago(v.createdAt, now)]);
    for (const l of table(['NAME', 'PROCESS', 'MOUNT', 'SIZE', 'NODE', 'CREATED'], rows)) ctx.out(l);
  });

  withJson(withApp(
    volumes
      .command('create')
      .description('create a volume; running instances of the process type are replaced to mount it, and it stays on the node of the first one placed')
      .argument('<name>', 'volume name (lowercase letters, digits and dashes)')
      .option('--process <type>', 'the process type it is mounted into (e.g. web, worker)')
      .option('--mount <path>', 'absolute path inside the app sandbox (e.g. /data)')
      .option('--size <mb>', 'size limit in MB (recorded; not enforced yet)'),
  )).action(async (name: string, opts: AppOpts & JsonOpts & { process?: string; mount?: string; size?: string }) => {
    if (!opts.process) throw new UsageError('--process is required: the process type that mounts the volume (e.g. web)');
    if (!opts.mount) throw new UsageError('--mount is required: where the volume appears inside the sandbox (e.g. /data)');
    const sizeMb = parseSize(opts.size);
    const app = await ctx.app(opts.app);
    const v = await (await ctx.client()).call('createVolume', {
      params: { app }, body: { name, processType: opts.process, mountPath: opts.mount, ...(sizeMb !== undefined ? { sizeMb } : {}) },
    });
    if (opts.json) return ctx.json(v);
    ctx.out(`Created volume ${v.name} (${v.sizeMb} MB) for ${v.processType} of ${app}, mounted at ${v.mountPath}`);
    ctx.err(`It lives on the node its first ${v.processType} instance is placed on, and its ${v.processType} instances stay there.`);
  });

  withJson(withApp(volumes.command('info').description('one volume').argument('<name>', 'volume name or id'))).action(async (name: string, opts: AppOpts & JsonOpts) => {
    const app = await ctx.app(opts.app);
    const v = await (await ctx.client()).call('getVolume', { params: { app, volume: name } });
    if (opts.json) return ctx.json(v);
    const rows: [string, string][] = [
      ['Name', v.name], ['Id', v.id], ['App', app], ['Process', v.processType], ['Mount', v.mountPath], ['Size', `${v.sizeMb} MB`],
      ['Node', v.nodeId === null ? 'not placed yet (pinned to the node of its first instance)' : `${v.nodeName ?? '?'} (${v.nodeId})`], ['Created', v.createdAt],
    ];
    for (const l of table(null, rows.map(([k, val]) => [`${k}:`, val]))) ctx.out(l);
  });

  withJson(withApp(
    volumes
      .command('destroy')
      .alias('delete')
      .description('destroy a volume and its data (its process type must be scaled to 0 first)')
      .argument('<name>', 'volume name or id')
      .option('--confirm <name>', 'the volume name again, to confirm'),
  )).action(async (name: string, opts: AppOpts & JsonOpts & { confirm?: string }) => {
    const app = await ctx.app(opts.app);
    await confirmName(ctx, opts.confirm, name, {
      refusal: `destroying volume ${name} deletes its data for good`, prompt: `This deletes volume ${name} of ${app} and all its data.`, noun: 'volume name',
    });
    const r = await (await ctx.client()).call('deleteVolume', { params: { app, volume: name } });
    if (opts.json) return ctx.json(r);
    ctx.out(`Destroyed volume ${name} of ${app}`);
  });
}
