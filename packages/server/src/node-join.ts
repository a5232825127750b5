/**
 * A node that joins the control plane over the network (`node --join <API URL> --token <join
 * token>`): the first start trades the join token for the node's own credentials, saved 0600 in
 * its data dir; every later start uses those (the join token is single-use or expiring anyway).
 * With an https API URL the install's CA is pinned at join: the one whose fingerprint was given
 * with --ca-fingerprint, or the one the server's chain ends in (trust on first use, said loudly);
 * it is saved with the credentials and every later connection (API, artifacts, NATS when it uses
 * that CA) is verified against it alone, so leaf renewals keep working and any other CA is
 * refused. Plain http (loopback tests) has nothing to pin.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { cpus, hostname, totalmem } from 'node:os';
import { join } from 'node:path';
import { nodeRequest, normalizeFingerprint, pemFingerprint, probeCa, readJson } from '@shellwego/store';
import type { TlsPin } from '@shellwego/store';
import { newNodeKey, saveNodeCert } from './node-cert.ts';
import type { IssuedNodeCert } from './node-cert.ts';

export interface NodeCredentials {
  apiUrl: string;
  nodeId: string;
  secret: string;
  /** https: the install's CA, pinned at join; the API's (and maybe NATS') certificates must chain to it. */
  ca: TlsPin | null;
  /** The control plane said nats-server's certificate is signed by that CA: NATS is verified against it. */
  natsUsesInstallCa: boolean;
  /** NATS with authentication: this node's NATS user (.creds), allowed only its own subjects; null = unauthenticated NATS. */
  natsCreds: string | null;
  /**
   * Every control plane server's API URL the node was started with (`--join https://a,https://b`,
   * the one it joined through first): artifact downloads go to the next when one is down. Not saved.
   */
  apiUrls?: string[];
}

const FILE = 'node-credentials.json';

/** `https://cp:8080/` and `https://cp:8080` are one control plane. */
function normalizeApiUrl(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new Error(`--join (SHELLWEGO_JOIN_URL) must be the control plane's API URL, e.g. https://cp.example.com:8080, got '${raw}'`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`--join (SHELLWEGO_JOIN_URL) must be an http:// or https:// URL, got '${raw}'`);
  return u.origin;
}

export async function loadNodeCredentials(dataDir: string): Promise<NodeCredentials | null> {
  let text: string;
  try {
    text = await readFile(join(dataDir, FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const c = JSON.parse(text) as Partial<NodeCredentials>;
  if (typeof c.apiUrl !== 'string' || typeof c.nodeId !== 'string' || typeof c.secret !== 'string') {
    throw new Error(`${join(dataDir, FILE)} is damaged: remove it and join again with a new join token`);
  }
  // Nodes joined before CA pinning pinned the server's leaf, which a renewal replaces.
  if ('pin' in c && !c.ca) throw new Error(`${join(dataDir, FILE)} pins the control plane's certificate, not its CA (an older join): remove it and join again with a new join token`);
  return { ca: null, natsUsesInstallCa: false, natsCreds: null, ...c } as NodeCredentials;
}

/**
 * The node's credentials: saved ones, or new ones from joining with `joinToken`; null when the
 * node was given no `joinUrl` and never joined (it then reads a local blob directory).
 */
export async function nodeCredentials(opts: { dataDir: string; joinUrl: string | null; joinToken: string | null; caFingerprint: string | null; isolation: string; warn?: (msg: string) => void }): Promise<NodeCredentials | null> {
  const saved = await loadNodeCredentials(opts.dataDir);
  // Several servers of one control plane (HA), comma-separated like --nats: joined through the first.
  const apiUrls = opts.joinUrl === null ? null : [...new Set(opts.joinUrl.split(',').map((u) => u.trim()).filter(Boolean).map(normalizeApiUrl))];
  if (apiUrls !== null && apiUrls.length === 0) throw new Error(`--join (SHELLWEGO_JOIN_URL) must be the control plane's API URL, e.g. https://cp.example.com:8080, got '${opts.joinUrl}'`);
  const apiUrl = apiUrls === null ? null : apiUrls[0];
  // One pinned CA for all of them: a plain-http one among https servers would bypass it.
  if (apiUrls?.some((u) => u.startsWith('https:') !== apiUrl!.startsWith('https:'))) throw new Error(`--join (SHELLWEGO_JOIN_URL): the control plane's servers must all be https or all plain http, got ${apiUrls.join(', ')}`);
  if (saved) {
    if (apiUrls !== null && !apiUrls.includes(saved.apiUrl)) {
      throw new Error(`this node joined the control plane at ${saved.apiUrl}, not ${apiUrls.join(', ')}: use another --data-dir to join another one (or list ${saved.apiUrl} in --join too)`);
    }
    // The saved server first: it is the one the node's credentials were issued by.
    return { ...saved, apiUrls: [saved.apiUrl, ...(apiUrls ?? []).filter((u) => u !== saved.apiUrl)] };
  }
  if (apiUrl === null) {
    if (opts.joinToken) throw new Error('--token (SHELLWEGO_JOIN_TOKEN) needs --join <API URL> (SHELLWEGO_JOIN_URL)');
    return null;
  }
  if (!opts.joinToken) throw new Error(`to join ${apiUrl} the first time, give --token <join token> (SHELLWEGO_JOIN_TOKEN): an operator creates one with \`shellwego nodes token\``);
  if (opts.caFingerprint && !apiUrl.startsWith('https:')) throw new Error(`--ca-fingerprint pins an https API; ${apiUrl} is plain http`);
  const expected = opts.caFingerprint ? normalizeFingerprint(opts.caFingerprint) : null;
  const ca = apiUrl.startsWith('https:') ? await probeCa(apiUrl, expected) : null;
  if (ca && !expected) {
    (opts.warn ?? ((m: string) => process.stderr.write(`${m}\n`)))(`WARNING: no --ca-fingerprint given: trusting the CA ${apiUrl} presented on first use (${ca.fingerprint}). ` +
      'Compare it with the fingerprint `shellwego nodes token` prints; if they differ, remove node-credentials.json from the node\'s data dir and join again with --ca-fingerprint.');
  }
  // The cluster certificate's key pair is made here: only the public key is sent (ADR 0022).
  const clusterKey = newNodeKey();
  const { creds, cluster } = await join_(apiUrl, opts.joinToken, opts.isolation, ca, clusterKey.publicKeyPem);
  // Written whole or not at all; 0600: the secret is this node's identity.
  await mkdir(opts.dataDir, { recursive: true, mode: 0o711 });
  const file = join(opts.dataDir, FILE);
  await writeFile(`${file}.tmp`, JSON.stringify(creds, null, 2) + '\n', { mode: 0o600 });
  await rename(`${file}.tmp`, file);
  // The node id file other tools read (and stableNodeId) names the id the control plane gave.
  await writeFile(join(opts.dataDir, 'node-id'), creds.nodeId + '\n', { mode: 0o600 });
  // Without one (an older control plane, or a bad answer) the node asks for it again at start.
  if (cluster) await saveNodeCert(opts.dataDir, creds.nodeId, cluster, clusterKey.keyPem).catch((err: unknown) => opts.warn?.(`the cluster certificate from the join answer is unusable (${(err as Error).message}): asking for another one`));
  return { ...creds, apiUrls: apiUrls! };
}

async function join_(apiUrl: string, token: string, isolation: string, pin: TlsPin | null, clusterPublicKey: string): Promise<{ creds: NodeCredentials; cluster: IssuedNodeCert | null }> {
  let status: number;
  let body: { nodeId?: string; secret?: string; caPem?: string | null; natsUsesInstallCa?: boolean; natsCreds?: string | null; cluster?: IssuedNodeCert | null; error?: { message?: string } } | null;
  try {
    const res = await nodeRequest(`${apiUrl}/v1/nodes/join`, {
      method: 'POST', pin,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token, name: hostname(), isolation, capacity: { cpus: cpus().length, memoryMb: Math.floor(totalmem() / 1024 / 1024) }, clusterPublicKey }),
    });
    status = res.statusCode ?? 0;
    body = (await readJson(res)) as typeof body;
  } catch (err) {
    throw new Error(`could not reach the control plane at ${apiUrl} to join: ${(err as Error).message}`, { cause: err });
  }
  if (status !== 201 || !body?.nodeId || !body.secret) {
    throw new Error(`the control plane at ${apiUrl} refused to let this node join (HTTP ${status}): ${body?.error?.message ?? 'no reason given'}`);
  }
  // The request was verified against the pinned CA; the CA the server names must be that one too
  // (a server configured with another CA than it serves its chain with is refused, not half-trusted).
  if (pin && (!body.caPem || pemFingerprint(body.caPem) !== pin.fingerprint)) {
    throw new Error(`the control plane at ${apiUrl} says its CA is ${body.caPem ? pemFingerprint(body.caPem) : 'none (plain http)'}, not the pinned ${pin.fingerprint}: refusing to join (check the server's SHELLWEGO_API_TLS_* settings)`);
  }
  return {
    creds: { apiUrl, nodeId: body.nodeId, secret: body.secret, ca: pin, natsUsesInstallCa: pin !== null && body.natsUsesInstallCa === true, natsCreds: body.natsCreds ?? null },
    cluster: body.cluster?.certPem && body.cluster.caPem ? body.cluster : null,
  };
}
