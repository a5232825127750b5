import type { AppT, BuildT, FormationT, InstanceT, MemberT, OrganizationT, TokenInfoT, UserT } from '@shellwego/core';
import type { AppRow, BuildRow, FormationRow, InstanceRow, MembershipRow, OrganizationRow, ReleaseRow, TokenRow, UserRow } from '@shellwego/store';
import type { ControlPlaneSettings } from '../context.ts';
import { appUrl } from '../context.ts';

export const toUser = (u: UserRow): UserT => ({ id: u.id, email: u.email, createdAt: u.createdAt });
export const toOrg = (o: OrganizationRow): OrganizationT => ({ id: o.id, name: o.name, createdAt: o.createdAt });
export const toMember = (m: MembershipRow): MemberT => ({ userId: m.userId, email: m.email, role: m.role, createdAt: m.createdAt });
export const toToken = (t: TokenRow): TokenInfoT => ({ id: t.id, name: t.name, scopes: t.scopes, createdAt: t.createdAt, expiresAt: t.expiresAt, lastUsedAt: t.lastUsedAt });
export const toFormation = (f: FormationRow): FormationT => ({ type: f.type, quantity: f.quantity, command: f.command, healthcheck: f.healthcheck });

export function toApp(a: AppRow, settings: ControlPlaneSettings, current?: ReleaseRow | null): AppT {
  return {
    id: a.id, name: a.name, organizationId: a.organizationId, plan: a.plan, url: appUrl(settings, a.name),
    currentRelease: current ? current.version : null, createdAt: a.createdAt, updatedAt: a.updatedAt,
  };
}

export function toBuild(b: BuildRow, releaseVersion: number | null): BuildT {
  return {
    id: b.id, appId: b.appId, state: b.state, stack: b.stack, sourceDigest: b.sourceDigest, artifactDigest: b.artifactDigest,
    processTypes: b.processTypes, cacheHit: b.cacheHit, error: b.error, releaseVersion, createdAt: b.createdAt, finishedAt: b.finishedAt,
  };
}

export function toInstance(i: InstanceRow): InstanceT {
  return {
    id: i.id, appId: i.appId, type: i.processType, index: i.index, releaseVersion: i.releaseVersion, nodeId: i.nodeId, state: i.state,
    desired: i.desired, exitCode: i.exitCode, signal: i.signal, oomKilled: i.oomKilled, restarts: i.restarts, address: i.address,
    startedAt: i.startedAt, updatedAt: i.updatedAt, lastLog: i.lastLog, placement: i.placement,
  };
}
