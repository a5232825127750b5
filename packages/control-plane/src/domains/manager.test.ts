import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { newId, subjects } from '@shellwego/core';
import type { CertificatesMessage } from '@shellwego/core';
import { InProcessBus } from '@shellwego/bus';
import { openSqliteStore } from '@shellwego/store';
import type { DomainRow, Store } from '@shellwego/store';
import { FileKeyProvider, SecretBox } from '../secrets.ts';
import { EventRecorder } from '../events.ts';
import { CertificateManager, SYSTEM_ORG_ID } from './manager.ts';
import type { TlsSettings } from './manager.ts';

let dir: string;
let store: Store;
let bus: InProcessBus;
let secrets: SecretBox;
let domain: DomainRow;
const published: CertificatesMessage[] = [];

function manager(tls: Partial<TlsSettings> = {}) {
  return new CertificateManager({
    store, bus, secrets, events: new EventRecorder(store, bus), logger: pino({ level: 'silent' }), baseDomain: 'apps.test', dataDir: dir,
    tls: { mode: 'local-ca', httpsPort: 443, checkIntervalMs: 3_600_000, ...tls },
  });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'swg-certs-'));
  store = await openSqliteStore(join(dir, 'db.sqlite'));
  bus = new InProcessBus();
  secrets = new SecretBox(FileKeyProvider.fromKey(randomBytes(32)), store);
  bus.subscribe<CertificatesMessage>(subjects.certificates, (m) => void published.push(m));
  const org = await store.organizations.create({ id: newId('org'), name: 'tenant' });
  const app = await store.apps.create({ id: newId('app'), organizationId: org.id, name: 'shop', plan: 'standard' });
  domain = await store.domains.create({ id: newId('dom'), organizationId: org.id, appId: app.id, hostname: 'www.shop.test', redirectHttps: false, hstsMaxAge: 0 });
});

after(async () => {
  await store.close();
  await bus.close();
  await rm(dir, { recursive: true, force: true });
});

test('start creates the CA once and issues the base-domain wildcard certificate', async () => {
  const m = manager();
  await m.start();
  await m.stop();
  const ca = await store.certificates.byName('local-ca');
  assert.equal(ca?.kind, 'ca');
  assert.equal(ca?.organizationId, SYSTEM_ORG_ID, 'platform keys belong to the hidden system organization');
  assert.doesNotMatch(ca!.keySealed!, /PRIVATE KEY/);
  assert.equal(await readFile(join(dir, 'tls', 'local-ca.pem'), 'utf8'), ca!.certPem);
  const wildcard = await store.certificates.byName('*.apps.test');
  assert.equal(wildcard?.status, 'issued');
  assert.match(new X509Certificate(wildcard!.certPem!).subjectAltName!, /DNS:\*\.apps\.test, DNS:apps\.test/);
  // A second start (a restart) keeps the same CA.
  const again = manager();
  await again.start();
  await again.stop();
  assert.equal((await store.certificates.byName('local-ca'))!.certPem, ca!.certPem);
});

test('a domain certificate is issued, signed by the CA, sealed under its organization, published with its key', async () => {
  const m = manager();
  await m.start();
  await store.transaction((tx) => m.createForDomain(tx, domain));
  await m.runDue();
  const row = (await store.certificates.byName('www.shop.test'))!;
  assert.equal(row.status, 'issued');
  assert.equal(row.domainId, domain.id);
  assert.equal(row.organizationId, domain.organizationId);
  const ca = new X509Certificate((await store.certificates.byName('local-ca'))!.certPem!);
  assert.ok(new X509Certificate(row.certPem!).verify(ca.publicKey));
  assert.ok(Date.parse(row.renewAfter!) < Date.parse(row.notAfter!));
  assert.match(row.keySealed!, new RegExp(`^v2:${domain.organizationId}:`));
  const last = published.at(-1)!;
  const entry = last.certificates.find((c) => c.hostnames.includes('www.shop.test'));
  assert.match(entry!.keyPem, /BEGIN PRIVATE KEY/);
  const events = await store.events.list(domain.organizationId, { appId: domain.appId });
  assert.ok(events.some((e) => e.type === 'certificate.issued'));
  await m.stop();
});

test('the periodic pass renews a certificate once its renewal time has come, and only then', async () => {
  const m = manager();
  await m.start();
  const before = (await store.certificates.byName('www.shop.test'))!;
  await m.runDue();
  assert.equal((await store.certificates.byName('www.shop.test'))!.certPem, before.certPem, 'not due: untouched');
  await store.certificates.update(before.id, { renewAfter: new Date(Date.now() - 1000).toISOString() });
  await m.runDue();
  const after = (await store.certificates.byName('www.shop.test'))!;
  assert.notEqual(after.certPem, before.certPem);
  assert.ok(Date.parse(after.renewAfter!) > Date.now());
  assert.ok(published.at(-1)!.certificates.some((c) => c.certPem === after.certPem), 'the renewed certificate reaches the routers');
  const events = await store.events.list(domain.organizationId, { appId: domain.appId });
  assert.ok(events.some((e) => e.type === 'certificate.renewed'));
  await m.stop();
});

test('a failed issuance is recorded with its reason and a backoff, keeping the certificate it had', async () => {
  // acme mode without a directory: every attempt fails with a clear reason.
  const m = manager({ mode: 'acme', retryBaseMs: 60_000 });
  await m.start();
  const row = (await store.certificates.byName('www.shop.test'))!;
  await m.runDue();
  const failed = (await store.certificates.byName('www.shop.test'))!;
  assert.equal(failed.status, 'issued', 'a failed renewal keeps serving the old certificate');
  assert.equal(failed.certPem, row.certPem);
  assert.match(failed.error!, /SHELLWEGO_ACME_DIRECTORY/);
  assert.equal(failed.attempts, 1);
  const wait = Date.parse(failed.nextAttemptAt!) - Date.now();
  assert.ok(wait > 50_000 && wait <= 66_000, `retry in ~60 s, got ${wait} ms`);
  await m.runDue();
  assert.equal((await store.certificates.byName('www.shop.test'))!.attempts, 1, 'not retried before its time');
  const events = await store.events.list(domain.organizationId, { appId: domain.appId });
  assert.ok(events.some((e) => e.type === 'certificate.failed'));
  await m.stop();
});

test('mode off creates no certificate rows', async () => {
  const m = manager({ mode: 'off' });
  await m.start();
  assert.equal(await store.transaction((tx) => m.createForDomain(tx, { ...domain, id: 'dom_x', hostname: 'x.shop.test' })), null);
  await m.stop();
});

test("deleting an app deletes its domains and their certificates", async () => {
  const org = await store.organizations.create({ id: newId('org'), name: 'gone' });
  const app = await store.apps.create({ id: newId('app'), organizationId: org.id, name: 'gone-app', plan: 'standard' });
  const d = await store.domains.create({ id: newId('dom'), organizationId: org.id, appId: app.id, hostname: 'gone.shop.test', redirectHttps: true, hstsMaxAge: 60 });
  const m = manager();
  await store.transaction((tx) => m.createForDomain(tx, d));
  assert.ok(await store.certificates.byName('gone.shop.test'));
  assert.equal(await store.apps.delete(org.id, app.id), true);
  assert.equal(await store.domains.byHostname('gone.shop.test'), undefined);
  assert.equal(await store.certificates.byName('gone.shop.test'), undefined);
});
