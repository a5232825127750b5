/** domains add|list|update|remove: custom domains and their certificates. */
import type { Command } from 'commander';
import type { DomainT } from '@shellwego/core';
import type { Ctx } from '../context.ts';
import { UsageError } from '../errors.ts';
import { findLink } from '../link.ts';
import { ago, table } from '../format.ts';
import { withApp, withJson } from './shared.ts';
import type { AppOpts, JsonOpts } from './shared.ts';

const ONE_YEAR = 31_536_000;

/** `--hsts` alone means one year; `--hsts N` N seconds; `--no-hsts` 0. */
function hstsSeconds(v: string | boolean | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (v === true) return ONE_YEAR;
  if (v === false) return 0;
  if (!/^\d+$/.test(v)) throw new UsageError(`--hsts takes a max-age in seconds, got '${v}'`);
  return Number(v);
}

/** `issued, expires in 89d`, `pending`, `failed: <reason> (retry in 5m)`. */
export function certificateStatus(d: DomainT, now: number): string {
  const c = d.certificate;
  if (c === null) return 'no TLS';
  if (c.status === 'issued') {
    const exp = c.notAfter ? `expires ${c.notAfter.slice(0, 10)}` : '';
    return `issued (${c.issuer}), ${exp}${c.error ? `; renewal failing: ${c.error}` : ''}`;
  }
  if (c.status === 'failed') return `failed: ${c.error ?? 'unknown error'}${c.nextAttemptAt ? ` (retry ${retryIn(c.nextAttemptAt, now)})` : ''}`;
  return 'pending';
}

function retryIn(iso: string, now: number): string {
  const s = Math.max(0, Math.round((Date.parse(iso) - now) / 1000));
  return s < 60 ? `in ${s}s` : s < 3600 ? `in ${Math.round(s / 60)}m` : `in ${Math.round(s / 3600)}h`;
}

function flags(d: DomainT): string {
  const f: string[] = [];
  if (d.redirectHttps) f.push('redirect');
  if (d.hstsMaxAge > 0) f.push(`hsts=${d.hstsMaxAge}`);
  return f.join(',') || '-';
}

export function registerDomains(program: Command, ctx: Ctx): void {
  const domains = program.command('domains').description('custom domains of apps, with HTTPS certificates');

  withJson(withApp(
    domains
      .command('add')
      .description('route a custom domain to the app (point its DNS at this platform) and get it a certificate')
      .argument('<hostname>', 'the domain, e.g. www.example.com')
      .option('--redirect-https', 'answer plain HTTP with a redirect to HTTPS')
      .option('--hsts [seconds]', 'send Strict-Transport-Security (default max-age: one year)'),
  )).action(async (hostname: string, opts: AppOpts & JsonOpts & { redirectHttps?: boolean; hsts?: string | boolean }) => {
    const app = await ctx.app(opts.app);
    const hstsMaxAge = hstsSeconds(opts.hsts);
    const d = await (await ctx.client()).call('addDomain', {
      params: { app },
      body: { hostname, ...(opts.redirectHttps ? { redirectHttps: true } : {}), ...(hstsMaxAge !== undefined ? { hstsMaxAge } : {}) },
    });
    if (opts.json) return ctx.json(d);
    ctx.out(`Added ${d.hostname} to ${d.appName} — ${d.url}`);
    ctx.err(d.certificate ? 'The certificate is being issued; `shellwego domains list` shows its status.' : 'TLS is off on this platform: the domain is served over HTTP only.');
    ctx.err(`Point ${d.hostname}'s DNS (A/AAAA or CNAME) at this platform's router.`);
  });

  withJson(
    domains
      .command('list')
      .description("domains of an app (--app, or the linked app), else of every app of the organization")
      .option('-a, --app <name>', 'only this app'),
  ).action(async (opts: AppOpts & JsonOpts) => {
    const client = await ctx.client();
    const app = opts.app ?? (await findLink(ctx.io.cwd))?.app;
    const list = app ? await client.call('listDomains', { params: { app } }) : await client.call('listAllDomains');
    if (opts.json) return ctx.json(list);
    if (list.length === 0) return ctx.err(`No custom domains${app ? ` for ${app}` : ''}. Add one with \`shellwego domains add HOSTNAME --app NAME\`.`);
    const now = ctx.now();
    const rows = list.map((d) => [d.hostname, d.appName, certificateStatus(d, now), flags(d), ago(d.createdAt, now)]);
    for (const l of table(['DOMAIN', 'APP', 'CERTIFICATE', 'OPTIONS', 'ADDED'], rows)) ctx.out(l);
  });

  withJson(withApp(
    domains
      .command('update')
      .description("change a domain's HTTPS redirect and HSTS")
      .argument('<hostname>', 'the domain')
      .option('--redirect-https', 'redirect plain HTTP to HTTPS')
      .option('--no-redirect-https', 'stop redirecting')
      .option('--hsts [seconds]', 'send Strict-Transport-Security (default max-age: one year)')
      .option('--no-hsts', 'stop sending Strict-Transport-Security'),
  )).action(async (hostname: string, opts: AppOpts & JsonOpts & { redirectHttps?: boolean; hsts?: string | boolean }) => {
    const app = await ctx.app(opts.app);
    const hstsMaxAge = hstsSeconds(opts.hsts);
    if (opts.redirectHttps === undefined && hstsMaxAge === undefined) throw new UsageError('nothing to change: give --[no-]redirect-https and/or --hsts [seconds] / --no-hsts');
    const d = await (await ctx.client()).call('updateDomain', {
      params: { app, domain: hostname },
      body: { ...(opts.redirectHttps !== undefined ? { redirectHttps: opts.redirectHttps } : {}), ...(hstsMaxAge !== undefined ? { hstsMaxAge } : {}) },
    });
    if (opts.json) return ctx.json(d);
    ctx.out(`${d.hostname}: redirect to HTTPS ${d.redirectHttps ? 'on' : 'off'}, HSTS ${d.hstsMaxAge > 0 ? `max-age=${d.hstsMaxAge}` : 'off'}`);
  });

  withJson(withApp(
    domains
      .command('remove')
      .alias('rm')
      .description('stop routing a domain to the app and drop its certificate')
      .argument('<hostname>', 'the domain'),
  )).action(async (hostname: string, opts: AppOpts & JsonOpts) => {
    const app = await ctx.app(opts.app);
    const r = await (await ctx.client()).call('removeDomain', { params: { app, domain: hostname } });
    if (opts.json) return ctx.json(r);
    ctx.out(`Removed ${hostname} from ${app}`);
  });
}
