/** webhooks (add|list|remove): GitHub/GitLab pushes that deploy the app */
import type { Command } from 'commander';
import { WEBHOOK_PROVIDERS } from '@shellwego/core';
import type { Ctx } from '../context.ts';
import { UsageError } from '../errors.ts';
import { ago, table } from '../format.ts';
import { withApp, withJson } from './shared.ts';
import type { AppOpts, JsonOpts } from './shared.ts';

type Provider = (typeof WEBHOOK_PROVIDERS)[number];

function parseProvider(value: string | undefined): Provider {
  if (!value) throw new UsageError(`--provider is required: ${WEBHOOK_PROVIDERS.join(' or ')}`);
  const p = value.toLowerCase();
  if (!(WEBHOOK_PROVIDERS as readonly string[]).includes(p)) throw new UsageError(`unknown provider '${value}': use ${WEBHOOK_PROVIDERS.join(' or ')}`);
  return p as Provider;
}

export function registerWebhooks(program: Command, ctx: Ctx): void {
  const hooks = program.command('webhooks').description('GitHub/GitLab webhooks: a push to a branch of a repository deploys the app');

  withJson(
    withApp(
      hooks
        .command('add')
        .description('add a webhook; prints the payload URL and the secret (shown only this once) to enter at the provider')
        .option('--provider <provider>', 'github or gitlab')
        .option('--repo <url>', 'https://, http:// or git:// URL to fetch from (for a private repository: https://USER:TOKEN@host/…)')
        .option('--branch <branch>', 'the branch whose pushes deploy', 'main')
        .option('--secret <secret>', 'use this secret (16+ characters) instead of a generated one'),
    ),
  ).action(async (opts: AppOpts & JsonOpts & { provider?: string; repo?: string; branch: string; secret?: string }) => {
    const provider = parseProvider(opts.provider);
    if (!opts.repo) throw new UsageError('--repo is required: the repository URL to fetch from');
    const app = await ctx.app(opts.app);
    const h = await (await ctx.client()).call('createWebhook', {
      params: { app },
      body: { provider, repository: opts.repo, branch: opts.branch, ...(opts.secret ? { secret: opts.secret } : {}) },
    });
    if (opts.json) return ctx.json(h);
    ctx.err(`Added ${provider} webhook ${h.id}: pushes to ${h.branch} of ${h.repository} deploy ${app}.`);
    if (provider === 'github') {
      ctx.err('In the repository: Settings → Webhooks → Add webhook, content type application/json, "Just the push event":');
      ctx.out(`Payload URL:  ${h.url}`);
      ctx.out(`Secret:       ${h.secret}`);
    } else {
      ctx.err('In the project: Settings → Webhooks → Add new webhook, trigger "Push events":');
      ctx.out(`URL:          ${h.url}`);
      ctx.out(`Secret token: ${h.secret}`);
    }
    ctx.err('The secret is shown only this once. The URL must be reachable from the provider.');
  });

  withJson(withApp(hooks.command('list').description("the app's webhooks and their last delivery"))).action(async (opts: AppOpts & JsonOpts) => {
    const app = await ctx.app(opts.app);
    const list = await (await ctx.client()).call('listWebhooks', { params: { app } });
    if (opts.json) return ctx.json(list);
    if (list.length === 0) return ctx.err(`${app} has no webhooks. Add one with \`shellwego webhooks add --provider github --repo URL\``);
    const now = ctx.now();
    const rows = list.map((h) => [
      h.id, h.provider, h.repository, h.branch,
      h.lastDelivery ? `${h.lastDelivery.status} ${ago(h.lastDelivery.createdAt, now)}: ${h.lastDelivery.message}` : 'none yet',
    ]);
    for (const l of table(['ID', 'PROVIDER', 'REPOSITORY', 'BRANCH', 'LAST DELIVERY'], rows)) ctx.out(l);
  });

  withJson(withApp(hooks.command('remove').description('remove a webhook (deliveries to its URL are refused from then on)').argument('<id>', 'webhook id (from `webhooks list`)')))
    .action(async (id: string, opts: AppOpts & JsonOpts) => {
      const app = await ctx.app(opts.app);
      const r = await (await ctx.client()).call('deleteWebhook', { params: { app, hook: id } });
      if (opts.json) return ctx.json(r);
      ctx.out(`Removed webhook ${id} from ${app}`);
    });
}
