import { resolve } from 'node:path';
import type { IsolationMode } from '@shellwego/sandbox';
import { tlsConfigFromEnv } from './tls.ts';
import { advertiseAddressFrom } from './advertise.ts';
import type { TlsConfig } from './tls.ts';
import { apiTlsConfigFromEnv } from './api-tls.ts';
import type { ApiTlsConfig } from './api-tls.ts';

/** Settings of the all-in-one process, from the environment (names are part of the interface contract). */
export interface AllInOneConfig {
  dataDir: string;
  bind: string;
  apiPort: number;
  routerPort: number;
  baseDomain: string;
  adminEmail: string;
  adminPassword?: string;
  isolation: IsolationMode;
  bridgeName: string;
  bridgeCidr: string;
  maxUploadBytes: number;
  logLevel: string;
  /** On SIGINT/SIGTERM, leave apps running for the next start to adopt (live restore). */
  keepAppsRunning: boolean;
  reconcileIntervalMs: number;
  /** A node silent this long is down; its instances are replaced elsewhere (SHELLWEGO_NODE_DOWN_AFTER_MS, default 10 s). */
  nodeDownAfterMs: number;
  /** HTTPS on the router and certificates: SHELLWEGO_TLS, SHELLWEGO_HTTPS_PORT, SHELLWEGO_ACME_* (see tls.ts). */
  tls: TlsConfig;
  /** Webhook fetches may reach private/loopback addresses (internal git servers, tests). */
  fetchAllowPrivate: boolean;
  /** Placement: SHELLWEGO_SCHEDULING_POLICY (spread|pack, default spread), SHELLWEGO_CPU_OVERCOMMIT (default 4). */
  scheduling: { policy: 'spread' | 'pack'; cpuOvercommit: number };
  /** This node's labels for placement, SHELLWEGO_NODE_LABELS=zone=a,disk=ssd. */
  nodeLabels: Record<string, string>;
  /** The API over https (SHELLWEGO_API_TLS, SHELLWEGO_API_HOSTNAMES, SHELLWEGO_API_TLS_CERT/KEY/CA): off for `up`, on for `server` unless turned off. */
  apiTls: ApiTlsConfig;
}

function port(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${name} must be a port number (0-65535), got '${value}'`);
  return n;
}

function schedulingFromEnv(env: NodeJS.ProcessEnv): AllInOneConfig['scheduling'] {
  const policy = env.SHELLWEGO_SCHEDULING_POLICY || 'spread';
  if (policy !== 'spread' && policy !== 'pack') throw new Error(`SHELLWEGO_SCHEDULING_POLICY must be 'spread' or 'pack', got '${policy}'`);
  const cpuOvercommit = Number(env.SHELLWEGO_CPU_OVERCOMMIT || 4);
  if (!Number.isFinite(cpuOvercommit) || cpuOvercommit < 1 || cpuOvercommit > 64) throw new Error(`SHELLWEGO_CPU_OVERCOMMIT must be a number from 1 to 64, got '${env.SHELLWEGO_CPU_OVERCOMMIT}'`);
  return { policy, cpuOvercommit };
}

function labelsFromEnv(value: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (value ?? '').split(',').map((p) => p.trim()).filter(Boolean)) {
    const m = /^([a-z0-9][a-z0-9._/-]*)=([A-Za-z0-9._-]*)$/.exec(pair);
    if (!m) throw new Error(`SHELLWEGO_NODE_LABELS must be key=value pairs separated by commas (e.g. zone=a,disk=ssd), got '${pair}'`);
    out[m[1]] = m[2];
  }
  return out;
}

export function configFromEnv(env: NodeJS.ProcessEnv, overrides: Partial<AllInOneConfig> = {}): AllInOneConfig {
  const isolation = (overrides.isolation ?? env.SHELLWEGO_ISOLATION ?? 'sandbox') as string;
  if (isolation !== 'sandbox' && isolation !== 'none') throw new Error(`SHELLWEGO_ISOLATION / --isolation must be 'sandbox' or 'none', got '${isolation}'`);
  return {
    dataDir: resolve(env.SHELLWEGO_DATA_DIR || '.shellwego'),
    bind: env.SHELLWEGO_BIND || '127.0.0.1',
    apiPort: port('SHELLWEGO_API_PORT', env.SHELLWEGO_API_PORT, 8080),
    routerPort: port('SHELLWEGO_HTTP_PORT', env.SHELLWEGO_HTTP_PORT, 8000),
    baseDomain: (env.SHELLWEGO_BASE_DOMAIN || 'localhost').toLowerCase(),
    adminEmail: env.SHELLWEGO_ADMIN_EMAIL || 'admin@localhost',
    adminPassword: env.SHELLWEGO_ADMIN_PASSWORD || undefined,
    bridgeName: env.SHELLWEGO_BRIDGE || 'swg0',
    bridgeCidr: env.SHELLWEGO_BRIDGE_CIDR || '10.89.0.0/16',
    maxUploadBytes: Number(env.SHELLWEGO_MAX_UPLOAD_MB || 200) * 1024 * 1024,
    logLevel: env.SHELLWEGO_LOG_LEVEL || 'info',
    keepAppsRunning: env.SHELLWEGO_KEEP_APPS_RUNNING === '1',
    reconcileIntervalMs: Number(env.SHELLWEGO_RECONCILE_MS || 5000),
    nodeDownAfterMs: millis('SHELLWEGO_NODE_DOWN_AFTER_MS', env.SHELLWEGO_NODE_DOWN_AFTER_MS, 10_000, 2_000),
    tls: tlsConfigFromEnv(env),
    fetchAllowPrivate: env.SHELLWEGO_FETCH_ALLOW_PRIVATE === '1',
    scheduling: schedulingFromEnv(env),
    nodeLabels: labelsFromEnv(env.SHELLWEGO_NODE_LABELS),
    apiTls: apiTlsConfigFromEnv(env, false),
    ...overrides,
    isolation,
  };
}

// ---------- split mode (server / node) ----------

/** Settings of `server` (control plane + builder) and `node` (agent + router) processes. */
export interface SplitConfig extends AllInOneConfig {
  /** NATS server URL(s), comma-separated (SHELLWEGO_NATS_URL / --nats). */
  natsUrls: string[];
  /** server: PostgreSQL instead of the embedded SQLite (SHELLWEGO_DATABASE_URL / --database). */
  databaseUrl: string | null;
  /**
   * Carry one-shot messages (build requests/results, instance status, assignments, logs) through
   * NATS JetStream, at least once: on by default (nats-server must run with -js);
   * SHELLWEGO_NATS_JETSTREAM=0 turns it off (core NATS, at most once; state is still republished).
   */
  natsJetStream: boolean;
  /**
   * NATS user credentials (.creds) for this process (SHELLWEGO_NATS_CREDS / --nats-creds): the
   * server's from `nats-auth init`; a node on the server's machine one from `nats-auth node` (a
   * joined node gets its own at join). null: NATS without authentication (loopback, development).
   */
  natsCreds: string | null;
  /** server: the NATS account signing key from `nats-auth init` (SHELLWEGO_NATS_ACCOUNT_SEED / --nats-account-seed): joining nodes get NATS credentials. */
  natsAccountSeed: string | null;
  /** server: revoking removed nodes' NATS users — system.creds and operator-signer.json from `nats-auth init` (SHELLWEGO_NATS_SYSTEM_CREDS, SHELLWEGO_NATS_OPERATOR_SIGNER). */
  natsSystemCreds: string | null;
  natsOperatorSigner: string | null;
  /** node: the control plane's blob directory (same machine until remote blob fetch exists). */
  blobsDir: string;
  /** node: its own state (node id, sandboxes, agent state), apart from the server's data dir. */
  nodeDataDir: string;
  /** node: join the control plane at this API URL and fetch artifacts from it (SHELLWEGO_JOIN_URL / --join). */
  joinUrl: string | null;
  /** node: the join token for the first start (SHELLWEGO_JOIN_TOKEN / --token); later starts use the saved credentials. */
  joinToken: string | null;
  /** node: the https API's certificate fingerprint to pin at join (SHELLWEGO_CA_FINGERPRINT / --ca-fingerprint); without it, trust on first use. */
  caFingerprint: string | null;
  /** server: the builder's sandbox bridge, apart from the node's so one machine can run both. */
  buildBridgeName: string;
  buildBridgeCidr: string;
  /** node: the IP other nodes' routers reach this node's router at (SHELLWEGO_ADVERTISE_ADDRESS / --advertise-address; default: the default route's interface, else 127.0.0.1). */
  advertiseAddress: string;
  /** node: the router's cluster listener port on advertiseAddress (SHELLWEGO_CLUSTER_PORT, default 8001; 0 = a free one). */
  clusterPort: number;
  /** server and node: CA file nats-server's certificate is verified against (SHELLWEGO_NATS_TLS_CA); a joined node may use its pinned CA instead. */
  natsTlsCa: string | null;
}

export function splitConfigFromEnv(env: NodeJS.ProcessEnv, overrides: Partial<SplitConfig> = {}): SplitConfig {
  const base = configFromEnv(env, overrides);
  const natsUrls = overrides.natsUrls ?? (env.SHELLWEGO_NATS_URL || 'nats://127.0.0.1:4222').split(',').map((u) => u.trim()).filter(Boolean);
  for (const u of natsUrls) {
    if (!/^(nats|tls):\/\/[^/\s]+$/.test(u)) throw new Error(`SHELLWEGO_NATS_URL / --nats must be nats://host:port (comma-separated for several), got '${u}'`);
  }
  const databaseUrl = overrides.databaseUrl ?? (env.SHELLWEGO_DATABASE_URL || null);
  if (databaseUrl !== null && !/^postgres(ql)?:\/\/\S+$/.test(databaseUrl)) {
    throw new Error('SHELLWEGO_DATABASE_URL / --database must be a postgres://user:password@host:port/database URL');
  }
  return {
    ...base,
    natsUrls,
    databaseUrl,
    natsJetStream: overrides.natsJetStream ?? !['0', 'false', 'no', 'off'].includes((env.SHELLWEGO_NATS_JETSTREAM ?? '').toLowerCase()),
    natsCreds: env.SHELLWEGO_NATS_CREDS ? resolve(env.SHELLWEGO_NATS_CREDS) : null,
    natsAccountSeed: env.SHELLWEGO_NATS_ACCOUNT_SEED ? resolve(env.SHELLWEGO_NATS_ACCOUNT_SEED) : null,
    natsSystemCreds: env.SHELLWEGO_NATS_SYSTEM_CREDS ? resolve(env.SHELLWEGO_NATS_SYSTEM_CREDS) : null,
    natsOperatorSigner: env.SHELLWEGO_NATS_OPERATOR_SIGNER ? resolve(env.SHELLWEGO_NATS_OPERATOR_SIGNER) : null,
    blobsDir: resolve(env.SHELLWEGO_BLOBS_DIR || `${base.dataDir}/blobs`),
    nodeDataDir: resolve(env.SHELLWEGO_NODE_DATA_DIR || '.shellwego-node'),
    joinUrl: env.SHELLWEGO_JOIN_URL || null,
    joinToken: env.SHELLWEGO_JOIN_TOKEN || null,
    caFingerprint: env.SHELLWEGO_CA_FINGERPRINT || null,
    buildBridgeName: env.SHELLWEGO_BUILD_BRIDGE || 'swgb0',
    buildBridgeCidr: env.SHELLWEGO_BUILD_BRIDGE_CIDR || '10.90.0.0/16',
    advertiseAddress: overrides.advertiseAddress ?? advertiseAddressFrom(env.SHELLWEGO_ADVERTISE_ADDRESS),
    clusterPort: port('SHELLWEGO_CLUSTER_PORT', env.SHELLWEGO_CLUSTER_PORT, 8001),
    apiTls: apiTlsConfigFromEnv(env, true),
    natsTlsCa: env.SHELLWEGO_NATS_TLS_CA ? resolve(env.SHELLWEGO_NATS_TLS_CA) : null,
    ...overrides,
    isolation: base.isolation,
  };
}

/** A duration in milliseconds from the environment: a whole number, at least `min`. */
function millis(name: string, value: string | undefined, fallback: number, min: number): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be a whole number of milliseconds, at least ${min}, got '${value}'`);
  return n;
}
