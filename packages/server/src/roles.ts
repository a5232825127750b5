/**
 * The parts the all-in-one process and the split `server` / `node` processes start alike: the
 * control plane on SQLite under its data dir, the builder, and a node's runtime, router and
 * agent. What differs (the bus, the builder's bridge, sharing the blob directory) comes in as
 * arguments; each caller keeps its own startup order around these and its own shutdown order.
 */
import { chmod, mkdir } from 'node:fs/promises';
import { cpus, hostname, totalmem } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Bus } from '@shellwego/bus';
import type { BlobStore } from '@shellwego/core';
import { FileBlobStore, PostgresLeaderElection, openPostgresStore, openSqliteStore } from '@shellwego/store';
import type { Store } from '@shellwego/store';
import { createControlPlane, SecretBox } from '@shellwego/control-plane';
import { createRuntime, detectIsolation } from '@shellwego/sandbox';
import type { IsolationMode } from '@shellwego/sandbox';
import { createAgent } from '@shellwego/agent';
import { createBuilder } from '@shellwego/builder';
import { createRouter } from '@shellwego/router';
import type { ClusterIdentity } from '@shellwego/router';
import type { Router } from '@shellwego/router';
import type { BootstrapResult } from '@shellwego/control-plane';
import type { AllInOneConfig } from './config.ts';
import { tlsSettings } from './tls.ts';
import { startApiTls } from './api-tls.ts';
import type { ApiTls } from './api-tls.ts';
import type { Server as TlsServer } from 'node:tls';
import { firstHost } from './util.ts';
import { endpoint } from './advertise.ts';

export const VERSION = '0.1.0';

/** Fails startup when sandboxing was asked for but is not available; warns loudly when it is off. */
export async function requireIsolation(isolation: IsolationMode, what: string, logger: Logger): Promise<void> {
  if (isolation === 'sandbox') {
    const d = await detectIsolation();
    if (!d.available) {
      throw new Error(`sandboxed isolation is not available here: ${d.reason}. ` +
        'Install bubblewrap and run as root (see README: Isolation), or start with --isolation none ' +
        `(SHELLWEGO_ISOLATION=none) to run ${what} as plain processes without isolation.`);
    }
  } else {
    logger.warn(`isolation is NONE: ${what} run as plain processes without namespaces or limits (development only)`);
  }
}

/** The host to put in printed URLs: a wildcard bind address is reachable on loopback. */
export function urlHost(bind: string): string {
  return bind === '0.0.0.0' || bind === '::' ? '127.0.0.1' : bind;
}

/**
 * The control plane's state under config.dataDir (SQLite store, blobs, master key), then what
 * `connect` makes (the bus, and anything else that must exist before the control plane), then
 * the control plane itself and the first admin. `shareBlobsDir` creates the blob directory up
 * front for nodes on this machine to read.
 */
export async function startControlPlaneRole<X extends { bus: Bus }>(
  config: AllInOneConfig, logger: Logger, connect: () => Promise<X>, opts: { shareBlobsDir?: boolean; databaseUrl?: string | null; natsTlsCaFile?: string | null } = {},
) {
  let store: Store;
  if (opts.databaseUrl) {
    store = await openPostgresStore(opts.databaseUrl);
  } else {
    const dbFile = join(config.dataDir, 'shellwego.db');
    store = await openSqliteStore(dbFile);
    await chmod(dbFile, 0o600); // SQLite creates -wal/-shm with the database file's mode
  }
  const blobsDir = join(config.dataDir, 'blobs');
  const blobs = new FileBlobStore(blobsDir);
  if (opts.shareBlobsDir) await mkdir(blobsDir, { recursive: true, mode: 0o711 }); // nodes on this machine read artifacts here
  // Config values: per-organization data keys wrapped by the file master key (ADR 0005).
  const secrets = await SecretBox.fromFile(join(config.dataDir, 'master.key'), store);
  const connected = await connect();
  // The API over https (split mode's default): a leaf of the install's CA, which nodes pin.
  const apiTls = await startApiTls(config.apiTls, {
    store, secrets, baseDomain: config.baseDomain, dataDir: config.dataDir, bind: config.bind, logger: logger.child({ part: 'api-tls' }), natsTlsCaFile: opts.natsTlsCaFile,
  });

  const cp = await createControlPlane({
    store, bus: connected.bus, blobs, secrets, logger: logger.child({ part: 'control-plane' }),
    settings: { baseDomain: config.baseDomain, routerPort: config.routerPort, routerScheme: 'http', dataDir: config.dataDir, maxUploadBytes: config.maxUploadBytes, version: VERSION, tls: await tlsSettings(config.tls, config.tls.httpsPort), fetchAllowPrivate: config.fetchAllowPrivate, scheduling: config.scheduling, ...(apiTls ? { nodeTls: apiTls.nodeTls } : {}) },
    ...(apiTls ? { https: apiTls.https } : {}),
    reconcileIntervalMs: config.reconcileIntervalMs,
    nodeDownAfterMs: config.nodeDownAfterMs,
    // Several servers may share one PostgreSQL: one leads the controllers (ADR 0012).
    ...(opts.databaseUrl ? { leader: new PostgresLeaderElection(opts.databaseUrl) } : {}),
  });
  const bootstrap = await cp.bootstrap({ email: config.adminEmail, password: config.adminPassword });
  return { ...connected, store, blobs, blobsDir, secrets, cp, bootstrap, apiTls };
}

/**
 * The API listening (https when apiTls is set; its certificate then renews in place): the URL
 * to print (local) and the one nodes join, which the control plane hands out with join tokens.
 */
export async function listenApi(config: AllInOneConfig, cp: Awaited<ReturnType<typeof createControlPlane>>, apiTls: ApiTls | null): Promise<{ apiUrl: string; apiPort: number }> {
  const apiPort = await cp.listen(config.bind, config.apiPort);
  const scheme = apiTls ? 'https' : 'http';
  if (apiTls) apiTls.attach(cp.http.server as unknown as TlsServer);
  // Nodes elsewhere reach the first configured API host name; else the bind address.
  cp.context.settings.apiUrl = `${scheme}://${config.apiTls.hostnames[0] ?? urlHost(config.bind)}:${apiPort}`;
  return { apiUrl: `${scheme}://${urlHost(config.bind)}:${apiPort}`, apiPort };
}

/** A sandbox runtime on its own bridge, its state under `dataDir`/sandbox. */
export function startRuntime(isolation: IsolationMode, bridge: { name: string; cidr: string }, dataDir: string) {
  return createRuntime({ isolation, bridge, cgroupRoot: 'shellwego', stateRoot: join(dataDir, 'sandbox') });
}

/** The builder, started: builds run in `runtime`, whose bridge is `bridgeCidr`. */
export function startBuilder(config: AllInOneConfig, parts: { bus: Bus; blobs: FileBlobStore; runtime: Awaited<ReturnType<typeof createRuntime>>; bridgeCidr: string; logger: Logger }) {
  const builder = createBuilder({
    bus: parts.bus, blobs: parts.blobs, runtime: parts.runtime, logger: parts.logger.child({ part: 'builder' }),
    workDir: join(config.dataDir, 'builds'), cacheDir: join(config.dataDir, 'build-cache'),
    gatewayIp: config.isolation === 'sandbox' ? firstHost(parts.bridgeCidr) : undefined,
  });
  builder.start();
  return builder;
}

/**
 * A node: the apps' runtime (config's bridge), the router (HTTPS too unless TLS is off), then
 * `beforeAgent` (the all-in-one starts its builder there), then the agent. State under `dataDir`.
 */
export async function startNodeRole<X extends object = Record<never, never>>(
  config: AllInOneConfig,
  parts: { dataDir: string; nodeId: string; bus: Bus; blobs: BlobStore; logger: Logger; cluster?: { advertiseAddress: string; port: number; tls: ClusterIdentity } },
  beforeAgent?: (started: { runtime: Awaited<ReturnType<typeof createRuntime>>; router: Router }) => X,
) {
  const { dataDir, nodeId, bus, blobs, logger } = parts;
  let agentRef: ReturnType<typeof createAgent> | null = null;
  const runtime = await startRuntime(config.isolation, { name: config.bridgeName, cidr: config.bridgeCidr }, dataDir);
  const router = await createRouter({
    bus, host: config.bind, port: config.routerPort, logger: logger.child({ part: 'router' }), nodeId,
    ...(config.tls.mode === 'off' ? {} : { tls: { port: config.tls.httpsPort } }),
    // Other nodes' routers reach this node's instances through here (routing across nodes).
    ...(parts.cluster ? { cluster: { host: parts.cluster.advertiseAddress, port: parts.cluster.port, tls: parts.cluster.tls } } : {}),
    runningAt: (id) => {
      const i = agentRef?.instances().find((x) => x.instanceId === id);
      return i && (i.state === 'running' || i.state === 'unhealthy') ? i.address : null;
    },
  });
  const extra = beforeAgent?.({ runtime, router });
  const agent = createAgent({
    nodeId, name: hostname(), bus, blobs, runtime, dataDir: join(dataDir, 'agent'), logger: logger.child({ part: 'agent' }),
    capacity: { cpus: cpus().length, memoryMb: Math.floor(totalmem() / 1024 / 1024) }, labels: config.nodeLabels,
    ...(parts.cluster && router.clusterPort !== null ? { clusterEndpoint: endpoint(parts.cluster.advertiseAddress, router.clusterPort) } : {}),
    routesVersion: () => router.routesVersion(),
  });
  agentRef = agent;
  await agent.start();
  return { ...(extra as X), runtime, router, agent };
}

/** SIGINT/SIGTERM close what runs once, then exit 0 (or 1 with the error in the log). */
export function stopOnSignals(running: { logger: Logger; close(): Promise<void> }): void {
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    running.logger.info({ signal }, 'shutting down');
    running.close().then(() => process.exit(0), (err) => {
      running.logger.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}

/** The "Admin:" lines of the startup banner: the generated password is shown this once. */
export function adminLoginLines(b: BootstrapResult, dataDir: string): string {
  return b.generatedPassword
    ? `  Admin:    ${b.email}   password: ${b.generatedPassword}\n            (shown once; also saved to ${b.passwordFile})\n`
    : b.created
      ? `  Admin:    ${b.email}   password: from SHELLWEGO_ADMIN_PASSWORD\n`
      : `  Admin:    existing accounts (first password: ${dataDir}/initial-admin-password if it was generated)\n`;
}

/** Startup failed: says what (and which variables move a busy port), then exits 1. */
export function exitOnStartupError(err: unknown, what: string): never {
  const e = err as NodeJS.ErrnoException;
  const msg = e.code === 'EADDRINUSE' ? `${e.message}: another process uses the port (set SHELLWEGO_API_PORT / SHELLWEGO_HTTP_PORT / SHELLWEGO_HTTPS_PORT)` : e.message;
  process.stderr.write(`error: could not start ${what}: ${msg}\n`);
  if (process.env.SHELLWEGO_DEBUG) process.stderr.write(String(e.stack) + '\n');
  process.exit(1);
}
