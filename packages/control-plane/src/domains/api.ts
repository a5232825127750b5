/** Handlers of the domain routes (`/v1/apps/:app/domains…`, `/v1/domains`). */
import { badRequest, conflict, isUnderDomain, newId, notFound } from '@shellwego/core';
import type { CertificateT, DomainT } from '@shellwego/core';
import { CONSTRAINTS, isConflict } from '@shellwego/store';
import type { AppRow, CertificateRow, DomainRow } from '@shellwego/store';
import type { ControlPlaneContext } from '../context.ts';
import type { Handlers } from '../http.ts';
import { findApp } from '../api/apps.ts';

/** HSTS max-age when a domain is added with HSTS but no age: one year. */
export const DEFAULT_HSTS_MAX_AGE = 31_536_000;

function toCertificate(c: CertificateRow): CertificateT {
  return {
    status: c.status, issuer: c.issuer, challenge: c.challengeType, notBefore: c.notBefore, notAfter: c.notAfter, renewAfter: c.renewAfter,
    error: c.error, attempts: c.attempts, nextAttemptAt: c.nextAttemptAt, updatedAt: c.updatedAt,
  };
}

export function domainUrl(cp: ControlPlaneContext, hostname: string): string {
  const tls = cp.settings.tls;
  if (tls && tls.mode !== 'off') return `https://${hostname}${tls.httpsPort === 443 ? '' : `:${tls.httpsPort}`}`;
  return `http://${hostname}${cp.settings.routerPort === 80 ? '' : `:${cp.settings.routerPort}`}`;
}

function toDomain(cp: ControlPlaneContext, d: DomainRow, appName: string, cert: CertificateRow | undefined): DomainT {
  return {
    id: d.id, hostname: d.hostname, appId: d.appId, appName, redirectHttps: d.redirectHttps, hstsMaxAge: d.hstsMaxAge,
    url: domainUrl(cp, d.hostname), certificate: cert ? toCertificate(cert) : null, createdAt: d.createdAt, updatedAt: d.updatedAt,
  };
}

async function views(cp: ControlPlaneContext, organizationId: string, domains: DomainRow[], apps: Map<string, AppRow>): Promise<DomainT[]> {
  const certs = new Map((await cp.store.certificates.list(organizationId)).map((c) => [c.domainId, c]));
  return domains.map((d) => toDomain(cp, d, apps.get(d.appId)?.name ?? d.appId, certs.get(d.id)));
}

async function findDomain(cp: ControlPlaneContext, app: AppRow, idOrHostname: string): Promise<DomainRow> {
  const d = await cp.store.domains.get(app.organizationId, app.id, idOrHostname.toLowerCase());
  if (!d) throw notFound('domain', idOrHostname);
  return d;
}

/** The same 409 whether the pre-check or the unique constraint catches it; another org's app is not named. */
function taken(hostname: string, sameApp: boolean) {
  return sameApp
    ? conflict('domain_exists', `${hostname} is already a domain of this app`)
    : conflict('domain_taken', `${hostname} is already in use by another app; a domain can point at one app only`);
}

async function afterChange(cp: ControlPlaneContext): Promise<void> {
  await cp.deployer.publishRoutes(false);
  await cp.certificates.publish(false);
}

export const domainHandlers = {
  async listDomains({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    return views(cp, app.organizationId, await cp.store.domains.list(app.organizationId, app.id), new Map([[app.id, app]]));
  },

  async listAllDomains({ auth, cp }) {
    const apps = new Map((await cp.store.apps.list(auth.organization.id)).map((a) => [a.id, a]));
    return views(cp, auth.organization.id, await cp.store.domains.list(auth.organization.id), apps);
  },

  async addDomain({ auth, params, body, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const hostname = body.hostname;
    const base = cp.settings.baseDomain;
    if (isUnderDomain(hostname, base)) {
      throw badRequest('reserved_hostname', `${hostname} is under the platform's base domain ${base}; apps already answer at <app>.${base}`);
    }
    const existing = await cp.store.domains.byHostname(hostname);
    if (existing) throw taken(hostname, existing.appId === app.id);
    const row = { id: newId('dom'), organizationId: app.organizationId, appId: app.id, hostname, redirectHttps: body.redirectHttps ?? false, hstsMaxAge: body.hstsMaxAge ?? 0 };
    // Domain and its pending certificate in one transaction: a lost race on the unique hostname writes neither.
    const domain = await cp.store.transaction(async (tx) => {
      const d = await tx.domains.create(row);
      await cp.certificates.createForDomain(tx, d);
      return d;
    }).catch((err) => {
      throw isConflict(err, CONSTRAINTS.domainHostname) ? taken(hostname, false) : err;
    });
    await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'domain.added', message: `Domain ${hostname} added by ${auth.user.email}`, data: { hostname, redirectHttps: domain.redirectHttps, hstsMaxAge: domain.hstsMaxAge } });
    await cp.deployer.publishRoutes(false);
    cp.certificates.kick();
    return (await views(cp, app.organizationId, [domain], new Map([[app.id, app]])))[0];
  },

  async updateDomain({ auth, params, body, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const domain = await findDomain(cp, app, params.domain);
    const updated = await cp.store.domains.update(app.organizationId, domain.id, { redirectHttps: body.redirectHttps, hstsMaxAge: body.hstsMaxAge });
    if (!updated) throw notFound('domain', params.domain);
    await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'domain.updated', message: `Domain ${domain.hostname}: redirect to HTTPS ${updated.redirectHttps ? 'on' : 'off'}, HSTS ${updated.hstsMaxAge > 0 ? `max-age=${updated.hstsMaxAge}` : 'off'}`, data: { hostname: domain.hostname, redirectHttps: updated.redirectHttps, hstsMaxAge: updated.hstsMaxAge } });
    await cp.deployer.publishRoutes(false);
    return (await views(cp, app.organizationId, [updated], new Map([[app.id, app]])))[0];
  },

  async removeDomain({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const domain = await findDomain(cp, app, params.domain);
    const removed = await cp.store.domains.delete(app.organizationId, domain.id);
    if (removed) {
      await cp.events.record({ organizationId: app.organizationId, appId: app.id, type: 'domain.removed', message: `Domain ${domain.hostname} removed by ${auth.user.email}`, data: { hostname: domain.hostname } });
      await afterChange(cp);
    }
    return { removed };
  },
} satisfies Partial<Handlers>;
