/**
 * Split mode: the control plane (API, deployer, builds + the builder) and the node (agent +
 * router) as separate processes that meet only over NATS. Killing or restarting the `server`
 * never touches a node's apps or router: the node keeps serving with its last route table, and
 * the restarted control plane adopts what runs (the agent keeps instances whose spec is
 * unchanged). Both sides reconnect to NATS forever, so a restarted nats-server heals too.
 */
import { access, mkdir } from 'node:fs/promises';
import { hostname } from 'node:os';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { connectNatsBus, defaultDurableStreams } from '@shellwego/bus';
import type { NatsBus } from '@shellwego/bus';
import { FileBlobStore, HttpBlobStore } from '@shellwego/store';
import type { BootstrapResult } from '@shellwego/control-plane';
import { splitConfigFromEnv } from './config.ts';
import type { SplitConfig } from './config.ts';
import { stableNodeId } from './util.ts';
import { nodeCredentials } from './node-join.ts';
import { join } from 'node:path';
import { adminLoginLines, exitOnStartupError, requireIsolation, startBuilder, startControlPlaneRole, startNodeRole, startRuntime, stopOnSignals, urlHost } from './roles.ts';

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
  /** Where artifacts come from: the control plane's URL (joined by token) or a local blob directory. */
  blobsFrom: string;
  routerUrl: string;
  routerPort: number;
  httpsUrl: string | null;
  logger: Logger;
  /** Stops the node; apps keep running only when asked to (the next start adopts them). */
  close(opts?: { keepAppsRunning?: boolean }): Promise<void>;
}

/** NATS connection with its state changes in the log; waits (and says so) until NATS answers. */
async function connectBus(config: SplitConfig, name: string, logger: Logger, consumerName: string): Promise<NatsBus> {
  const waiting = setTimeout(() => logger.warn({ nats: config.natsUrls }, 'waiting for NATS to accept the connection'), 2_000);
  try {
    return await connectNatsBus({
      servers: config.natsUrls,
      name,
      // Durable consumers resume under a name that must be stable and unique per process.
      ...(config.natsJetStream ? { durable: { streams: defaultDurableStreams(), consumerName } } : {}),
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
  await requireIsolation(config.isolation, 'apps and builds', logger);

  const { store, blobs, blobsDir, bus, cp, bootstrap } = await startControlPlaneRole(config, logger, async () => ({
    bus: await connectBus(config, `shellwego-server-${hostname()}`, logger.child({ part: 'bus' }), `server-${hostname()}-${config.apiPort}`),
  }), { shareBlobsDir: true, databaseUrl: config.databaseUrl });

  // Builds get their own bridge: a node on the same machine owns the apps' bridge and its IPs.
  const runtime = await startRuntime(config.isolation, { name: config.buildBridgeName, cidr: config.buildBridgeCidr }, config.dataDir);
  const builder = startBuilder(config, { bus, blobs, runtime, bridgeCidr: config.buildBridgeCidr, logger });
  const apiPort = await cp.listen(config.bind, config.apiPort);

  const hostForUrl = urlHost(config.bind);
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

/**
 * `node`: agent and router. Its state lives in its own data dir; artifacts come from the control
 * plane over HTTP when the node joined with a token, else from blobsDir on this machine.
 */
export async function startNode(config: SplitConfig, logger: Logger = pino({ level: config.logLevel })): Promise<SplitNode> {
  // Joining comes first: a refused join token starts, creates (and registers) nothing.
  const creds = await nodeCredentials({ dataDir: config.nodeDataDir, joinUrl: config.joinUrl, joinToken: config.joinToken, caFingerprint: config.caFingerprint, isolation: config.isolation });
  if (!creds) {
    await access(config.blobsDir).catch(() => {
      throw new Error(`blob directory ${config.blobsDir} does not exist: point --blobs-dir (SHELLWEGO_BLOBS_DIR) at the blobs/ ` +
        "directory in the server's data dir (nodes on this machine read build artifacts from it), or join over the network with --join <API URL> --token <join token>");
    });
  }
  await mkdir(config.nodeDataDir, { recursive: true, mode: 0o711 });
  await requireIsolation(config.isolation, 'apps and builds', logger);
  const nodeId = creds?.nodeId ?? await stableNodeId(config.nodeDataDir);
  const bus = await connectBus(config, `shellwego-node-${nodeId}`, logger.child({ part: 'bus' }), `node-${nodeId}`);
  const blobs = creds
    ? new HttpBlobStore({ apiUrl: creds.apiUrl, authorization: `Node ${creds.nodeId}:${creds.secret}`, cacheDir: join(config.nodeDataDir, 'blobs'), pin: creds.pin })
    : new FileBlobStore(config.blobsDir);

  const { runtime, router, agent } = await startNodeRole(config, { dataDir: config.nodeDataDir, nodeId, bus, blobs, logger });

  const hostForUrl = urlHost(config.bind);
  let closed = false;
  return {
    nodeId,
    blobsFrom: creds ? `${creds.apiUrl} (joined; verified copies cached in ${join(config.nodeDataDir, 'blobs')})` : `${config.blobsDir} (the server's blob directory, read locally)`,
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
  database?: string;
  isolation?: 'sandbox' | 'none';
  dataDir?: string;
  blobsDir?: string;
  keepAppsRunning?: boolean;
  join?: string;
  token?: string;
  caFingerprint?: string;
}

/** The `server` and `node` commands of main.ts: config errors exit 2, startup errors exit 1. */
export async function runSplit(role: 'server' | 'node', opts: SplitCommandOptions): Promise<void> {
  let config: SplitConfig;
  try {
    config = splitConfigFromEnv({
      ...process.env,
      ...(opts.nats ? { SHELLWEGO_NATS_URL: opts.nats } : {}),
      ...(opts.database ? { SHELLWEGO_DATABASE_URL: opts.database } : {}),
      ...(opts.blobsDir ? { SHELLWEGO_BLOBS_DIR: opts.blobsDir } : {}),
      ...(opts.join ? { SHELLWEGO_JOIN_URL: opts.join } : {}),
      ...(opts.token ? { SHELLWEGO_JOIN_TOKEN: opts.token } : {}),
      ...(opts.caFingerprint ? { SHELLWEGO_CA_FINGERPRINT: opts.caFingerprint } : {}),
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
      const login = adminLoginLines(b, config.dataDir);
      process.stdout.write(
        `\nShellWeGo control plane is running (builds: ${config.isolation}, data: ${config.dataDir}, database: ${config.databaseUrl ? `PostgreSQL ${new URL(config.databaseUrl).host}` : 'SQLite'}, NATS: ${config.natsUrls.join(',')})\n` +
        `  API:      ${s.apiUrl}   (OpenAPI: ${s.apiUrl}/v1/openapi.json)\n` +
        login +
        `  Nodes:    run \`shellwego-server node --nats ${config.natsUrls.join(',')} --blobs-dir ${s.blobsDir}\` on this machine,\n` +
        `            or elsewhere: \`shellwego-server node --nats <url> --join ${s.apiUrl} --token <from shellwego nodes token>\`\n` +
        `            (apps are served by the nodes' routers: http://<app>.${config.baseDomain}:${config.routerPort})\n` +
        `  Log in:   npx shellwego login --email ${b.email} --api ${s.apiUrl}${b.generatedPassword ? ` --password ${b.generatedPassword}` : ''}\n\n`,
      );
    } else {
      const n = await startNode(config);
      running = n;
      process.stdout.write(
        `\nShellWeGo node ${n.nodeId} is running (isolation: ${config.isolation}, data: ${config.nodeDataDir}, NATS: ${config.natsUrls.join(',')})\n` +
        `  Apps:     http://<app>.${config.baseDomain}:${n.routerPort}${n.httpsUrl ? `   and https on port ${new URL(n.httpsUrl).port}` : ''}\n` +
        `  Blobs:    ${n.blobsFrom}\n` +
        `  The node keeps serving its apps while the control plane is away.\n\n`,
      );
    }
  } catch (err) {
    exitOnStartupError(err, `the ShellWeGo ${role}`);
  }
  stopOnSignals(running);
}
