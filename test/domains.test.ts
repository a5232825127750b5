/**
 * Custom domains and HTTPS on the real platform (TLS mode local-ca, the default): the CLI adds a
 * domain, the control plane issues a certificate from the install's CA, and the router serves the
 * app over HTTPS with SNI — verified against the CA. Bad input and other tenants change nothing.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { platformSuite, waitFor } from './helpers/platform.ts';
import { echoAppTarball, filesContaining, httpGet, httpsGet } from './helpers/tls.ts';

const suite = platformSuite({ isolation: 'sandbox' });
const { ok, run } = suite;
const uniq = Math.random().toString(36).slice(2, 8);
const DOMAIN = `www.shop-${uniq}.example`;
let ca = '';
let tokenB = '';

async function api(method: string, path: string, token: string, body?: unknown) {
  const r = await fetch(`${suite.p.apiUrl}${path}`, {
    method, headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, json: (await r.json()) as any };
}

async function deployEcho(token: string, app: string, marker: string) {
  assert.equal((await api('POST', '/v1/apps', token, { name: app })).status, 201);
  const up = await fetch(`${suite.p.apiUrl}/v1/apps/${app}/builds`, {
    method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/gzip' }, body: echoAppTarball(marker) as unknown as BodyInit,
  });
  assert.equal(up.status, 202, await up.text());
  await waitFor(`${app} serves`, async () => (await suite.p.viaRouter(app)).status === 200, 60_000);
}

/** Two organizations with one app each; run once, by the first suite's hook (after the platform's). */
let setup: Promise<void> | null = null;
const ready = () => (setup ??= prepare());
async function prepare(): Promise<void> {
  await waitFor('platform', async () => suite.p !== undefined && suite.token !== '', 120_000, 100);
  const p = suite.p;
  await deployEcho(suite.token, `site-${uniq}`, 'app-a');
  // Organization B: its own owner, created through the API like any tenant.
  const a = await p.client(suite.token);
  const added = await a.call('addMember', { body: { email: `b-${uniq}@example.com`, role: 'viewer' } });
  const tmp = await p.client(await p.token(`b-${uniq}@example.com`, added.initialPassword!));
  await tmp.call('createOrganization', { body: { name: `org-b-${uniq}` } });
  tokenB = await p.token(`b-${uniq}@example.com`, added.initialPassword!, `org-b-${uniq}`);
  await a.call('removeMember', { params: { user: added.member.userId } });
  assert.equal((await api('POST', '/v1/apps', tokenB, { name: `other-${uniq}` })).status, 201);
  ca = await readFile(join(p.dataDir, 'tls', 'local-ca.pem'), 'utf8');
}

describe('custom domain over HTTPS with the local CA', () => {
  before(ready);
  test('domains add (CLI) issues a certificate that domains list shows', async () => {
    const r = await ok(['domains', 'add', DOMAIN, '--app', `site-${uniq}`]);
    assert.match(r.stdout, new RegExp(`Added ${DOMAIN.replace(/\./g, '\\.')} to site-${uniq}`));
    const list = await waitFor('certificate issued', async () => {
      const l = JSON.parse((await ok(['domains', 'list', '--app', `site-${uniq}`, '--json'])).stdout) as any[];
      return l.length === 1 && l[0].certificate?.status === 'issued' && l[0];
    }, 30_000);
    assert.equal(list.hostname, DOMAIN);
    assert.equal(list.certificate.issuer, 'local-ca');
    assert.ok(Date.parse(list.certificate.notAfter) > Date.now() + 60 * 86_400_000, 'valid for months');
    assert.ok(Date.parse(list.certificate.renewAfter) < Date.parse(list.certificate.notAfter), 'renewal is scheduled before expiry');
    const human = await ok(['domains', 'list']);
    assert.match(human.stdout, new RegExp(`${DOMAIN.replace(/\./g, '\\.')}\\s+site-${uniq}\\s+issued \\(local-ca\\), expires \\d{4}-`));
    const events = await api('GET', `/v1/apps/site-${uniq}/events`, suite.token);
    assert.ok(events.json.some((e: any) => e.type === 'certificate.issued' && e.data.hostname === DOMAIN), JSON.stringify(events.json.map((e: any) => e.type)));
  });

  test('HTTPS with SNI reaches the app, certificate verified against the local CA', async () => {
    const r = await waitFor('https 200', async () => {
      const x = await httpsGet(suite.p.httpsPort, DOMAIN, '/hello', ca).catch(() => null);
      return x?.status === 200 && x;
    }, 20_000);
    assert.equal(r.authorized, true);
    assert.deepEqual(JSON.parse(r.body), { marker: 'app-a', proto: 'https', host: DOMAIN });
    assert.equal(r.cert?.subjectaltname, `DNS:${DOMAIN}`);
    assert.equal(r.headers['strict-transport-security'], undefined, 'no HSTS unless asked for');
    // Plain HTTP still serves the app while no redirect is set.
    const plain = await httpGet(suite.p.routerPort, DOMAIN, '/');
    assert.equal(plain.status, 200);
    assert.equal(JSON.parse(plain.body).proto, 'http');
  });

  test('the default <app>.<base domain> URL is served over HTTPS with the wildcard certificate', async () => {
    const r = await httpsGet(suite.p.httpsPort, `site-${uniq}.localhost`, '/', null);
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).marker, 'app-a');
    assert.match(r.cert?.subjectaltname ?? '', /DNS:\*\.localhost/);
    const leaf = new X509Certificate(r.cert!.raw);
    assert.ok(leaf.verify(new X509Certificate(ca).publicKey), 'signed by the local CA');
  });

  test('redirect to HTTPS and HSTS, switched on after adding', async () => {
    const u = await ok(['domains', 'update', DOMAIN, '--app', `site-${uniq}`, '--redirect-https', '--hsts', '600']);
    assert.match(u.stdout, /redirect to HTTPS on, HSTS max-age=600/);
    const redirect = await waitFor('308', async () => {
      const x = await httpGet(suite.p.routerPort, DOMAIN, '/a/path?q=1');
      return x.status === 308 && x;
    }, 10_000);
    assert.equal(redirect.headers.location, `https://${DOMAIN}:${suite.p.httpsPort}/a/path?q=1`);
    const secure = await httpsGet(suite.p.httpsPort, DOMAIN, '/', ca);
    assert.equal(secure.status, 200);
    assert.equal(secure.headers['strict-transport-security'], 'max-age=600');
    // Only tokens of a pending ACME order are answered by the router; any other path redirects.
    const challenge = await httpGet(suite.p.routerPort, DOMAIN, '/.well-known/acme-challenge/unknown-token');
    assert.equal(challenge.status, 308);
    await ok(['domains', 'update', DOMAIN, '--app', `site-${uniq}`, '--no-redirect-https', '--no-hsts']);
    await waitFor('plain HTTP again', async () => (await httpGet(suite.p.routerPort, DOMAIN, '/')).status === 200, 10_000);
  });
});

describe('bad input and other tenants', () => {
  before(ready);
  test('an invalid hostname is refused with 400 and nothing is written', async () => {
    for (const hostname of ['bad_host.example', 'no-dots', 'a..b.example', '-lead.example', `${'a'.repeat(64)}.example`, '*.wild.example', 'host.example:443', `${'abcdefghi.'.repeat(26)}example`]) {
      const r = await api('POST', `/v1/apps/site-${uniq}/domains`, suite.token, { hostname });
      assert.equal(r.status, 400, `${hostname}: ${JSON.stringify(r.json)}`);
      assert.equal(r.json.error.code, 'validation_failed');
    }
    const reserved = await api('POST', `/v1/apps/site-${uniq}/domains`, suite.token, { hostname: 'sneaky.localhost' });
    assert.equal(reserved.status, 400);
    assert.equal(reserved.json.error.code, 'reserved_hostname');
    const cli = await run(['domains', 'add', 'bad_host.example', '--app', `site-${uniq}`]);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /not a valid hostname/);
    const list = await api('GET', '/v1/domains', suite.token);
    assert.deepEqual(list.json.map((d: any) => d.hostname), [DOMAIN]);
  });

  test('a domain taken by another organization is a 409 and nothing is written', async () => {
    const r = await api('POST', `/v1/apps/other-${uniq}/domains`, tokenB, { hostname: DOMAIN.toUpperCase() });
    assert.equal(r.status, 409, JSON.stringify(r.json));
    assert.equal(r.json.error.code, 'domain_taken');
    assert.doesNotMatch(r.json.error.message, new RegExp(`site-${uniq}`), "the other organization's app is not named");
    assert.deepEqual((await api('GET', '/v1/domains', tokenB)).json, []);
    const again = await api('POST', `/v1/apps/site-${uniq}/domains`, suite.token, { hostname: DOMAIN });
    assert.equal(again.status, 409);
    assert.equal(again.json.error.code, 'domain_exists');
  });

  test('two organizations adding one new hostname at once: one wins, the other gets 409', async () => {
    const host = `race-${uniq}.example`;
    const results = await Promise.all([
      api('POST', `/v1/apps/site-${uniq}/domains`, suite.token, { hostname: host }),
      api('POST', `/v1/apps/other-${uniq}/domains`, tokenB, { hostname: host }),
    ]);
    assert.deepEqual(results.map((r) => r.status).sort(), [201, 409], JSON.stringify(results.map((r) => r.json)));
    const owners = [...(await api('GET', '/v1/domains', suite.token)).json, ...(await api('GET', '/v1/domains', tokenB)).json].filter((d: any) => d.hostname === host);
    assert.equal(owners.length, 1);
    const winner = results[0].status === 201 ? { token: suite.token, app: `site-${uniq}` } : { token: tokenB, app: `other-${uniq}` };
    assert.equal((await api('DELETE', `/v1/apps/${winner.app}/domains/${host}`, winner.token)).status, 200);
  });

  test('another organization can neither see nor remove the domain', async () => {
    const list = await api('GET', `/v1/apps/site-${uniq}/domains`, tokenB);
    assert.equal(list.status, 404);
    const del = await api('DELETE', `/v1/apps/site-${uniq}/domains/${DOMAIN}`, tokenB);
    assert.equal(del.status, 404);
    const own = await api('DELETE', `/v1/apps/other-${uniq}/domains/${DOMAIN}`, tokenB);
    assert.equal(own.status, 404, 'not a domain of B’s app either');
    assert.equal((await api('GET', `/v1/apps/site-${uniq}/domains`, suite.token)).json.length, 1);
  });

  test('no private key is stored in plaintext anywhere in the data directory', async () => {
    const hits = await filesContaining(suite.p.dataDir, 'PRIVATE KEY');
    assert.deepEqual(hits, []);
    // The scan does see the store: certificates themselves (public) are there, in the database or its WAL.
    const certs = await filesContaining(suite.p.dataDir, 'BEGIN CERTIFICATE');
    assert.ok(certs.some((f) => /shellwego\.db(-wal)?$/.test(f)), certs.join(', '));
  });

  test('domains remove stops routing the hostname', async () => {
    await ok(['domains', 'remove', DOMAIN, '--app', `site-${uniq}`]);
    assert.deepEqual((await api('GET', '/v1/domains', suite.token)).json, []);
    await waitFor('404 for the removed domain', async () => (await httpGet(suite.p.routerPort, DOMAIN, '/')).status === 404, 10_000);
  });
});
