import type { Kysely } from 'kysely';

/**
 * Custom domains and TLS certificates (issue 3).
 *
 * - `domains`: a hostname routed to an app. `hostname` is unique platform-wide (a name can point
 *   at one app only), so two organizations adding the same name at once get one winner and one
 *   conflict. Rows go with their app (ON DELETE CASCADE).
 * - `certificates`: what routers terminate TLS with, and the platform's TLS keys. `name` is
 *   unique (the domain's hostname, `*.<base domain>`, `local-ca`, `acme-account:<directory>`).
 *   Private keys are stored sealed only (`key_sealed`); certificates are public and kept as PEM.
 *   `challenge_type` records how an ACME order proves control (`http-01` now, `dns-01` later),
 *   and `attempts`/`next_attempt_at` drive issuance retries with backoff.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('domains')
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('organization_id', 'text', (c) => c.notNull())
    .addColumn('app_id', 'text', (c) => c.notNull())
    .addColumn('hostname', 'text', (c) => c.notNull())
    .addColumn('redirect_https', 'integer', (c) => c.notNull())
    .addColumn('hsts_max_age', 'integer', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('domains_pkey', ['id'])
    .addUniqueConstraint('domains_hostname_key', ['hostname'])
    .addForeignKeyConstraint('domains_app_fkey', ['app_id', 'organization_id'], 'apps', ['id', 'organization_id'], (fk) => fk.onDelete('cascade'))
    .execute();
  await db.schema.createIndex('domains_organization_id_idx').on('domains').columns(['organization_id', 'app_id']).execute();

  await db.schema
    .createTable('certificates')
    .addColumn('id', 'text', (c) => c.notNull())
    .addColumn('organization_id', 'text', (c) => c.notNull().references('organizations.id'))
    .addColumn('domain_id', 'text', (c) => c.references('domains.id').onDelete('cascade'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('hostnames', 'text', (c) => c.notNull())
    .addColumn('issuer', 'text', (c) => c.notNull())
    .addColumn('challenge_type', 'text')
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('cert_pem', 'text')
    .addColumn('key_sealed', 'text')
    .addColumn('not_before', 'text')
    .addColumn('not_after', 'text')
    .addColumn('renew_after', 'text')
    .addColumn('error', 'text')
    .addColumn('attempts', 'integer', (c) => c.notNull())
    .addColumn('next_attempt_at', 'text')
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('certificates_pkey', ['id'])
    .addUniqueConstraint('certificates_name_key', ['name'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('certificates').execute();
  await db.schema.dropTable('domains').execute();
}
