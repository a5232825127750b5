/** ps, scale, restart, logs, events */
import type { Command } from 'commander';
import type { EventT, LogLineT } from '@shellwego/core';
import { PROCESS_TYPE_RE } from '@shellwego/core';
import { parseIntOption, parseScale } from '../args.ts';
import type { Ctx } from '../context.ts';
import { UsageError } from '../errors.ts';
import { logLine, psLines } from '../format.ts';
import { plural, withApp, withJson } from './shared.ts';
import type { AppOpts, JsonOpts } from './shared.ts';

export function registerProcesses(program: Command, ctx: Ctx): void {
  withJson(withApp(program.command('ps').description("the app's instances: state, release, restarts, address").option('--explain', 'say why each instance runs where it does, or why it is pending')))
    .action(async (opts: AppOpts & JsonOpts & { explain?: boolean }) => {
      const app = await ctx.app(opts.app);
      const instances = await (await ctx.client()).call('listInstances', { params: { app } });
      if (opts.json) return ctx.json(instances);
      if (instances.length === 0) return ctx.err(`${app} has no instances (deploy it, or scale a process type above 0)`);
      for (const l of psLines(instances, ctx.now(), opts.explain ? { explain: true } : {})) ctx.out(l);
    });

  withJson(
    withApp(
      program
        .command('scale')
        .description('set how many instances of each process type run, e.g. `scale web=2 worker=1`')
        .argument('<TYPE=COUNT...>', 'process types and counts'),
    ),
  ).action(async (pairs: string[], opts: AppOpts & JsonOpts) => {
    const quantities = parseScale(pairs);
    const app = await ctx.app(opts.app);
    const formation = await (await ctx.client()).call('scale', { params: { app }, body: { quantities } });
    if (opts.json) return ctx.json(formation);
    ctx.out(`Scaled ${app}: ${formation.map((f) => `${f.type}=${f.quantity}`).join(' ')}`);
  });

  withJson(
    withApp(
      program
        .command('restart')
        .description('restart all instances, or those of one process type')
        .argument('[type]', 'process type, e.g. web'),
    ),
  ).action(async (type: string | undefined, opts: AppOpts & JsonOpts) => {
    if (type !== undefined && !PROCESS_TYPE_RE.test(type)) throw new UsageError(`'${type}' is not a process type: lowercase words like web or worker`);
    const app = await ctx.app(opts.app);
    const r = await (await ctx.client()).call('restart', { params: { app }, body: type ? { type } : {} });
    if (opts.json) return ctx.json(r);
    ctx.out(`Restarting ${plural(r.restarted, 'instance')} of ${app}${type ? ` (${type})` : ''}`);
  });

  withJson(
    withApp(
      program
        .command('logs')
        .description("the app's recent log lines; -f to follow")
        .option('-f, --follow', 'keep printing new lines until Ctrl-C')
        .option('-n, --lines <n>', 'how many recent lines', '100'),
    ),
  ).action(async (opts: AppOpts & JsonOpts & { follow?: boolean; lines: string }) => {
    const lines = parseIntOption(opts.lines, '--lines', opts.follow ? 0 : 1, 10000);
    const app = await ctx.app(opts.app);
    const client = await ctx.client();
    const show = (l: LogLineT) => (opts.json ? ctx.out(JSON.stringify(l)) : ctx.out(logLine(l)));
    if (!opts.follow) {
      const list = await client.call('logs', { params: { app }, query: { lines } });
      if (opts.json) return ctx.json(list);
      for (const l of list) show(l);
      return;
    }
    const signal = interruptSignal(ctx);
    await follow(ctx, client.stream('followLogs', { params: { app }, query: { lines }, signal }), signal, 'line', (d) => show(d as LogLineT));
  });

  withJson(
    withApp(
      program
        .command('events')
        .description("the app's events (deploys, crashes, scaling…), newest last; -f to follow")
        .option('-f, --follow', 'keep printing new events until Ctrl-C')
        .option('-n, --limit <n>', 'how many recent events', '50'),
    ),
  ).action(async (opts: AppOpts & JsonOpts & { follow?: boolean; limit: string }) => {
    const limit = parseIntOption(opts.limit, '--limit', 1, 1000);
    const app = await ctx.app(opts.app);
    const client = await ctx.client();
    const show = (e: EventT) => (opts.json ? ctx.out(JSON.stringify(e)) : ctx.out(`${e.createdAt} ${e.type}: ${e.message}`));
    if (!opts.follow) {
      const list = await client.call('appEvents', { params: { app }, query: { limit } });
      if (opts.json) return ctx.json(list);
      for (const e of [...list].reverse()) show(e);
      return;
    }
    const signal = interruptSignal(ctx);
    await follow(ctx, client.stream('followAppEvents', { params: { app }, signal }), signal, 'event', (d) => show(d as EventT));
  });
}

/** Aborted on Ctrl-C, which ends a followed stream quietly (exit 0). */
function interruptSignal(ctx: Ctx): AbortSignal {
  const ac = new AbortController();
  const off = ctx.io.onInterrupt(() => {
    off();
    ac.abort();
  });
  return ac.signal;
}

/** With --follow and --json, each item is one JSON document per line (NDJSON). Ctrl-C ends it with exit 0. */
async function follow(ctx: Ctx, stream: AsyncIterable<{ event: string; data: unknown }>, signal: AbortSignal, event: string, show: (data: unknown) => void): Promise<void> {
  for await (const m of stream) if (m.event === event) show(m.data);
  if (!signal.aborted) ctx.err('The API closed the stream.');
}
