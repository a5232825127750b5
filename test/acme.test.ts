/**
 * ACME for real: Pebble (Debian package `pebble`) on loopback issues certificates to the platform
 * in TLS mode `acme`. Pebble validates HTTP-01 by connecting to the router's HTTP port, resolving
 * the test domains with pebble-challtestsrv's DNS (everything → 127.0.0.1 unless told otherwise).
 * Pebble's own HTTPS certificate comes from a throwaway CA the test makes and the platform trusts
 * through SHELLWEGO_ACME_CA_FILE.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { get as httpsGet_ } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCa, issueLeaf, loadCa } from '../packages/control-plane/src/domains/local-ca.ts';
import { freePort, platformSuite, waitFor } from './helpers/platform.ts';
import { echoAppTarball, httpGet, httpsGet } from './helpers/tls.ts';

const uniq = Math.random().toString(36).slice(2, 8);
const dir = await mkdtemp(join(tmpdir(), 'swg-pebble-'));
const [acmePort, mgmtPort, dnsPort, ctsMgmtPort, tlsAlpnPort, routerPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);

// Pebble's own TLS certificate, for the name the platform dials (localhost); the platform reads the CA at start.
const pebbleCa = await createCa('pebble test CA');
const pebbleLeaf = await issueLeaf(await loadCa(pebbleCa.certPem, pebbleCa.keyPem), ['localhost']);
const caPem = pebbleCa.certPem;
await writeFile(join(dir, 'pebble-ca.pem'), pebbleCa.certPem);
await writeFile(join(dir, 'cert.pem'), pebbleLeaf.certPem);
await writeFile(join(dir, 'key.pem'), pebbleLeaf.keyPem, { mode: 0o600 });

const procs: ChildProcess[] = [];
let pebbleOutput = '';

function startProc(cmd: string, args: string[], env: Record<string, string> = {}): void {
  const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdout!.on('data', (d) => (pebbleOutput += d));
  p.stderr!.on('data', (d) => (pebbleOutput += d));
  procs.push(p);
}

function getText(url: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    httpsGet_(url, { ca }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: ${res.statusCode} ${body}`))));
    }).on('error', reject);
  });
}

// Pebble and its DNS start before the platform does: the ports reserved for them are bound before
// the platform's own listeners could be given one of them.
try {
  await writeFile(join(dir, 'pebble.json'), JSON.stringify({
    pebble: {
      listenAddress: `127.0.0.1:${acmePort}`, managementListenAddress: `127.0.0.1:${mgmtPort}`,
      certificate: join(dir, 'cert.pem'), privateKey: join(dir, 'key.pem'),
      httpPort: routerPort, tlsPort: tlsAlpnPort, ocspResponderURL: '', externalAccountBindingRequired: false,
    },
  }));
  startProc('pebble-challtestsrv', ['-dns01', `127.0.0.1:${dnsPort}`, '-http01', '', '-https01', '', '-tlsalpn01', '', '-management', `127.0.0.1:${ctsMgmtPort}`, '-defaultIPv4', '127.0.0.1', '-defaultIPv6', '']);
  // No random sleeps, no nonce rejections, no authorization reuse: every order is validated for real.
  startProc('pebble', ['-config', join(dir, 'pebble.json'), '-dnsserver', `127.0.0.1:${dnsPort}`], { PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' });
  await waitFor(`pebble directory\n${pebbleOutput}`, async () => (await getText(`https://localhost:${acmePort}/dir`, caPem)).includes('newOrder'), 20_000);
  await waitFor('challtestsrv', async () => (await fetch(`http://127.0.0.1:${ctsMgmtPort}/clear-a`, { method: 'POST', body: JSON.stringify({ host: 'nothing.example.' }) })).ok, 20_000);
} catch (err) {
  for (const p of procs) p.kill('SIGTERM');
  throw new Error(`${(err as Error).message}\n--- pebble ---\n${pebbleOutput.slice(-3000)}`);
}

const suite = platformSuite({
  isolation: 'sandbox',
  env: {
    SHELLWEGO_TLS: 'acme',
    SHELLWEGO_ACME_DIRECTORY: `https://localhost:${acmePort}/dir`,
    SHELLWEGO_ACME_EMAIL: 'ops@example.com',
    SHELLWEGO_ACME_CA_FILE: join(dir, 'pebble-ca.pem'),
    // Pebble's HTTP-01 port must be known before it starts: the router listens where we say.
    SHELLWEGO_HTTP_PORT: String(routerPort),
    SHELLWEGO_TLS_CHECK_MS: '500',
    SHELLWEGO_TLS_RETRY_MS: '1000',
  },
});

async function api(method: string, path: string, body?: unknown) {
  const r = await fetch(`${suite.p.apiUrl}${path}`, {
    method, headers: { authorization: `Bearer ${suite.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, json: (await r.json()) as any };
}

const APP = `acme-${uniq}`;

describe('ACME HTTP-01 against Pebble', () => {
  before(async () => {
    assert.equal((await api('POST', '/v1/apps', { name: APP })).status, 201);
    const up = await fetch(`${suite.p.apiUrl}/v1/apps/${APP}/builds`, {
      method: 'POST', headers: { authorization: `Bearer ${suite.token}`, 'content-type': 'application/gzip' }, body: echoAppTarball('acme-app') as unknown as BodyInit,
    });
    assert.equal(up.status, 202);
    await waitFor('app serves', async () => (await httpGet(routerPort, `${APP}.localhost`, '/').catch(() => null))?.status === 200, 60_000);
  });

  after(async () => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  });

  test('a custom domain gets a certificate from the ACME server and is served over HTTPS with it', async () => {
    const host = `shop-${uniq}.example`;
    assert.equal((await api('POST', `/v1/apps/${APP}/domains`, { hostname: host })).status, 201);
    const d = await waitFor('ACME certificate issued', async () => {
      const l = (await api('GET', `/v1/apps/${APP}/domains`)).json as any[];
      return l[0]?.certificate?.status === 'issued' && l[0];
    }, 60_000).catch((err: Error) => assert.fail(`${err.message}\n--- pebble ---\n${pebbleOutput.slice(-3000)}\n--- platform ---\n${suite.p.output.slice(-3000)}`));
    assert.equal(d.certificate.issuer, 'acme');
    assert.equal(d.certificate.challenge, 'http-01');
    assert.match(pebbleOutput, new RegExp(`${host.replace(/\./g, '\\.')}`), 'Pebble saw the order');

    // Verify the served chain against Pebble's root (fetched from its management interface).
    const root = await getText(`https://localhost:${mgmtPort}/roots/0`, caPem);
    const r = await waitFor('https 200', async () => {
      const x = await httpsGet(suite.p.httpsPort, host, '/', root).catch(() => null);
      return x?.status === 200 && x;
    }, 20_000);
    assert.equal(r.authorized, true);
    assert.match(String(r.cert?.issuer.CN), /Pebble Intermediate CA/);
    assert.equal(r.cert?.subjectaltname, `DNS:${host}`);
    assert.deepEqual(JSON.parse(r.body), { marker: 'acme-app', proto: 'https', host });
  });

  test('a failed validation is recorded with its reason and retried with backoff until it succeeds', async () => {
    const host = `late-dns-${uniq}.example`;
    // DNS points somewhere the router does not listen: Pebble's HTTP-01 check cannot connect.
    const add = await fetch(`http://127.0.0.1:${ctsMgmtPort}/add-a`, { method: 'POST', body: JSON.stringify({ host: `${host}.`, addresses: ['127.0.0.2'] }) });
    assert.ok(add.ok);
    assert.equal((await api('POST', `/v1/apps/${APP}/domains`, { hostname: host })).status, 201);
    const failed = await waitFor('certificate failed', async () => {
      const l = ((await api('GET', `/v1/apps/${APP}/domains`)).json as any[]).find((x) => x.hostname === host);
      return l?.certificate?.status === 'failed' && l;
    }, 60_000);
    assert.ok(failed.certificate.error.length > 0);
    assert.ok(failed.certificate.attempts >= 1);
    assert.ok(Date.parse(failed.certificate.nextAttemptAt) > Date.parse(failed.certificate.updatedAt) - 1, 'a retry is scheduled');
    const events = (await api('GET', `/v1/apps/${APP}/events`)).json as any[];
    assert.ok(events.some((e) => e.type === 'certificate.failed' && e.data.hostname === host));
    const list = await suite.ok(['domains', 'list', '--app', APP]);
    assert.match(list.stdout, new RegExp(`${host.replace(/\./g, '\\.')}.*failed: `));

    // DNS fixed: the next retry succeeds.
    assert.ok((await fetch(`http://127.0.0.1:${ctsMgmtPort}/clear-a`, { method: 'POST', body: JSON.stringify({ host: `${host}.` }) })).ok);
    const issued = await waitFor('certificate issued after retry', async () => {
      const l = ((await api('GET', `/v1/apps/${APP}/domains`)).json as any[]).find((x) => x.hostname === host);
      return l?.certificate?.status === 'issued' && l;
    }, 90_000);
    assert.equal(issued.certificate.error, null);
    assert.equal(issued.certificate.attempts, 0);
  });
});
