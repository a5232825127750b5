/** Custom domains and certificates (migration 0003). */
import type { Selectable, Updateable } from 'kysely';
import type { CertificatesTable, DomainsTable } from '../schema.ts';
import type { CertificateKind, CertificateRow, CertificatesRepo, CertificateStatus, DomainRow, DomainsRepo } from '../types.ts';
import type { Ctx } from '../kysely-store.ts';

const now = () => new Date().toISOString();

const toDomain = (r: Selectable<DomainsTable>): DomainRow => ({
  id: r.id, organizationId: r.organization_id, appId: r.app_id, hostname: r.hostname, redirectHttps: r.redirect_https !== 0,
  hstsMaxAge: Number(r.hsts_max_age), createdAt: r.created_at, updatedAt: r.updated_at,
});

const toCertificate = (r: Selectable<CertificatesTable>): CertificateRow => ({
  id: r.id, organizationId: r.organization_id, domainId: r.domain_id, name: r.name, kind: r.kind as CertificateKind,
  hostnames: JSON.parse(r.hostnames) as string[], issuer: r.issuer, challengeType: r.challenge_type, status: r.status as CertificateStatus,
  certPem: r.cert_pem, keySealed: r.key_sealed, notBefore: r.not_before, notAfter: r.not_after, renewAfter: r.renew_after,
  error: r.error, attempts: Number(r.attempts), nextAttemptAt: r.next_attempt_at, createdAt: r.created_at, updatedAt: r.updated_at,
});

export class Domains implements DomainsRepo {
  constructor(private readonly c: Ctx) {}

  async create(row: Omit<DomainRow, 'createdAt' | 'updatedAt'>): Promise<DomainRow> {
    const at = now();
    // The composite foreign key to apps(id, organization_id) refuses an app of another organization.
    const r = await this.c.q().insertInto('domains')
      .values({
        id: row.id, organization_id: row.organizationId, app_id: row.appId, hostname: row.hostname,
        redirect_https: row.redirectHttps ? 1 : 0, hsts_max_age: row.hstsMaxAge, created_at: at, updated_at: at,
      })
      .returningAll().executeTakeFirstOrThrow();
    return toDomain(r);
  }

  async get(organizationId: string, appId: string, idOrHostname: string): Promise<DomainRow | undefined> {
    const r = await this.c.q().selectFrom('domains').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId)
      .where((eb) => eb.or([eb('hostname', '=', idOrHostname), eb('id', '=', idOrHostname)]))
      .executeTakeFirst();
    return r && toDomain(r);
  }

  async byHostname(hostname: string): Promise<DomainRow | undefined> {
    const r = await this.c.q().selectFrom('domains').selectAll().where('hostname', '=', hostname).executeTakeFirst();
    return r && toDomain(r);
  }

  async list(organizationId: string, appId?: string): Promise<DomainRow[]> {
    let q = this.c.q().selectFrom('domains').selectAll().where('organization_id', '=', organizationId);
    if (appId !== undefined) q = q.where('app_id', '=', appId);
    return (await q.orderBy('hostname').execute()).map(toDomain);
  }

  async listAll(): Promise<DomainRow[]> {
    return (await this.c.q().selectFrom('domains').selectAll().orderBy('hostname').execute()).map(toDomain);
  }

  async update(organizationId: string, id: string, patch: Partial<Pick<DomainRow, 'redirectHttps' | 'hstsMaxAge'>>): Promise<DomainRow | undefined> {
    const set: Updateable<DomainsTable> = { updated_at: now() };
    if (patch.redirectHttps !== undefined) set.redirect_https = patch.redirectHttps ? 1 : 0;
    if (patch.hstsMaxAge !== undefined) set.hsts_max_age = patch.hstsMaxAge;
    const r = await this.c.q().updateTable('domains').set(set)
      .where('id', '=', id).where('organization_id', '=', organizationId)
      .returningAll().executeTakeFirst();
    return r && toDomain(r);
  }

  async delete(organizationId: string, id: string): Promise<boolean> {
    return this.c.atomic(async (db) => {
      const d = await db.selectFrom('domains').select('id').where('id', '=', id).where('organization_id', '=', organizationId).executeTakeFirst();
      if (!d) return false;
      await db.deleteFrom('certificates').where('domain_id', '=', id).where('organization_id', '=', organizationId).execute();
      await db.deleteFrom('domains').where('id', '=', id).where('organization_id', '=', organizationId).execute();
      return true;
    });
  }
}

export class Certificates implements CertificatesRepo {
  constructor(private readonly c: Ctx) {}

  async byName(name: string): Promise<CertificateRow | undefined> {
    const r = await this.c.q().selectFrom('certificates').selectAll().where('name', '=', name).executeTakeFirst();
    return r && toCertificate(r);
  }

  async createIfAbsent(row: Omit<CertificateRow, 'createdAt' | 'updatedAt'>): Promise<CertificateRow> {
    return this.c.atomic(async (db) => {
      const at = now();
      await db.insertInto('certificates')
        .values({
          id: row.id, organization_id: row.organizationId, domain_id: row.domainId, name: row.name, kind: row.kind,
          hostnames: JSON.stringify(row.hostnames), issuer: row.issuer, challenge_type: row.challengeType, status: row.status,
          cert_pem: row.certPem, key_sealed: row.keySealed, not_before: row.notBefore, not_after: row.notAfter, renew_after: row.renewAfter,
          error: row.error, attempts: row.attempts, next_attempt_at: row.nextAttemptAt, created_at: at, updated_at: at,
        })
        .onConflict((oc) => oc.column('name').doNothing())
        .execute();
      return toCertificate(await db.selectFrom('certificates').selectAll().where('name', '=', row.name).executeTakeFirstOrThrow());
    });
  }

  async update(id: string, patch: Partial<Omit<CertificateRow, 'id' | 'organizationId' | 'name' | 'createdAt' | 'updatedAt'>>): Promise<CertificateRow | undefined> {
    const set: Updateable<CertificatesTable> = { updated_at: now() };
    const map: Record<string, keyof CertificatesTable> = {
      domainId: 'domain_id', kind: 'kind', issuer: 'issuer', challengeType: 'challenge_type', status: 'status', certPem: 'cert_pem',
      keySealed: 'key_sealed', notBefore: 'not_before', notAfter: 'not_after', renewAfter: 'renew_after', error: 'error',
      attempts: 'attempts', nextAttemptAt: 'next_attempt_at',
    };
    for (const [k, v] of Object.entries(patch)) {
      if (v === undefined) continue;
      if (k === 'hostnames') set.hostnames = JSON.stringify(v);
      else if (map[k]) (set as Record<string, unknown>)[map[k]] = v;
    }
    const r = await this.c.q().updateTable('certificates').set(set).where('id', '=', id).returningAll().executeTakeFirst();
    return r && toCertificate(r);
  }

  async list(organizationId: string): Promise<CertificateRow[]> {
    const rows = await this.c.q().selectFrom('certificates').selectAll()
      .where('organization_id', '=', organizationId).where('domain_id', 'is not', null).orderBy('name').execute();
    return rows.map(toCertificate);
  }

  async listAll(): Promise<CertificateRow[]> {
    return (await this.c.q().selectFrom('certificates').selectAll().orderBy('name').execute()).map(toCertificate);
  }

  async delete(id: string): Promise<void> {
    await this.c.q().deleteFrom('certificates').where('id', '=', id).execute();
  }
}
