/**
 * A node that joins the control plane over the network (`node --join <API URL> --token <join
 * token>`): the first start trades the join token for the node's own credentials, saved 0600 in
 * its data dir; every later start uses those (the join token is single-use or expiring anyway).
 * With an https API URL the control plane's certificate is pinned at join: the one given with
 * --ca-fingerprint, or the one seen then (trust on first use); it is saved with the credentials
 * and any other certificate later is refused. Plain http (loopback tests) has nothing to pin.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { cpus, hostname, totalmem } from 'node:os';
import { join } from 'node:path';
import { nodeRequest, normalizeFingerprint, probeCertificate, readJson } from '@shellwego/store';
import type { TlsPin } from '@shellwego/store';

export interface NodeCredentials {
  apiUrl: string;
  nodeId: string;
  secret: string;
  /** https: the control plane's certificate, pinned at join. */
  pin: TlsPin | null;
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
  return { pin: null, ...c } as NodeCredentials;
}

/**
 * The node's credentials: saved ones, or new ones from joining with `joinToken`; null when the
 * node was given no `joinUrl` and never joined (it then reads a local blob directory).
 */
export async function nodeCredentials(opts: { dataDir: string; joinUrl: string | null; joinToken: string | null; caFingerprint: string | null; isolation: string }): Promise<NodeCredentials | null> {
  const saved = await loadNodeCredentials(opts.dataDir);
  const apiUrl = opts.joinUrl === null ? null : normalizeApiUrl(opts.joinUrl);
  if (saved) {
    if (apiUrl !== null && apiUrl !== saved.apiUrl) {
      throw new Error(`this node joined the control plane at ${saved.apiUrl}, not ${apiUrl}: use another --data-dir to join another one`);
    }
    return saved;
  }
  if (apiUrl === null) {
    if (opts.joinToken) throw new Error('--token (SHELLWEGO_JOIN_TOKEN) needs --join <API URL> (SHELLWEGO_JOIN_URL)');
    return null;
  }
  if (!opts.joinToken) throw new Error(`to join ${apiUrl} the first time, give --token <join token> (SHELLWEGO_JOIN_TOKEN): an operator creates one with \`shellwego nodes token\``);
  if (opts.caFingerprint && !apiUrl.startsWith('https:')) throw new Error(`--ca-fingerprint pins an https API; ${apiUrl} is plain http`);
  const expected = opts.caFingerprint ? normalizeFingerprint(opts.caFingerprint) : null;
  const pin = apiUrl.startsWith('https:') ? await probeCertificate(apiUrl, expected) : null;
  const creds = await join_(apiUrl, opts.joinToken, opts.isolation, pin);
  // Written whole or not at all; 0600: the secret is this node's identity.
  await mkdir(opts.dataDir, { recursive: true, mode: 0o711 });
  const file = join(opts.dataDir, FILE);
  await writeFile(`${file}.tmp`, JSON.stringify(creds, null, 2) + '\n', { mode: 0o600 });
  await rename(`${file}.tmp`, file);
  // The node id file other tools read (and stableNodeId) names the id the control plane gave.
  await writeFile(join(opts.dataDir, 'node-id'), creds.nodeId + '\n', { mode: 0o600 });
  return creds;
}

async function join_(apiUrl: string, token: string, isolation: string, pin: TlsPin | null): Promise<NodeCredentials> {
  let status: number;
  let body: { nodeId?: string; secret?: string; error?: { message?: string } } | null;
  try {
    const res = await nodeRequest(`${apiUrl}/v1/nodes/join`, {
      method: 'POST', pin,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token, name: hostname(), isolation, capacity: { cpus: cpus().length, memoryMb: Math.floor(totalmem() / 1024 / 1024) } }),
    });
    status = res.statusCode ?? 0;
    body = (await readJson(res)) as typeof body;
  } catch (err) {
    throw new Error(`could not reach the control plane at ${apiUrl} to join: ${(err as Error).message}`, { cause: err });
  }
  if (status !== 201 || !body?.nodeId || !body.secret) {
    throw new Error(`the control plane at ${apiUrl} refused to let this node join (HTTP ${status}): ${body?.error?.message ?? 'no reason given'}`);
  }
  return { apiUrl, nodeId: body.nodeId, secret: body.secret, pin };
}
