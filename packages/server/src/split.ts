/**
 * Split mode: the control plane (API, deployer, builds + the builder) and the node (agent +
 * router) as separate processes that meet only over NATS. Killing or restarting the `server`
 * never touches a node's apps or router: the node keeps serving with its last route table, and
 * the restarted control plane adopts what runs (the agent keeps instances whose spec is
 * unchanged). Both sides reconnect to NATS forever, so a restarted nats-server heals too.
 */
import { access, chmod, mkdir } from 'node:fs/promises';
import { cpus, hostname, totalmem } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { connectNatsBus } from '@shellwego/bus';
import type { NatsBus } from '@shellwego/bus';
import { FileBlobStore, openSqliteStore } from '@shellwego/store';
import { createControlPlane, SecretBox } from '@shellwego/control-plane';
import type { BootstrapResult } from '@shellwego/control-plane';
import { createRuntime, detectIsolation } from '@shellwego/sandbox';
import type { IsolationMode } from '@shellwego/sandbox';
import { createAgent } from '@shellwego/agent';
import { createBuilder } from '@shellwego/builder';
import { createRouter } from '@shellwego/router';
import { splitConfigFromEnv } from './config.ts';
import type { SplitConfig } from './config.ts';
import { VERSION } from './all-in-one.ts';
import { tlsSettings } from './tls.ts';
import { firstHost, stableNodeId } from './util.ts';

export interface SplitServer {
  apiUrl: string;
  apiPort: number;
  blobsDir: string;
  bootstrap: BootstrapResult;
  logger: Logger;
  close(): Promise<void>;
}

export interface SplitNode {
  nodeId: string;
  routerUrl: string;
  routerPort: number;
  httpsUrl: string | null;
  logger: Logger;
  /** Stops the node; apps keep running only when asked to (the next start adopts them). */
  close(opts?: { keepAppsRunning?: boolean }): Promise<void>;
}

async function requireIsolation(isolation: IsolationMode, logger: Logger): Promise<void> {
  if (isolation === 'sandbox') {
    const d = await detectIsolation();
    if (!d.available) {
      throw new Error(`sandboxed isolation is not available here: ${d.reason}. ` +
        'Install bubblewrap and run as root (see README: Isolation), or start with --isolation none ' +
        '(SHELLWEGO_ISOLATION=none) to run apps and builds as plain processes without isolation.');
    }
  } else {
    logger.warn('isolation is NONE: apps and builds run as plain processes without namespaces or limits (development only)');
  }
}

/** NATS connection with its state changes in the log; waits (and says so) until NATS answers. */
async function connectBus(config: SplitConfig, name: string, logger: Logger): Promise<NatsBus> {
  const waiting = setTimeout(() => logger.warn({ nats: config.natsUrls }, 'waiting for NATS to accept the connection'), 2_000);
  try {
    return await connectNatsBus({
      servers: config.natsUrls,
      name,
      onError: (err, subject) => logger.error({ err, subject }, 'bus handler failed'),
      onStatus: (s) => {
        if (s.type === 'disconnect') logger.warn({ server: s.data }, 'NATS connection lost: reconnecting (apps keep running)');
        else if (s.type === 'reconnect') logger.info({ server: s.data }, 'NATS connection restored');
        else if (s.type === 'dropped') logger.warn({ messages: s.data }, 'NATS was away too long: messages beyond the offline buffer were dropped (state is republished)');
        else if (s.type === 'error') logger.error({ err: s.data }, 'NATS error');
      },
    });
  } finally {
    clearTimeout(waiting);
  }
}

/** `server`: API, deployer and build controller, plus the builder, on SQLite and NATS. */
export async function startServer(config: SplitConfig, logger: Logger = pino({ level: config.logLevel })): Promise<SplitServer> {
  await mkdir(config.dataDir, { recursive: true, mode: 0o711 });
  await requireIsolation(config.isolation, logger);

  const dbFile = join(config.dataDir, 'shellwego.db');
  const store = await openSqliteStore(dbFile);
  await chmod(dbFile, 0o600);
  const blobsDir = join(config.dataDir, 'blobs');
  const blobs = new FileBlobStore(blobsDir);
  await mkdir(blobsDir, { recursive: true, mode: 0o711 }); // nodes on this machine read artifacts here
  const secrets = await SecretBox.fromFile(join(config.dataDir, 'master.key'), store);
  const bus = await connectBus(config, `shellwego-server-${hostname()}`, logger.child({ part: 'bus' }));

  const cp = await createControlPlane({
    store, bus, blobs, secrets, logger: logger.child({ part: 'control-plane' }),
    settings: { baseDomain: config.baseDomain, routerPort: config.routerPort, routerScheme: 'http', dataDir: config.dataDir, maxUploadBytes: config.maxUploadBytes, version: VERSION, tls: await tlsSettings(config.tls, config.tls.httpsPort), fetchAllowPrivate: config.fetchAllowPrivate },
    reconcileIntervalMs: config.reconcileIntervalMs,
  });
  const bootstrap = await cp.bootstrap({ email: config.adminEmail, password: config.adminPassword });

  // Builds get their own bridge: a node on the same machine owns the apps' bridge and its IPs.
  const runtime = await createRuntime({
    isolation: config.isolation,
    bridge: { name: config.buildBridgeName, cidr: config.buildBridgeCidr },
    cgroupRoot: 'shellwego',
    stateRoot: join(config.dataDir, 'sandbox'),
  });
  const builder = createBuilder({
    bus, blobs, runtime, logger: logger.child({ part: 'builder' }),
    workDir: join(config.dataDir, 'builds'), cacheDir: join(config.dataDir, 'build-cache'),
    gatewayIp: config.isolation === 'sandbox' ? firstHost(config.buildBridgeCidr) : undefined,
  });
  builder.start();
  const apiPort = await cp.listen(config.bind, config.apiPort);

  const hostForUrl = config.bind === '0.0.0.0' || config.bind === '::' ? '127.0.0.1' : config.bind;
  let closed = false;
  return {
    apiUrl: `http://${hostForUrl}:${apiPort}`,
    apiPort,
    blobsDir,
    bootstrap,
    logger,
    async close() {
      if (closed) return;
      closed = true;
      await cp.close();
      await builder.close();
      await runtime.close();
      await bus.close();
      await store.close();
    },
  };
}

/** `node`: agent and router. Its state lives in its own data dir; artifacts come from blobsDir. */
export async function startNode(config: SplitConfig, logger: Logger = pino({ level: config.logLevel })): Promise<SplitNode> {
  await access(config.blobsDir).catch(() => {
    throw new Error(`blob directory ${config.blobsDir} does not exist: point --blobs-dir (SHELLWEGO_BLOBS_DIR) at the blobs/ ` +
      "directory in the server's data dir (nodes read build artifacts from it; fetching them over the network comes later)");
  });
  await mkdir(config.nodeDataDir, { recursive: true, mode: 0o711 });
  await requireIsolation(config.isolation, logger);
  const nodeId = await stableNodeId(config.nodeDataDir);
  const bus = await connectBus(config, `shellwego-node-${nodeId}`, logger.child({ part: 'bus' }));
  const blobs = new FileBlobStore(config.blobsDir);

  const runtime = await createRuntime({
    isolation: config.isolation,
    bridge: { name: config.bridgeName, cidr: config.bridgeCidr },
    cgroupRoot: 'shellwego',
    stateRoot: join(config.nodeDataDir, 'sandbox'),
  });
  const router = await createRouter({
    bus, host: config.bind, port: config.routerPort, logger: logger.child({ part: 'router' }),
    ...(config.tls.mode === 'off' ? {} : { tls: { port: config.tls.httpsPort } }),
  });
  const agent = createAgent({
    nodeId, name: hostname(), bus, blobs, runtime, dataDir: join(config.nodeDataDir, 'agent'), logger: logger.child({ part: 'agent' }),
    capacity: { cpus: cpus().length, memoryMb: Math.floor(totalmem() / 1024 / 1024) },
  });
  await agent.start();

  const hostForUrl = config.bind === '0.0.0.0' || config.bind === '::' ? '127.0.0.1' : config.bind;
  let closed = false;
  return {
    nodeId,
    routerUrl: `http://${hostForUrl}:${router.port}`,
    routerPort: router.port,
    httpsUrl: router.httpsPort === null ? null : `https://${hostForUrl}:${router.httpsPort}`,
    logger,
    async close(opts = {}) {
      if (closed) return;
      closed = true;
      await router.close();
      await agent.stop({ leaveRunning: opts.keepAppsRunning ?? config.keepAppsRunning });
      await runtime.close();
      await bus.close();
    },
  };
}

export interface SplitCommandOptions {
  nats?: string;
  isolation?: 'sandbox' | 'none';
  dataDir?: string;
  blobsDir?: string;
  keepAppsRunning?: boolean;
}

/** The `server` and `node` commands of main.ts: config errors exit 2, startup errors exit 1. */
export async function runSplit(role: 'server' | 'node', opts: SplitCommandOptions): Promise<void> {
  let config: SplitConfig;
  try {
    config = splitConfigFromEnv({
      ...process.env,
      ...(opts.nats ? { SHELLWEGO_NATS_URL: opts.nats } : {}),
      ...(opts.blobsDir ? { SHELLWEGO_BLOBS_DIR: opts.blobsDir } : {}),
      ...(opts.dataDir ? { [role === 'server' ? 'SHELLWEGO_DATA_DIR' : 'SHELLWEGO_NODE_DATA_DIR']: opts.dataDir } : {}),
    }, {
      ...(opts.isolation ? { isolation: opts.isolation } : {}),
      ...(opts.keepAppsRunning ? { keepAppsRunning: true } : {}),
    });
  } catch (err) {
    process.stderr.write(`error: ${(err as Error).message}\n`);
    process.exit(2);
  }
  let running: { logger: Logger; close(): Promise<void> };
  try {
    if (role === 'server') {
      const s = await startServer(config);
      running = s;
      const b = s.bootstrap;
      const login = b.generatedPassword
        ? `  Admin:    ${b.email}   password: ${b.generatedPassword}\n            (shown once; also saved to ${b.passwordFile})\n`
        : b.created
          ? `  Admin:    ${b.email}   password: from SHELLWEGO_ADMIN_PASSWORD\n`
          : `  Admin:    existing accounts (first password: ${config.dataDir}/initial-admin-password if it was generated)\n`;
      process.stdout.write(
        `\nShellWeGo control plane is running (builds: ${config.isolation}, data: ${config.dataDir}, NATS: ${config.natsUrls.join(',')})\n` +
        `  API:      ${s.apiUrl}   (OpenAPI: ${s.apiUrl}/v1/openapi.json)\n` +
        login +
        `  Nodes:    run \`shellwego-server node --nats ${config.natsUrls.join(',')} --blobs-dir ${s.blobsDir}\` on this machine\n` +
        `            (apps are served by the nodes' routers: http://<app>.${config.baseDomain}:${config.routerPort})\n` +
        `  Log in:   npx shellwego login --email ${b.email} --api ${s.apiUrl}${b.generatedPassword ? ` --password ${b.generatedPassword}` : ''}\n\n`,
      );
    } else {
      const n = await startNode(config);
      running = n;
      process.stdout.write(
        `\nShellWeGo node ${n.nodeId} is running (isolation: ${config.isolation}, data: ${config.nodeDataDir}, NATS: ${config.natsUrls.join(',')})\n` +
        `  Apps:     http://<app>.${config.baseDomain}:${n.routerPort}${n.httpsUrl ? `   and https on port ${new URL(n.httpsUrl).port}` : ''}\n` +
        `  Blobs:    ${config.blobsDir} (the server's blob directory, read locally)\n` +
        `  The node keeps serving its apps while the control plane is away.\n\n`,
      );
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const msg = e.code === 'EADDRINUSE' ? `${e.message}: another process uses the port (set SHELLWEGO_API_PORT / SHELLWEGO_HTTP_PORT / SHELLWEGO_HTTPS_PORT)` : e.message;
    process.stderr.write(`error: could not start the ShellWeGo ${role}: ${msg}\n`);
    if (process.env.SHELLWEGO_DEBUG) process.stderr.write(String(e.stack) + '\n');
    process.exit(1);
  }
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
