import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';
import { subjects } from '@shellwego/core';
import type { CertificatesMessage, RouteTableMessage } from '@shellwego/core';
import { CertificateStore, ChallengeTokens } from './tls.ts';
import { request, startBackend, startRouter, table } from './test-helpers.ts';
import type { TestRouter } from './test-helpers.ts';

/** A self-signed P-256 certificate for `names` (first = CN), made with the openssl CLI. */
function selfSigned(names: string[]): { certPem: string; keyPem: string } {
  const out = execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', '-', '-out', '-',
    '-days', '2', '-subj', `/CN=${names[0]}`, '-addext', `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}`,
  ], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const keyPem = /-----BEGIN PRIVATE KEY-----[\s\S]+?-----END PRIVATE KEY-----\n/.exec(out)![0];
  const certPem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/.exec(out)![0];
  return { certPem, keyPem };
}

const exact = selfSigned(['www.example.test']);
const wildcard = selfSigned(['*.apps.test', 'apps.test']);
const certs = (version: number, list = [exact, wildcard]): CertificatesMessage => ({
  version,
  certificates: list.map((c) => ({ hostnames: c === exact ? ['www.example.test'] : ['*.apps.test', 'apps.test'], ...c, notAfter: new Date(Date.now() + 86_400_000).toISOString() })),
});

describe('CertificateStore', () => {
  test('picks the exact name first, then the wildcard one label up', () => {
    const store = new CertificateStore();
    assert.equal(store.apply(certs(1)), 'applied');
    const w = store.select('foo.apps.test');
    assert.ok(w);
    assert.equal(store.select('FOO.apps.test.'), w, 'case and a trailing dot do not matter');
    assert.equal(store.select('apps.test'), w, 'the bare name is a SAN of the same certificate');
    assert.notEqual(store.select('www.example.test'), w);
    assert.equal(store.select('a.b.apps.test'), undefined, 'a wildcard covers one label only');
    assert.equal(store.select('example.test'), undefined);
    assert.equal(store.fallback, w, 'clients without SNI get the wildcard certificate');
  });

  test('an exact certificate wins over a wildcard that also matches', () => {
    const store = new CertificateStore();
    const specific = selfSigned(['shop.apps.test']);
    store.apply({ version: 1, certificates: [
      { hostnames: ['*.apps.test'], ...wildcard, notAfter: '' },
      { hostnames: ['shop.apps.test'], ...specific, notAfter: '' },
    ] });
    assert.notEqual(store.select('shop.apps.test'), store.select('other.apps.test'));
  });

  test('older versions are ignored, broken entries skipped, the rest kept', () => {
    const store = new CertificateStore();
    store.apply(certs(5));
    assert.equal(store.apply(certs(4, [])), 'stale');
    assert.ok(store.select('www.example.test'));
    assert.equal(store.apply({ version: 6, certificates: [{ hostnames: ['bad.test'], certPem: 'nope', keyPem: 'nope', notAfter: '' }, { hostnames: ['www.example.test'], ...exact, notAfter: '' }] }), 'applied');
    assert.equal(store.select('bad.test'), undefined);
    assert.ok(store.select('www.example.test'));
    assert.equal(store.apply({ version: 'x' }), 'invalid');
    assert.equal(store.apply(null), 'invalid');
  });

  test('challenge tokens: whole-map replacement, malformed tokens dropped', () => {
    const t = new ChallengeTokens();
    assert.equal(t.apply({ tokens: { 'good_Token-1': 'good_Token-1.thumb', 'bad/../token': 'x', num: 3 } }), true);
    assert.equal(t.get('good_Token-1'), 'good_Token-1.thumb');
    assert.equal(t.size, 1);
    assert.equal(t.apply({ nope: true }), false);
    t.apply({ tokens: {} });
    assert.equal(t.size, 0);
  });
});

describe('router with TLS', () => {
  const closers: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of closers.reverse()) await c();
  });

  let r: TestRouter;
  let httpsPort = 0;

  function get(host: string, path = '/', servername: string | undefined = host): Promise<{ status: number; headers: Record<string, unknown>; body: string; cn: string }> {
    return new Promise((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port: httpsPort, path, headers: { host }, servername, rejectUnauthorized: false, agent: false }, (res) => {
        const cn = String((res.socket as TLSSocket).getPeerCertificate().subject?.CN);
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body, cn }));
      });
      req.on('error', reject);
      req.end();
    });
  }

  // A router with an HTTPS listener; certificates and routes arrive from the bus.
  before(async () => {
    const b = await startBackend((req, res) => res.end(JSON.stringify({ proto: req.headers['x-forwarded-proto'], host: req.headers.host })));
    closers.push(b.close);
    r = await startRouter({ tls: { port: 0 } });
    closers.push(r.close);
    assert.ok(r.router.httpsPort);
    httpsPort = r.router.httpsPort!;
    const t: RouteTableMessage = table(1, { 'www.example.test': { backends: [b.address] }, 'foo.apps.test': { backends: [b.address] }, 'plain.example.test': { backends: [b.address] } });
    t.routes['www.example.test'].redirectHttps = true;
    t.routes['www.example.test'].hstsMaxAge = 3600;
    await r.publish(t);
    await r.bus.publish(subjects.certificates, certs(1));
    await r.bus.drain();
  });

  test('SNI selects the certificate; requests go through the shared handler with X-Forwarded-Proto https', async () => {
    const a = await get('www.example.test', '/x');
    assert.equal(a.status, 200);
    assert.equal(a.cn, 'www.example.test');
    assert.deepEqual(JSON.parse(a.body), { proto: 'https', host: 'www.example.test' });
    assert.equal(a.headers['strict-transport-security'], 'max-age=3600');
    const w = await get('foo.apps.test');
    assert.equal(w.cn, '*.apps.test');
    assert.equal(w.headers['strict-transport-security'], undefined);
    const none = await get('foo.apps.test', '/', undefined);
    assert.equal(none.cn, '*.apps.test', 'no SNI: the fallback certificate');
  });

  test('plain HTTP: 308 to HTTPS for hosts that ask for it, others proxied', async () => {
    const red = await request(r.port, { path: '/a?b=1', headers: { host: 'www.example.test' } });
    assert.equal(red.status, 308);
    assert.equal(red.headers.location, `https://www.example.test:${httpsPort}/a?b=1`);
    const plain = await request(r.port, { headers: { host: 'plain.example.test' } });
    assert.equal(plain.status, 200);
    assert.equal(JSON.parse(plain.body.toString()).proto, 'http');
  });

  test('ACME HTTP-01 tokens are answered on the HTTP listener, before any redirect', async () => {
    await r.bus.publish(subjects.acmeChallenges, { tokens: { tok123: 'tok123.thumbprint' } });
    await r.bus.drain();
    const ok = await request(r.port, { path: '/.well-known/acme-challenge/tok123', headers: { host: 'www.example.test' } });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.toString(), 'tok123.thumbprint');
    const unknown = await request(r.port, { path: '/.well-known/acme-challenge/other', headers: { host: 'plain.example.test' } });
    assert.equal(unknown.status, 200, 'unknown tokens go to the app');
    assert.notEqual(unknown.body.toString(), 'tok123.thumbprint');
  });

  test('new certificates replace the set without a restart', async () => {
    const replacement = selfSigned(['www.example.test', 'alt.example.test']);
    await r.bus.publish(subjects.certificates, { version: 2, certificates: [{ hostnames: ['www.example.test'], ...replacement, notAfter: '' }] } satisfies CertificatesMessage);
    await r.bus.drain();
    const a = await get('www.example.test');
    assert.equal(a.status, 200);
    const b = await get('foo.apps.test');
    assert.equal(b.cn, 'www.example.test', 'the wildcard is gone: the only certificate left is the fallback');
  });
});
