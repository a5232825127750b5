/** tokens, orgs, members (nodes: nodes.ts) */
import type { Command } from 'commander';
import { parseIntOption, parseRole, parseScopes } from '../args.ts';
import type { Ctx } from '../context.ts';
import { CliError } from '../errors.ts';
import { ago, table } from '../format.ts';
import { withJson } from './shared.ts';
import type { JsonOpts } from './shared.ts';

export function registerAccount(program: Command, ctx: Ctx): void {
  const tokens = program.command('tokens').description('API tokens for scripts and CI');

  withJson(
    tokens
      .command('create')
      .description('create a token; its secret is printed once, alone on stdout')
      .argument('<name>', 'a name to recognise it by')
      .option('--scope <scope>', 'what it may do (repeatable): apps:read, apps:write, apps:deploy, orgs:read, orgs:admin, tokens:manage, platform:admin, *', collect, [])
      .option('--expires-in-days <days>', 'expire after this many days (default: never)'),
  ).action(async (name: string, opts: JsonOpts & { scope: string[]; expiresInDays?: string }) => {
    const scopes = parseScopes(opts.scope);
    const expiresInDays = opts.expiresInDays === undefined ? undefined : parseIntOption(opts.expiresInDays, '--expires-in-days', 1, 3650);
    const r = await (await ctx.client()).call('createToken', { body: { name, scopes, ...(expiresInDays ? { expiresInDays } : {}) } });
    if (opts.json) return ctx.json(r);
    ctx.err(`Created token ${r.token.name} (${r.token.id}) with ${r.token.scopes.join(', ')}${r.token.expiresAt ? `, expiring ${r.token.expiresAt}` : ''}.`);
    ctx.err('The secret below is shown only this once; use it as SHELLWEGO_TOKEN:');
    ctx.out(r.secret);
  });

  withJson(tokens.command('list').description('your tokens (not their secrets)')).action(async (opts: JsonOpts) => {
    const list = await (await ctx.client()).call('listTokens');
    if (opts.json) return ctx.json(list);
    if (list.length === 0) return ctx.err('No tokens. Create one with `shellwego tokens create NAME --scope apps:deploy`');
    const now = ctx.now();
    const rows = list.map((t) => [t.id, t.name, t.scopes.join(','), t.expiresAt ? t.expiresAt.slice(0, 10) : 'never', t.lastUsedAt ? ago(t.lastUsedAt, now) : 'never', ago(t.createdAt, now)]);
    for (const l of table(['ID', 'NAME', 'SCOPES', 'EXPIRES', 'LAST USED', 'CREATED'], rows)) ctx.out(l);
  });

  withJson(tokens.command('revoke').description('revoke a token').argument('<id>', 'token id (from `tokens list`)')).action(async (id: string, opts: JsonOpts) => {
    const r = await (await ctx.client()).call('deleteToken', { params: { token: id } });
    if (opts.json) return ctx.json(r);
    ctx.out(`Revoked token ${id}`);
  });

  const orgs = program.command('orgs').description('organizations you belong to');
  withJson(orgs.command('list').description('your organizations; * marks the current one')).action(async (opts: JsonOpts) => {
    const client = await ctx.client();
    const list = await client.call('listOrganizations');
    if (opts.json) return ctx.json(list);
    const current = await client.call('me').then((m) => m.organization.id, () => null);
    const now = ctx.now();
    const rows = list.map((o) => [o.id === current ? '*' : ' ', o.name, o.role, o.id, ago(o.createdAt, now)]);
    for (const l of table(['', 'NAME', 'ROLE', 'ID', 'CREATED'], rows)) ctx.out(l);
  });

  const members = program.command('members').description('members of the current organization');
  withJson(members.command('list').description('members and their roles')).action(async (opts: JsonOpts) => {
    const list = await (await ctx.client()).call('listMembers');
    if (opts.json) return ctx.json(list);
    const now = ctx.now();
    for (const l of table(['EMAIL', 'ROLE', 'USER ID', 'SINCE'], list.map((m) => [m.email, m.role, m.userId, ago(m.createdAt, now)]))) ctx.out(l);
  });

  withJson(
    members
      .command('add')
      .description('add a user (creating the account if needed) with a role')
      .argument('<email>')
      .option('--role <role>', 'viewer, developer, admin or owner'),
  ).action(async (email: string, opts: JsonOpts & { role?: string }) => {
    const role = parseRole(opts.role);
    const r = await (await ctx.client()).call('addMember', { body: { email, role } });
    if (opts.json) return ctx.json(r);
    ctx.out(`Added ${r.member.email} as ${r.member.role}`);
    if (r.initialPassword) {
      ctx.err('A new account was created. Its initial password, shown only this once:');
      ctx.out(r.initialPassword);
    }
  });

  withJson(
    members
      .command('update')
      .description("change a member's role")
      .argument('<email>')
      .option('--role <role>', 'viewer, developer, admin or owner'),
  ).action(async (email: string, opts: JsonOpts & { role?: string }) => {
    const role = parseRole(opts.role);
    const client = await ctx.client();
    const userId = await memberId(client, email);
    const m = await client.call('updateMember', { params: { user: userId }, body: { role } });
    if (opts.json) return ctx.json(m);
    ctx.out(`${m.email} is now ${m.role}`);
  });

  withJson(members.command('remove').description('remove a member from the organization').argument('<email>')).action(async (email: string, opts: JsonOpts) => {
    const client = await ctx.client();
    const userId = await memberId(client, email);
    const r = await client.call('removeMember', { params: { user: userId } });
    if (opts.json) return ctx.json(r);
    ctx.out(`Removed ${email}`);
  });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** The API addresses members by user id; people know them by email. */
async function memberId(client: Awaited<ReturnType<Ctx['client']>>, email: string): Promise<string> {
  const want = email.trim().toLowerCase();
  const m = (await client.call('listMembers')).find((x) => x.email.toLowerCase() === want);
  if (!m) throw new CliError(`${email} is not a member of this organization`, 'not_found');
  return m.userId;
}
