/**
 * The install's CA: one per install, shared by every control plane on the same database. It
 * signs the routers' certificates (TLS mode `local-ca`), the API's own certificate (split mode,
 * ADR "API TLS") and nats-server's certificate (`shellwego-server nats-tls`); nodes pin it at join.
 *
 * It lives in the store as the certificate row named `local-ca` (name unique), its key sealed
 * under the hidden system organization's data key. The first writer wins: a concurrent start
 * (two HA servers) loses the insert and uses the CA that got stored, never its own.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { newId } from '@shellwego/core';
import { CONSTRAINTS, isConflict } from '@shellwego/store';
import type { Store } from '@shellwego/store';
import type { SecretBox } from '../secrets.ts';
import { createCa, loadCa } from './local-ca.ts';
import type { LocalCa } from './local-ca.ts';

/** The hidden organization that owns platform-wide keys (never has members, so nobody sees it). */
export const SYSTEM_ORG_ID = 'org_platform';
const SYSTEM_ORG_NAME = '__shellwego_platform__';
export const CA_NAME = 'local-ca';

export async function ensureSystemOrg(store: Store): Promise<void> {
  if (await store.organizations.byId(SYSTEM_ORG_ID)) return;
  try {
    await store.organizations.create({ id: SYSTEM_ORG_ID, name: SYSTEM_ORG_NAME });
  } catch (err) {
    if (await store.organizations.byId(SYSTEM_ORG_ID)) return; // a concurrent start created it
    if (!isConflict(err, CONSTRAINTS.organizationName)) throw err;
    // A tenant took the name: the id is what matters, any unused name will do.
    await store.organizations.create({ id: SYSTEM_ORG_ID, name: `${SYSTEM_ORG_NAME}${newId('org').slice(-8)}` });
  }
}

/** `sha256:<hex>` of a certificate's DER bytes (what nodes pin and operators compare). */
export function certFingerprint(pem: string): string {
  return `sha256:${createHash('sha256').update(new X509Certificate(pem).raw).digest('hex')}`;
}

/**
 * The install's CA, created on first use. Also writes its (public) certificate to
 * `<dataDir>/tls/local-ca.pem` for operators to hand to browsers, curl and nats-server.
 */
export async function installCa(deps: { store: Store; secrets: SecretBox; baseDomain: string; dataDir: string }): Promise<LocalCa> {
  const { store, secrets } = deps;
  await ensureSystemOrg(store);
  let row = await store.certificates.byName(CA_NAME);
  if (!row || row.certPem === null || row.keySealed === null) {
    const id = newId('crt');
    const ca = await createCa(`ShellWeGo Local CA (${deps.baseDomain})`);
    row = await store.certificates.createIfAbsent({
      id, name: CA_NAME, hostnames: [], organizationId: SYSTEM_ORG_ID, domainId: null, kind: 'ca', issuer: 'local-ca', status: 'issued',
      certPem: ca.certPem, keySealed: await secrets.seal({ id, organizationId: SYSTEM_ORG_ID }, ca.keyPem),
      notBefore: ca.notBefore.toISOString(), notAfter: ca.notAfter.toISOString(),
      renewAfter: null, error: null, attempts: 0, nextAttemptAt: null, challengeType: null,
    });
  }
  const keyPem = await secrets.open({ id: row.id, organizationId: row.organizationId }, row.keySealed!);
  const dir = join(deps.dataDir, 'tls');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'local-ca.pem'), row.certPem!, { mode: 0o644 });
  return loadCa(row.certPem!, keyPem);
}
