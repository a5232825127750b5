import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { forbidden, newId, roleAtLeast, unauthorized } from '@shellwego/core';
import type { RouteDef, Role } from '@shellwego/core';
import type { OrganizationRow, Store, UserRow } from '@shellwego/store';
import { generatePassword, hashPassword, hashToken, newTokenSecret } from './passwords.ts';

export interface AuthContext {
  user: UserRow;
  organization: OrganizationRow;
  role: Role;
  scopes: string[];
  tokenId: string;
}

const SESSION_DAYS = 30;

/** Resolves a bearer token to who is calling and in which organization. */
export async function authenticate(store: Store, header: string | undefined): Promise<AuthContext> {
  const m = /^Bearer\s+(\S+)$/i.exec(header ?? '');
  if (!m) throw unauthorized('missing bearer token: log in with `shellwego login` or pass Authorization: Bearer <token>');
  const token = await store.tokens.byHash(hashToken(m[1]));
  if (!token) throw unauthorized('invalid token');
  const now = new Date().toISOString();
  if (token.expiresAt && token.expiresAt <= now) throw unauthorized('token expired: log in again');
  const [user, organization, membership] = await Promise.all([
    store.users.byId(token.userId),
    store.organizations.byId(token.organizationId),
    store.memberships.get(token.organizationId, token.userId),
  ]);
  if (!user || !organization) throw unauthorized('invalid token');
  if (!membership) throw unauthorized('you are no longer a member of this organization');
  // last-used is informational: don't turn every read into a write.
  if (!token.lastUsedAt || Date.parse(now) - Date.parse(token.lastUsedAt) > 60_000) void store.tokens.touch(token.id, now).catch(() => {});
  return { user, organization, role: membership.role, scopes: token.scopes, tokenId: token.id };
}

/** Scopes narrow a token; roles bound what the user may do at all. Both must allow the route. */
export function authorize(def: RouteDef, auth: AuthContext): void {
  if (def.scope === 'platform:admin') {
    if (!auth.user.platformAdmin) throw forbidden('this needs a platform operator account');
  }
  if (def.scope && !auth.scopes.includes('*') && !auth.scopes.includes(def.scope)) {
    throw forbidden(`this token lacks the '${def.scope}' scope`, { required: def.scope, scopes: auth.scopes });
  }
  if (def.role && !roleAtLeast(auth.role, def.role)) {
    throw forbidden(`this needs the ${def.role} role or higher in ${auth.organization.name} (you are ${auth.role})`, { required: def.role, role: auth.role });
  }
}

export async function issueToken(store: Store, t: { userId: string; organizationId: string; name: string; scopes: string[]; kind: 'session' | 'api'; expiresInDays?: number }) {
  const secret = newTokenSecret();
  const days = t.expiresInDays ?? (t.kind === 'session' ? SESSION_DAYS : undefined);
  const row = await store.tokens.create({
    id: newId('tok'), userId: t.userId, organizationId: t.organizationId, name: t.name, tokenHash: hashToken(secret),
    scopes: t.scopes, kind: t.kind, expiresAt: days ? new Date(Date.now() + days * 86_400_000).toISOString() : null,
  });
  return { row, secret };
}

export interface BootstrapResult {
  created: boolean;
  email: string;
  /** Only when generated on this start; printed once. */
  generatedPassword: string | null;
  passwordFile: string | null;
}

/**
 * First start: create the owner account and its organization. The password comes from the
 * environment or is generated, printed once, and written to a 0600 file in the data dir.
 */
export async function bootstrapOwner(store: Store, opts: { email: string; password?: string; passwordFile: string }): Promise<BootstrapResult> {
  if ((await store.users.count()) > 0) return { created: false, email: opts.email, generatedPassword: null, passwordFile: null };
  const password = opts.password || generatePassword();
  const passwordHash = await hashPassword(password);
  await store.transaction(async (tx) => {
    const user = await tx.users.create({ id: newId('usr'), email: opts.email.toLowerCase(), passwordHash, platformAdmin: true });
    const org = await tx.organizations.create({ id: newId('org'), name: 'default' });
    await tx.memberships.add({ id: newId('mem'), organizationId: org.id, userId: user.id, role: 'owner' });
  });
  if (opts.password) return { created: true, email: opts.email, generatedPassword: null, passwordFile: null };
  await mkdir(dirname(opts.passwordFile), { recursive: true });
  await writeFile(opts.passwordFile, password + '\n', { mode: 0o600 });
  return { created: true, email: opts.email, generatedPassword: password, passwordFile: opts.passwordFile };
}
