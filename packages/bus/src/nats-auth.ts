/**
 * NATS authentication and authorisation with NATS's own decentralised JWTs (operator → account →
 * users, nkeys, the server's NATS-based `full` resolver): nothing home-made, no server reloads.
 * `initNatsAuth` creates the operator, the system account and the ShellWeGo account (JetStream
 * enabled) and writes the nats-server config include, the account's signing key (the control plane
 * issues node users with it), a full-permission control-plane user, and what revoking a removed
 * node's user takes: an operator signing key (signs the account JWT with its revocation list) and a
 * system-account user that may only push account JWTs to nats-server (`pushAccountJwt`). `issueNodeCreds` makes the user a node
 * gets at join: it may publish only under `agent.<its id>.` (minus the subjects the control plane
 * sends it), read only its own commands, its own JetStream consumer and its own reply inbox, plus
 * what every router needs. So one node's credentials can neither read another node's assignments
 * (which carry the apps' decrypted config) nor publish in its name.
 */
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  createAccount, createOperator, createUser, decode, encodeAccount, encodeOperator, encodeUser, fmtCreds, fromSeed,
} from '@nats-io/jwt';
import type { Account, KeyPair, User } from '@nats-io/jwt';
import { credsAuthenticator } from 'nats';
import type { ConnectionOptions, NatsConnection } from 'nats';
import { subjects } from '@shellwego/core';
import { consumerNameFor, defaultDurableStreams, subjectWithin } from './durable.ts';
import type { DurableStream } from './durable.ts';

export const NATS_AUTH_FILES = {
  /** Include this in nats-server.conf: operator JWT, system account, MEMORY resolver with both accounts. */
  serverConfig: 'nats-auth.conf',
  /** The control plane's own connection (`server --nats-creds`). */
  controlPlaneCreds: 'control-plane.creds',
  /** The account's signing key, to issue node users at join (`server --nats-account-seed`). */
  accountSigner: 'account-signer.json',
  /**
   * An operator signing key plus what the account JWT holds besides revocations
   * (`server --nats-operator-signer`): the server re-signs the ShellWeGo account with its
   * revocation list. Not the operator's identity seed, which stays offline.
   */
  operatorSigner: 'operator-signer.json',
  /** A system-account user that may only publish `$SYS.REQ.CLAIMS.UPDATE` (`server --nats-system-creds`). */
  systemCreds: 'system.creds',
  /** The operator's identity seed: only needed to change the operator (e.g. replace a leaked signing key): keep it offline. */
  operatorSeed: 'operator.seed',
} as const;

/** Where nats-server keeps account JWTs it was sent (`resolver { dir }`), unless init is told another. */
export const DEFAULT_RESOLVER_DIR = '/var/lib/nats/jwt';

/** What the server needs to re-sign the ShellWeGo account JWT (operator-signer.json). */
export interface OperatorSigner {
  /** An operator signing key (seed SO…) listed in the operator JWT. */
  operatorSigningSeed: string;
  /** The ShellWeGo account's public key and its user signing keys (public): the JWT's other content. */
  account: string;
  accountSigningKeys: string[];
}

/** The subject nats-server's full resolver takes account JWT updates on (system account). */
export const CLAIMS_UPDATE_SUBJECT = '$SYS.REQ.CLAIMS.UPDATE';

export interface AccountSigner {
  /** The ShellWeGo account's public key (A…): the users' issuer_account. */
  account: string;
  /** A signing key listed in the account JWT (seed SA…): signs user JWTs. */
  signingSeed: string;
}

export interface NatsAuthInit {
  dir: string;
  files: { [K in keyof typeof NATS_AUTH_FILES]: string };
  operator: string;
  account: string;
  systemAccount: string;
  resolverDir: string;
}

/** Account limits: everything unlimited, JetStream on (memory and file storage). */
function accountLimits(jetstream: boolean): Account['limits'] {
  return {
    subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1,
    ...(jetstream ? { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 } : { mem_storage: 0, disk_storage: 0, streams: 0, consumer: 0 }),
  };
}

const te = new TextEncoder();
const td = new TextDecoder();

async function writeSecret(file: string, text: string): Promise<void> {
  await writeFile(file, text, { mode: 0o600, flag: 'wx' });
}

/**
 * Creates the operator and accounts in `dir` (made 0700). Refuses to run over an earlier init:
 * a new operator would invalidate every credential issued so far.
 */
export async function initNatsAuth(dir: string, opts: { resolverDir?: string } = {}): Promise<NatsAuthInit> {
  const out = resolve(dir);
  const files = Object.fromEntries(Object.entries(NATS_AUTH_FILES).map(([k, f]) => [k, join(out, f)])) as NatsAuthInit['files'];
  for (const f of Object.values(files)) {
    if (await stat(f).then(() => true, () => false)) {
      throw new Error(`${f} exists: NATS auth was set up in ${out} already (a new operator would invalidate every credential issued); use another directory or remove it`);
    }
  }
  const resolverDir = resolve(opts.resolverDir ?? DEFAULT_RESOLVER_DIR);
  if (/["\\\n]/.test(resolverDir)) throw new Error(`resolver directory ${JSON.stringify(resolverDir)} cannot be written into nats-server's config`);
  await mkdir(out, { recursive: true, mode: 0o700 });

  const operator = createOperator();
  // Signs account JWTs on the server (revocations): replaceable in the operator JWT, unlike the operator's own key.
  const operatorSigning = createOperator();
  const system = createAccount();
  const account = createAccount();
  const signer = createAccount(); // a signing key: can be rotated without changing the account (and its streams)
  const operatorJwt = await encodeOperator('shellwego', operator, { system_account: system.getPublicKey(), signing_keys: [operatorSigning.getPublicKey()] });
  const systemJwt = await encodeAccount('SYS', system, { limits: accountLimits(false) }, { signer: operator });
  const opSigner: OperatorSigner = { operatorSigningSeed: td.decode(operatorSigning.getSeed()), account: account.getPublicKey(), accountSigningKeys: [signer.getPublicKey()] };
  const accountJwt = await encodeAccountJwt(opSigner, {});
  const signerFile: AccountSigner = { account: account.getPublicKey(), signingSeed: td.decode(signer.getSeed()) };

  await writeFile(files.serverConfig, serverConfig({ operatorJwt, system: system.getPublicKey(), resolverDir, accounts: { [system.getPublicKey()]: systemJwt, [account.getPublicKey()]: accountJwt } }), { mode: 0o644, flag: 'wx' });
  await writeSecret(files.accountSigner, JSON.stringify(signerFile, null, 2) + '\n');
  await writeSecret(files.controlPlaneCreds, await issueUserCreds(signerFile, 'shellwego-control-plane', {}));
  await writeSecret(files.operatorSigner, JSON.stringify(opSigner, null, 2) + '\n');
  // Only pushes account JWTs (which nats-server checks are signed by the operator): useless without the operator signer.
  await writeSecret(files.systemCreds, await issueUserCreds({ account: system.getPublicKey(), signingSeed: td.decode(system.getSeed()) }, 'shellwego-account-pusher', {
    pub: { allow: [CLAIMS_UPDATE_SUBJECT], deny: [] }, sub: { allow: ['_INBOX.>'], deny: [] },
  }));
  await writeSecret(files.operatorSeed, td.decode(operator.getSeed()) + '\n');
  return { dir: out, files, operator: operator.getPublicKey(), account: account.getPublicKey(), systemAccount: system.getPublicKey(), resolverDir };
}

/**
 * The ShellWeGo account JWT: what init made, plus `revocations` (user public key → unix seconds:
 * nats-server refuses that user's JWTs issued at or before then, and closes its connections).
 */
export async function encodeAccountJwt(signer: OperatorSigner, revocations: Record<string, number>): Promise<string> {
  return encodeAccount('SHELLWEGO', signer.account, {
    limits: accountLimits(true), signing_keys: signer.accountSigningKeys, ...(Object.keys(revocations).length ? { revocations } : {}),
  }, { signer: fromSeed(te.encode(signer.operatorSigningSeed)) });
}

/**
 * Sends an account JWT to nats-server's full resolver over a system-account connection; resolves
 * once the server answered that it stored it (other servers of a cluster get it from that one).
 */
export async function pushAccountJwt(nc: NatsConnection, jwt: string, timeoutMs = 5_000): Promise<void> {
  const reply = await nc.request(CLAIMS_UPDATE_SUBJECT, te.encode(jwt), { timeout: timeoutMs }).catch((err: unknown) => {
    if ((err as { code?: string }).code === '503') {
      throw new Error('nats-server takes no account JWT updates: its config must have `resolver: { type: full, ... }` (the nats-auth.conf `nats-auth init` writes now; MEMORY cannot revoke)', { cause: err });
    }
    throw err;
  });
  let parsed: { data?: { code?: number; message?: string }; error?: { code?: number; description?: string } };
  try {
    parsed = JSON.parse(td.decode(reply.data)) as typeof parsed;
  } catch {
    throw new Error(`nats-server answered the account JWT update with something else than JSON: ${td.decode(reply.data).slice(0, 200)}`);
  }
  if (parsed.error || parsed.data?.code !== 200) {
    throw new Error(`nats-server refused the account JWT update: ${parsed.error?.description ?? parsed.data?.message ?? td.decode(reply.data).slice(0, 200)}`);
  }
}

/** A signing-key file written by `nats-auth init`, parsed; its fields are checked by the caller. */
async function readKeyFile<T>(file: string, kind: 'operator' | 'account'): Promise<Partial<T>> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Partial<T>;
  } catch (err) {
    throw new Error(`cannot read the NATS ${kind} signing key ${file} (made by \`shellwego-server nats-auth init\`): ${(err as Error).message}`);
  }
}

export async function loadOperatorSigner(file: string): Promise<OperatorSigner> {
  const parsed = await readKeyFile<OperatorSigner>(file, 'operator');
  if (typeof parsed.operatorSigningSeed !== 'string' || !parsed.operatorSigningSeed.startsWith('SO') || typeof parsed.account !== 'string' || !parsed.account.startsWith('A')
    || !Array.isArray(parsed.accountSigningKeys) || !parsed.accountSigningKeys.every((k) => typeof k === 'string' && k.startsWith('A'))) {
    throw new Error(`${file} is not a NATS operator signing key from \`shellwego-server nats-auth init\``);
  }
  fromSeed(te.encode(parsed.operatorSigningSeed)); // fails early on a damaged seed
  return parsed as OperatorSigner;
}

/** The nats-server config include (JWTs are public; nothing secret in it). */
function serverConfig(o: { operatorJwt: string; system: string; resolverDir: string; accounts: Record<string, string> }): string {
  return [
    '# ShellWeGo NATS accounts, generated by `shellwego-server nats-auth init`.',
    '# Put it next to nats-server.conf and add there:  include "nats-auth.conf"  (includes are read relative to the',
    '# including file; JetStream also needs: jetstream { store_dir: ... })',
    `operator: ${o.operatorJwt}`,
    `system_account: ${o.system}`,
    '# The NATS-based resolver takes account JWT updates at run time (revoked node users, pushed by the',
    '# server); it keeps them in dir, and the preloaded JWTs below never replace a newer one kept there.',
    `resolver: { type: full, dir: "${o.resolverDir}", allow_delete: false }`,
    'resolver_preload: {',
    ...Object.entries(o.accounts).map(([k, v]) => `  ${k}: ${v}`),
    '}',
    '',
  ].join('\n');
}

export async function loadAccountSigner(file: string): Promise<AccountSigner> {
  const parsed = await readKeyFile<AccountSigner>(file, 'account');
  if (typeof parsed.account !== 'string' || !parsed.account.startsWith('A') || typeof parsed.signingSeed !== 'string' || !parsed.signingSeed.startsWith('SA')) {
    throw new Error(`${file} is not a NATS account signing key from \`shellwego-server nats-auth init\``);
  }
  fromSeed(te.encode(parsed.signingSeed)); // fails early on a damaged seed
  return parsed as AccountSigner;
}

/** A user JWT + seed in the standard `.creds` format (what nats CLI and credsAuthenticator read). No expiry: revocation ends it. */
async function issueUserCreds(signer: AccountSigner, name: string, user: Partial<User>): Promise<string> {
  const ukp: KeyPair = createUser();
  const jwt = await encodeUser(name, ukp, signer.account, user, { signer: fromSeed(te.encode(signer.signingSeed)) });
  return td.decode(fmtCreds(jwt, ukp));
}

export interface NodePermissions {
  pub: { allow: string[]; deny: string[] };
  sub: { allow: string[]; deny: string[] };
}

/** A node's reply subjects: its own inbox prefix, never `_INBOX.>` (pulled JetStream messages arrive there). */
export const nodeInboxPrefix = (nodeId: string): string => `_INBOX.${nodeId}`;

/** What a node subscribes to (agent: its commands; router: the broadcast tables). */
function nodeSubscriptions(nodeId: string): string[] {
  return [
    subjects.assignments(nodeId), subjects.oneOffStart(nodeId), subjects.oneOffInput(nodeId, '*'), subjects.volumeDelete(nodeId),
    subjects.routes, subjects.certificates, subjects.acmeChallenges,
  ];
}

/**
 * Exactly what node `nodeId` may do. JetStream: when the durable streams are on, its own consumer
 * of each stream it reads (the name NatsBus derives from `node-<id>` and the pattern) — create,
 * info, pull, ack — and nothing that manages streams (nodes connect with createStreams: false).
 */
export function nodePermissions(nodeId: string, streams: DurableStream[] = defaultDurableStreams()): NodePermissions {
  if (!/^[A-Za-z0-9_-]+$/.test(nodeId)) throw new Error(`node id ${JSON.stringify(nodeId)} cannot be a NATS subject token`);
  const subs = nodeSubscriptions(nodeId);
  const js: string[] = [];
  for (const pattern of subs) {
    const stream = streams.find((s) => (s.delivery ?? 'consumer') === 'consumer' && s.subjects.some((f) => subjectWithin(pattern, f)));
    if (!stream) continue;
    const c = consumerNameFor(`node-${nodeId}`, pattern);
    const api = `$JS.API.CONSUMER`;
    js.push(
      `${api}.CREATE.${stream.name}.${c}`, `${api}.CREATE.${stream.name}.${c}.>`, `${api}.DURABLE.CREATE.${stream.name}.${c}`,
      `${api}.INFO.${stream.name}.${c}`, `${api}.MSG.NEXT.${stream.name}.${c}`, `$JS.ACK.${stream.name}.${c}.>`,
    );
  }
  // Publishing into a stream (status, logs) is a plain publish whose ack comes to the inbox.
  const published = [subjects.heartbeat(nodeId), subjects.instanceStatus(nodeId), subjects.appLogs(nodeId, '*'), subjects.oneOffOutput(nodeId, '*')];
  const infoStreams = streams.filter((s) => (s.delivery ?? 'consumer') === 'consumer' && [...subs, ...published].some((p) => s.subjects.some((f) => subjectWithin(p, f))));
  if (js.length > 0 || infoStreams.length > 0) js.push('$JS.API.INFO', ...infoStreams.map((s) => `$JS.API.STREAM.INFO.${s.name}`));
  return {
    pub: {
      // Router stats too are under `agent.<id>.` (`agent.<id>.router.stats`): a router reports only as its node.
      allow: [`agent.${nodeId}.>`, subjects.routesRequest, subjects.certificatesRequest, ...js],
      // What the control plane sends this node is not the node's to send.
      deny: [subjects.assignments(nodeId), subjects.oneOffStart(nodeId), subjects.oneOffInput(nodeId, '*'), subjects.volumeDelete(nodeId)],
    },
    sub: { allow: [...subs, `${nodeInboxPrefix(nodeId)}.>`], deny: [] },
  };
}

/** The `.creds` text for node `nodeId`: its permissions signed into the JWT. */
export async function issueNodeCreds(signer: AccountSigner, nodeId: string): Promise<string> {
  const p = nodePermissions(nodeId);
  return issueUserCreds(signer, `shellwego-node-${nodeId}`, { pub: p.pub, sub: p.sub });
}

function credsJwt(creds: string): string {
  const jwt = /-----BEGIN NATS USER JWT-----\s*([A-Za-z0-9._-]+)\s*------END NATS USER JWT------/.exec(creds)?.[1];
  if (!jwt) throw new Error('not a NATS .creds file (no user JWT in it)');
  return jwt;
}

/** The node id a `.creds` text was issued for (its JWT's name), or null for another user. */
export function credsNodeId(creds: string): string | null {
  const name = decode<User>(credsJwt(creds)).name;
  return name.startsWith('shellwego-node-') ? name.slice('shellwego-node-'.length) : null;
}

/** The user's public key (U…) in a `.creds` text: what a revocation names. */
export function credsUserKey(creds: string): string {
  return decode<User>(credsJwt(creds)).sub;
}

/** The account (A…) a `.creds` text's user belongs to (its issuer_account, else its issuer). */
export function credsAccount(creds: string): string {
  const c = decode<User>(credsJwt(creds));
  return c.nats.issuer_account ?? c.iss;
}

/**
 * Client options for a connection with `.creds`: a node also takes replies on its own inbox
 * prefix, the only one its permissions allow.
 */
export function credsConnection(creds: string, nodeId?: string): Partial<ConnectionOptions> {
  return { authenticator: credsAuthenticator(te.encode(creds)), ...(nodeId ? { inboxPrefix: nodeInboxPrefix(nodeId) } : {}) };
}
