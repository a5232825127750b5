import { PLANS, conflict, forbidden, newId, notFound, unauthorized } from '@shellwego/core';
import type { Handlers } from '../http.ts';
import { issueToken } from '../auth.ts';
import { generatePassword, hashPassword, verifyPassword } from '../passwords.ts';
import { toMember, toOrg, toToken, toUser } from './convert.ts';

// A fixed hash to compare against when the email is unknown, so timing does not reveal accounts.
const DUMMY_HASH = 'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';

export const identityHandlers = {
  async health({ cp }) {
    return { ok: true, version: cp.settings.version };
  },

  async login({ body, cp }) {
    const user = await cp.store.users.byEmail(body.email);
    const ok = await verifyPassword(body.password, user?.passwordHash ?? DUMMY_HASH);
    if (!user || !ok) throw unauthorized('wrong email or password');
    const orgs = await cp.store.organizations.listForUser(user.id);
    const org = body.organization ? orgs.find((o) => o.name === body.organization || o.id === body.organization) : orgs[0];
    if (!org) throw body.organization ? notFound('organization', body.organization) : forbidden('this account belongs to no organization');
    const { secret } = await issueToken(cp.store, { userId: user.id, organizationId: org.id, name: 'login session', scopes: ['*'], kind: 'session' });
    return { token: secret, user: toUser(user), organization: toOrg(org), role: org.role };
  },

  async me({ auth }) {
    return { user: toUser(auth.user), organization: toOrg(auth.organization), role: auth.role, scopes: auth.scopes, platformAdmin: auth.user.platformAdmin };
  },

  async listOrganizations({ auth, cp }) {
    return (await cp.store.organizations.listForUser(auth.user.id)).map((o) => ({ ...toOrg(o), role: o.role }));
  },

  async createOrganization({ auth, body, cp }) {
    if (await cp.store.organizations.byName(body.name)) throw conflict('name_taken', `an organization named '${body.name}' already exists`);
    const org = await cp.store.transaction(async (tx) => {
      const o = await tx.organizations.create({ id: newId('org'), name: body.name });
      await tx.memberships.add({ id: newId('mem'), organizationId: o.id, userId: auth.user.id, role: 'owner' });
      return o;
    });
    return toOrg(org);
  },

  async listMembers({ auth, cp }) {
    return (await cp.store.memberships.list(auth.organization.id)).map(toMember);
  },

  async addMember({ auth, body, cp }) {
    if (body.role === 'owner' && auth.role !== 'owner') throw forbidden('only owners can add owners');
    let initialPassword: string | null = null;
    const member = await cp.store.transaction(async (tx) => {
      let user = await tx.users.byEmail(body.email);
      if (!user) {
        initialPassword = generatePassword();
        user = await tx.users.create({ id: newId('usr'), email: body.email, passwordHash: await hashPassword(initialPassword), platformAdmin: false });
      }
      if (await tx.memberships.get(auth.organization.id, user.id)) throw conflict('already_member', `${body.email} is already a member`);
      return tx.memberships.add({ id: newId('mem'), organizationId: auth.organization.id, userId: user.id, role: body.role });
    });
    return { member: toMember(member), initialPassword };
  },

  async updateMember({ auth, params, body, cp }) {
    const m = await cp.store.memberships.get(auth.organization.id, params.user);
    if (!m) throw notFound('member', params.user);
    if ((m.role === 'owner' || body.role === 'owner') && auth.role !== 'owner') throw forbidden('only owners can change owners');
    if (m.role === 'owner' && body.role !== 'owner' && (await cp.store.memberships.countOwners(auth.organization.id)) <= 1) {
      throw conflict('last_owner', 'an organization needs at least one owner');
    }
    const updated = await cp.store.memberships.updateRole(auth.organization.id, params.user, body.role);
    return toMember(updated!);
  },

  async removeMember({ auth, params, cp }) {
    const m = await cp.store.memberships.get(auth.organization.id, params.user);
    if (!m) throw notFound('member', params.user);
    if (m.role === 'owner' && auth.role !== 'owner') throw forbidden('only owners can remove owners');
    if (m.role === 'owner' && (await cp.store.memberships.countOwners(auth.organization.id)) <= 1) throw conflict('last_owner', 'an organization needs at least one owner');
    return { removed: await cp.store.memberships.remove(auth.organization.id, params.user) };
  },

  async listTokens({ auth, cp }) {
    return (await cp.store.tokens.listForUser(auth.organization.id, auth.user.id)).map(toToken);
  },

  async createToken({ auth, body, cp }) {
    // A token can never do more than the token that created it.
    if (!auth.scopes.includes('*')) {
      const extra = body.scopes.filter((s) => s === '*' || !auth.scopes.includes(s));
      if (extra.length) throw forbidden(`cannot grant scopes this token does not have: ${extra.join(', ')}`);
    }
    if (body.scopes.includes('platform:admin') && !auth.user.platformAdmin) throw forbidden('only platform operators can grant platform:admin');
    const { row, secret } = await issueToken(cp.store, { userId: auth.user.id, organizationId: auth.organization.id, name: body.name, scopes: body.scopes, kind: 'api', expiresInDays: body.expiresInDays });
    return { token: toToken(row), secret };
  },

  async deleteToken({ auth, params, cp }) {
    const deleted = await cp.store.tokens.delete(auth.organization.id, auth.user.id, params.token);
    if (!deleted) throw notFound('token', params.token);
    return { deleted };
  },

  async listPlans() {
    return Object.values(PLANS);
  },
} satisfies Partial<Handlers>;

