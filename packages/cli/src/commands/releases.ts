/** config (list|get|set|unset), releases, rollback, builds */
import type { Command } from 'commander';
import type { ReleaseT } from '@shellwego/core';
import { parseConfigKeys, parseConfigPairs, parseReleaseVersion } from '../args.ts';
import type { Ctx } from '../context.ts';
import { CliError } from '../errors.ts';
import { ago, table } from '../format.ts';
import { withApp, withJson } from './shared.ts';
import type { AppOpts, JsonOpts } from './shared.ts';

/**
 * How `config` shows a value unless `--reveal` is given: values of 16 characters or more show
 * their first 4 characters and `…` (enough to tell `postgres://…` from `redis://…`, never more
 * than a quarter of the value); shorter values, which a prefix would give away, are `********`.
 */
export function maskValue(value: string): string {
  return value.length >= 16 ? `${value.slice(0, 4)}…` : '********';
}

export function registerReleases(program: Command, ctx: Ctx): void {
  const config = withJson(withApp(program.command('config').description("the app's config vars (environment); `config` alone lists them, values masked")))
    .option('--reveal', 'show the values in full');
  config.action(async (opts: AppOpts & JsonOpts & { reveal?: boolean }) => {
    const app = await ctx.app(opts.app);
    const vars = await (await ctx.client()).call('getConfig', { params: { app } });
    if (opts.json) return ctx.json(vars);
    const keys = Object.keys(vars).sort();
    if (keys.length === 0) return ctx.err(`${app} has no config vars. Set one with \`shellwego config set KEY=VALUE\``);
    ctx.out(`=== ${app} config vars`);
    for (const l of table(null, keys.map((k) => [`${k}:`, opts.reveal ? vars[k] : maskValue(vars[k])]))) ctx.out(l);
    if (!opts.reveal) ctx.err('Values are masked: `--reveal` shows them, `config get KEY` prints one.');
  });

  // `config`'s own --app/--json also match after a subcommand, so subcommands read the merged options.
  withJson(withApp(config.command('get').description('print one config value').argument('<key>'))).action(async (key: string, _o: unknown, cmd: Command) => {
    const opts = cmd.optsWithGlobals<AppOpts & JsonOpts>();
    const app = await ctx.app(opts.app);
    const vars = await (await ctx.client()).call('getConfig', { params: { app } });
    if (!(key in vars)) throw new CliError(`${key} is not set on ${app}`, 'not_set');
    if (opts.json) return ctx.json(vars[key]);
    ctx.out(vars[key]);
  });

  withJson(
    withApp(config.command('set').description('set config vars; creates a release when the app is deployed').argument('<KEY=VALUE...>', 'values may contain = and be empty')),
  ).action(async (pairs: string[], _o: unknown, cmd: Command) => {
    const opts = cmd.optsWithGlobals<AppOpts & JsonOpts>();
    const vars = parseConfigPairs(pairs);
    const app = await ctx.app(opts.app);
    const r = await (await ctx.client()).call('updateConfig', { params: { app }, body: { vars } });
    if (opts.json) return ctx.json(r);
    ctx.out(`Set ${Object.keys(vars).join(', ')} on ${app}${releaseNote(r.release)}`);
  });

  withJson(withApp(config.command('unset').description('remove config vars').argument('<KEY...>'))).action(async (keys: string[], _o: unknown, cmd: Command) => {
    const opts = cmd.optsWithGlobals<AppOpts & JsonOpts>();
    const names = parseConfigKeys(keys);
    const app = await ctx.app(opts.app);
    const vars = Object.fromEntries(names.map((k) => [k, null]));
    const r = await (await ctx.client()).call('updateConfig', { params: { app }, body: { vars } });
    if (opts.json) return ctx.json(r);
    ctx.out(`Unset ${names.join(', ')} on ${app}${releaseNote(r.release)}`);
  });

  withJson(withApp(program.command('releases').description("the app's releases, newest first"))).action(async (opts: AppOpts & JsonOpts) => {
    const app = await ctx.app(opts.app);
    const list = await (await ctx.client()).call('listReleases', { params: { app } });
    if (opts.json) return ctx.json(list);
    if (list.length === 0) return ctx.err(`${app} has no releases yet: deploy it with \`shellwego deploy\``);
    const now = ctx.now();
    const rows = list.map((r) => [r.current ? '*' : ' ', `v${r.version}`, r.description, r.createdBy ?? '-', ago(r.createdAt, now)]);
    for (const l of table(['', 'VERSION', 'DESCRIPTION', 'BY', 'CREATED'], rows)) ctx.out(l);
  });

  withJson(
    withApp(program.command('rollback').description('release an earlier version again (default: the one before the current)').argument('[version]', 'v3 or 3')),
  ).action(async (version: string | undefined, opts: AppOpts & JsonOpts) => {
    const target = version === undefined ? undefined : parseReleaseVersion(version);
    const app = await ctx.app(opts.app);
    const r = await (await ctx.client()).call('rollback', { params: { app }, body: target === undefined ? {} : { version: target } });
    if (opts.json) return ctx.json(r);
    ctx.out(`Rolled back ${app}: v${r.version} (${r.description})`);
  });

  const builds = withJson(withApp(program.command('builds').description("the app's builds, newest first")));
  builds.action(async (opts: AppOpts & JsonOpts) => {
    const app = await ctx.app(opts.app);
    const list = await (await ctx.client()).call('listBuilds', { params: { app } });
    if (opts.json) return ctx.json(list);
    if (list.length === 0) return ctx.err(`${app} has no builds yet: deploy it with \`shellwego deploy\``);
    const now = ctx.now();
    const rows = list.map((b) => [
      b.id,
      b.state,
      b.stack ?? '-',
      b.releaseVersion === null ? '-' : `v${b.releaseVersion}`,
      b.cacheHit === null ? '-' : b.cacheHit ? 'hit' : 'miss',
      ago(b.createdAt, now),
    ]);
    for (const l of table(['ID', 'STATE', 'STACK', 'RELEASE', 'CACHE', 'CREATED'], rows)) ctx.out(l);
  });

  withApp(builds.command('log').description("a build's output (live while it runs)").argument('<build>', 'build id')).action(async (build: string, _o: unknown, cmd: Command) => {
    const opts = cmd.optsWithGlobals<AppOpts>();
    const app = await ctx.app(opts.app);
    for await (const m of (await ctx.client()).stream('buildLog', { params: { app, build } })) {
      if (m.event === 'line') ctx.out(String((m.data as { line?: unknown })?.line ?? m.data));
      else if (m.event === 'end') {
        const b = m.data as { state?: string; error?: string | null };
        ctx.err(`Build ${b.state}${b.error ? `: ${b.error}` : ''}`);
      }
    }
  });
}

function releaseNote(release: ReleaseT | null): string {
  return release ? ` and released v${release.version}` : ' (takes effect on the next deploy)';
}
