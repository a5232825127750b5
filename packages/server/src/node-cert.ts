/**
 * This node's cluster certificate (ADR 0022): the identity its router presents to other nodes'
 * routers, and checks theirs against, on router-to-router hops (mutual TLS with the install CA).
 * The key pair is generated here and only the public key goes to the control plane, which signs
 * it for `shellwego://node/<id>`: at join (in the answer), or later through the node's own
 * credentials (a node joined before this existed, or a renewal). Kept in `<node data dir>/
 * cluster-tls/` (key 0600), renewed when less than 30 days are left: checked at start (in the
 * background while the saved one is valid) and once a day.
 */
import { createPrivateKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NODE_CERT_RENEW_BEFORE_MS, nodeIdentityUri } from '@shellwego/core';
import { nodeRequest, readJson } from '@shellwego/store';
import type { ClusterIdentity } from '@shellwego/router';
import type { NodeCredentials } from './node-join.ts';

const DIR = 'cluster-tls';
const DAY = 86_400_000;

export interface NodeClusterCert extends ClusterIdentity {
  notAfter: Date;
}

/** What the control plane answers (join `cluster`, or POST /v1/node/certificate). */
export interface IssuedNodeCert {
  certPem: string;
  caPem: string;
}

/** A new ECDSA P-256 key pair: the private key as PKCS#8 PEM (stays here), the public key as SPKI PEM (sent). */
export function newNodeKey(): { keyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return { keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }) as string };
}

/** `issued` checked against this node and key; the reason it is unusable otherwise. */
function checked(nodeId: string, issued: IssuedNodeCert, keyPem: string): NodeClusterCert {
  const cert = new X509Certificate(issued.certPem);
  const ca = new X509Certificate(issued.caPem);
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new Error("the certificate is not for this node's key");
  if (!(cert.subjectAltName ?? '').split(', ').includes(`URI:${nodeIdentityUri(nodeId)}`)) throw new Error(`the certificate is not for node ${nodeId} (${cert.subjectAltName ?? 'no names'})`);
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) throw new Error('the certificate is not signed by the CA that came with it');
  return { cert: issued.certPem, key: keyPem, ca: issued.caPem, notAfter: new Date(cert.validTo) };
}

/** Writes certificate, CA and key (0600); each file whole or not at all. */
export async function saveNodeCert(dataDir: string, nodeId: string, issued: IssuedNodeCert, keyPem: string): Promise<NodeClusterCert> {
  const c = checked(nodeId, issued, keyPem);
  const dir = join(dataDir, DIR);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const put = async (name: string, text: string, mode: number) => {
    await writeFile(join(dir, `${name}.tmp`), text, { mode });
    await rename(join(dir, `${name}.tmp`), join(dir, name));
  };
  // A crash between two renames leaves a key and a certificate that do not match: loadNodeCert
  // then finds none and the node asks for a new one.
  await put('key.pem', keyPem, 0o600);
  await put('ca.pem', issued.caPem, 0o644);
  await put('cert.pem', issued.certPem, 0o644);
  return c;
}

/** The saved certificate when it is whole and this node's; null otherwise (none yet, damaged, another node's). */
export async function loadNodeCert(dataDir: string, nodeId: string): Promise<NodeClusterCert | null> {
  const dir = join(dataDir, DIR);
  try {
    const [certPem, caPem, keyPem] = await Promise.all(['cert.pem', 'ca.pem', 'key.pem'].map((f) => readFile(join(dir, f), 'utf8')));
    return checked(nodeId, { certPem, caPem }, keyPem);
  } catch {
    return null;
  }
}

/** `p`, or an error after `ms` (a control plane host that drops packets must not hold the node's start for minutes). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** A new certificate for a new key, from the first control plane server that answers (node credentials). */
export async function requestNodeCert(creds: NodeCredentials, dataDir: string, timeoutMs = 20_000): Promise<NodeClusterCert> {
  const { keyPem, publicKeyPem } = newNodeKey();
  const errors: string[] = [];
  for (const apiUrl of creds.apiUrls ?? [creds.apiUrl]) {
    let status: number;
    let body: (Partial<IssuedNodeCert> & { error?: { message?: string } }) | null;
    try {
      ({ status, body } = await within((async () => {
        const res = await nodeRequest(`${apiUrl}/v1/node/certificate`, {
          method: 'POST', pin: creds.ca,
          headers: { 'content-type': 'application/json', authorization: `Node ${creds.nodeId}:${creds.secret}` },
          body: JSON.stringify({ publicKey: publicKeyPem }),
        });
        return { status: res.statusCode ?? 0, body: (await readJson(res)) as typeof body };
      })(), timeoutMs, apiUrl));
    } catch (err) {
      errors.push(`${apiUrl}: ${(err as Error).message}`);
      continue;
    }
    if (status !== 200 || !body?.certPem || !body.caPem) {
      const why = `${apiUrl} answered HTTP ${status}: ${body?.error?.message ?? 'no certificate'}`;
      // Refused credentials (a removed node) are refused by every server: no point asking the next.
      if (status === 401) throw new Error(why);
      errors.push(why);
      continue;
    }
    return saveNodeCert(dataDir, creds.nodeId, { certPem: body.certPem, caPem: body.caPem }, keyPem);
  }
  throw new Error(errors.join('; '));
}

/**
 * The certificate to use now: the saved one while it has over 30 days left, else a new one; a
 * failed renewal keeps a still valid one (said in the log). null: none usable.
 */
export async function ensureNodeCert(creds: NodeCredentials, dataDir: string, log: { info(o: object, m: string): void; warn(o: object, m: string): void; error(o: object, m: string): void }, now = Date.now(),
  saved?: NodeClusterCert | null): Promise<NodeClusterCert | null> {
  // `saved`: what the caller already read from the data dir (undefined: read it here).
  const held = saved === undefined ? await loadNodeCert(dataDir, creds.nodeId) : saved;
  if (held && held.notAfter.getTime() - now > NODE_CERT_RENEW_BEFORE_MS) return held;
  try {
    const fresh = await requestNodeCert(creds, dataDir);
    log.info({ notAfter: fresh.notAfter.toISOString(), renewed: held !== null }, 'node cluster certificate issued by the control plane');
    return fresh;
  } catch (err) {
    const why = (err as Error).message;
    if (held && held.notAfter.getTime() > now) {
      log.warn({ err: why, notAfter: held.notAfter.toISOString() }, 'renewing the node cluster certificate failed: the current one stays in use until it expires (tried again daily)');
      return held;
    }
    log.error({ err: why }, 'no cluster certificate for this node: the control plane could not issue one');
    return null;
  }
}

/**
 * At start: a saved certificate that is still valid is used at once (its renewal, if due, runs
 * in the background: renewNodeCertDaily checks right away), so a control plane that is away
 * does not hold the node's apps back; without one the node asks now (the listener needs it).
 */
export async function startupNodeCert(creds: NodeCredentials, dataDir: string, log: Parameters<typeof ensureNodeCert>[2]): Promise<NodeClusterCert | null> {
  const held = await loadNodeCert(dataDir, creds.nodeId);
  const now = Date.now();
  if (held && held.notAfter.getTime() > now + 3_600_000) return held;
  return ensureNodeCert(creds, dataDir, log, now, held);
}

/** Checks now and then once a day (`everyMs`), and hands a renewed certificate to `use`. */
export function renewNodeCertDaily(creds: NodeCredentials, dataDir: string, current: NodeClusterCert, use: (c: NodeClusterCert) => void,
  log: Parameters<typeof ensureNodeCert>[2], everyMs = DAY): { close(): void } {
  let held = current;
  let running = false;
  const check = (): void => {
    if (running) return;
    running = true;
    ensureNodeCert(creds, dataDir, log).then((c) => {
      if (c === null || c.cert === held.cert) return;
      use(c);
      held = c;
    }).catch((err: unknown) => log.error({ err }, 'node cluster certificate check failed')).finally(() => {
      running = false;
    });
  };
  const first = setImmediate(check);
  const timer = setInterval(check, everyMs);
  timer.unref();
  return {
    close: () => {
      clearImmediate(first);
      clearInterval(timer);
    },
  };
}
