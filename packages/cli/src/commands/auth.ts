/** login, logout, whoami */
import type { Command } from 'commander';
import type { Ctx } from '../context.ts';
import { DEFAULT_API_URL, normalizeUrl } from '../context.ts';
import { deleteStoredLogin, writeStoredLogin } from '../config-file.ts';
import { UsageError } from '../errors.ts';
import { withJson } from './shared.ts';
import type { JsonOpts } from './shared.ts';

interface LoginOpts {
  email?: string;
  password?: string;
  api?: string;
  org?: string;
}

export function registerAuth(program: Command, ctx: Ctx): void {
  program
    .command('login')
    .description('log in and store a token for this API')
    .option('--email <email>', 'account email (prompted for on a terminal)')
    .option('--password <password>', 'password (prompted for on a terminal; or SHELLWEGO_PASSWORD)')
    .option('--api <url>', `API URL (default: SHELLWEGO_API_URL, the stored login's, or ${DEFAULT_API_URL})`)
    .option('--org <name>', 'organization to act in (default: your first)')
    .option('--json', 'print the login response (including the token) as JSON')
    .action(async (opts: LoginOpts & JsonOpts) => {
      const stored = await ctx.storedLogin();
      const apiUrl = normalizeUrl(opts.api ?? ctx.env('SHELLWEGO_API_URL') ?? stored?.apiUrl ?? DEFAULT_API_URL);
      const email = opts.email ?? (await ask(ctx, 'Email: ', false, '--email'));
      const password = opts.password ?? ctx.env('SHELLWEGO_PASSWORD') ?? (await ask(ctx, 'Password: ', true, '--password'));
      const client = ctx.newClient(apiUrl);
      const r = await client.call('login', { body: { email, password, ...(opts.org ? { organization: opts.org } : {}) } });
      await writeStoredLogin(ctx.configFile, { apiUrl, token: r.token, email: r.user.email, organization: r.organization.name });
      if (opts.json) ctx.json(r);
      else ctx.out(`Logged in to ${apiUrl} as ${r.user.email} (organization ${r.organization.name}, ${r.role})`);
      if (ctx.env('SHELLWEGO_TOKEN')) ctx.err('note: SHELLWEGO_TOKEN is set and overrides this login');
    });

  program
    .command('logout')
    .description('forget the stored login')
    .action(async () => {
      const stored = await ctx.storedLogin();
      const removed = await deleteStoredLogin(ctx.configFile);
      ctx.out(removed && stored ? `Logged out of ${stored.apiUrl}` : 'Not logged in');
      if (ctx.env('SHELLWEGO_TOKEN')) ctx.err('note: SHELLWEGO_TOKEN is still set in the environment');
    });

  withJson(program.command('whoami').description('who the current token belongs to')).action(async (opts: JsonOpts) => {
    const client = await ctx.client();
    const me = await client.call('me');
    if (opts.json) return ctx.json(me);
    const s = await ctx.resolveSession();
    ctx.out(me.user.email);
    ctx.err(`organization ${me.organization.name} (${me.role})${me.platformAdmin ? ', platform admin' : ''} at ${s.apiUrl}${s.tokenSource === 'env' ? ' (token from SHELLWEGO_TOKEN)' : ''}`);
  });
}

async function ask(ctx: Ctx, question: string, hidden: boolean, flag: string): Promise<string> {
  if (!ctx.io.stdinIsTTY) throw new UsageError(`give ${flag} (there is no terminal to ask on)`);
  const v = (await ctx.io.prompt(question, { hidden })).trim();
  if (!v) throw new UsageError(`${flag.slice(2)} is required`);
  return v;
}
