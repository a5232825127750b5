/** apps create|list|info|delete, open */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { Ctx } from '../context.ts';
import { ago, table } from '../format.ts';
import { findLink, writeLink } from '../link.ts';
import { confirmName, withApp, withJson } from './shared.ts';
import type { AppOpts, JsonOpts } from './shared.ts';

export function registerApps(program: Command, ctx: Ctx): void {
  const apps = program.command('apps').description('create, list, inspect and delete apps');

  withJson(
    apps
      .command('create')
      .description('create an app and link the current directory to it')
      .argument('<name>', 'app name: lowercase letters, digits and dashes (it becomes a hostname)')
      .option('--plan <plan>', 'resource plan (free, standard, performance)')
      .option('--no-link', 'do not link the current directory to the app'),
  ).action(async (name: string, opts: JsonOpts & { plan?: string; link: boolean }) => {
    const client = await ctx.client();
    const app = await client.call('createApp', { body: { name, ...(opts.plan ? { plan: opts.plan } : {}) } });
    const link = opts.link ? await linkCwd(ctx, app.name) : null;
    if (opts.json) return ctx.json(app);
    ctx.out(`Created ${app.name} (${app.plan}) — ${app.url}`);
    if (link) ctx.err(link.message);
    ctx.err(`Deploy it with: shellwego deploy${link?.linked ? '' : ` --app ${app.name}`}`);
  });

  withJson(apps.command('list').description('apps of your organization')).action(async (opts: JsonOpts) => {
    const list = await (await ctx.client()).list('listApps');
    if (opts.json) return ctx.json(list);
    if (list.length === 0) return ctx.err('No apps yet. Create one with `shellwego apps create NAME`.');
    const now = ctx.now();
    const rows = list.map((a) => [a.name, a.plan, a.currentRelease === null ? '-' : `v${a.currentRelease}`, a.url, ago(a.createdAt, now)]);
    for (const l of table(['NAME', 'PLAN', 'RELEASE', 'URL', 'CREATED'], rows)) ctx.out(l);
  });

  withJson(withApp(apps.command('info').description('details of an app'))).action(async (opts: AppOpts & JsonOpts) => {
    const name = await ctx.app(opts.app);
    const client = await ctx.client();
    const app = await client.call('getApp', { params: { app: name } });
    if (opts.json) return ctx.json(app);
    const formation = await client.call('getFormation', { params: { app: name } });
    const now = ctx.now();
    ctx.out(`=== ${app.name}`);
    const rows = [
      ['URL', app.url],
      ['Plan', app.plan],
      ['Release', app.currentRelease === null ? 'none (not deployed yet)' : `v${app.currentRelease}`],
      ['Processes', formation.length ? formation.map((f) => `${f.type}=${f.quantity}`).join(' ') : '-'],
      ['ID', app.id],
      ['Created', `${app.createdAt} (${ago(app.createdAt, now)})`],
    ];
    for (const l of table(null, rows.map(([k, v]) => [`${k}:`, v]))) ctx.out(l);
  });

  withJson(
    apps
      .command('delete')
      .alias('destroy')
      .description('delete an app and stop its instances')
      .argument('<name>', 'the app to delete')
      .option('--confirm <name>', 'the app name again, to confirm'),
  ).action(async (name: string, opts: JsonOpts & { confirm?: string }) => {
    await confirmName(ctx, opts.confirm, name, {
      refusal: `deleting ${name} destroys it and its releases`, prompt: `This deletes ${name}, its releases and instances.`, noun: 'app name',
    });
    const r = await (await ctx.client()).call('deleteApp', { params: { app: name } });
    if (opts.json) return ctx.json(r);
    ctx.out(`Deleted ${name}`);
  });

  withJson(withApp(program.command('open').description("print the app's URL (and open it when there is a display)"))).action(async (opts: AppOpts & JsonOpts) => {
    const name = await ctx.app(opts.app);
    const app = await (await ctx.client()).call('getApp', { params: { app: name } });
    if (opts.json) return ctx.json({ url: app.url });
    ctx.out(app.url);
    if (ctx.env('DISPLAY')) ctx.io.openUrl(app.url);
  });
}

/** Links cwd to `app`, except a home or root directory, where a link would capture every project below. */
async function linkCwd(ctx: Ctx, app: string): Promise<{ linked: boolean; message: string }> {
  const cwd = resolve(ctx.io.cwd);
  if (cwd === resolve(ctx.io.home) || cwd === '/') {
    return { linked: false, message: `Not linking ${cwd} (a home or root directory): \`shellwego deploy DIR --app ${app}\` links DIR` };
  }
  const existing = await findLink(cwd);
  if (existing && existing.dir === cwd && existing.app === app) return { linked: true, message: `${cwd} is linked to ${app}` };
  await writeLink(cwd, app);
  return { linked: true, message: `Linked ${cwd} to ${app}${existing && existing.dir === cwd ? ` (was ${existing.app})` : ''}` };
}
