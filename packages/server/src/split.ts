/**
 * Split mode: the control plane (API, deployer, builds + the builder) and the node (agent +
 * router) as separate processes that meet only over NATS. Killing or restarting the `server`
 * never touches a node's apps or router: the node keeps serving with its last route table, and
 * the restarted control plane adopts what runs (the agent keeps instances whose spec is
 * unchanged). Both sides reconnect to NATS forever, so a restarted nats-server heals too.
 */
import { access, mkdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { connectNatsBus, credsConnection, defaultDurableStreams } from '@shellwego/bus';
import type { NatsBus, NatsBusOptions } from '@shellwego/bus';
import { FileBlobStore } from '@shellwego/store';
import { FailoverBlobStore } from './failover-blobs.ts';
import type { BootstrapResult } from '@shellwego/control-plane';
import { splitConfigFromEnv } from './config.ts';
import type { SplitConfig } from './config.ts';
import { stableNodeId } from './util.ts';
import { nodeCredentials } from './node-join.ts';
import { renewNodeCertDaily, startupNodeCert } from './node-cert.ts';
import { nodeNatsAuth, serverNatsAuth } from './nats-auth.ts';
import { startNatsRevocations } from './nats-revocations.ts';
import { endpoint } from './advertise.ts';
import { join } from 'node:path';
import { adminLoginLines, exitOnStartupError, listenApi, requireIsolation, startBuilder, startControlPlaneRole, startNodeRole, startRuntime, stopOnSignals, urlHost } from './roles.ts';
import type { ApiTls } from './api-tls.ts';
import { checkNatsTls } from './nats-tls.ts';

export interface SplitServer {
  apiUrl: string;
  apiPort: number;
  blobsDir: string;
  bootstrap: BootstrapResult;
  /** The API's TLS (null: plain http, SHELLWEGO_API_TLS=off). */
  apiTls: ApiTls | null;
  /** NATS authentication, in words for the start-up banner. */
  natsAuth: string;
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
  /** host:port other nodes' routers reach this node's instances through (routing across nodes). */
  clusterEndpoint: string | null;
  logger: Logger;
  /** Stops the node; apps keep running only when asked to (the next start adopts them). */
  close(opts?: { keepAppsRunning?: boolean }): Promise<void>;
}

/** NATS connection with its state changes in the log; waits (and says so) until NATS answers. */
async function connectBus(
  config: SplitConfig, name: string, logger: Logger, consumerName: string, tls: { ca: string } | null = null,
  auth: { connection: NatsBusOptions['connection']; node: boolean } | null = null,
): Promise<NatsBus> {
  if (tls) await checkNatsTls(config.natsUrls, tls); // another CA's certificate: a clear startup error, not a silent retry loop
  const waiting = setTimeout(() => logger.warn({ nats: config.natsUrls }, 'waiting for NATS to accept the connection'), 2_000);
  try {
    return await connectNatsBus({
      servers: config.natsUrls,
      name,
      // Durable consumers resume under a name that must be stable and unique per process.
      // A node's NATS user may not manage streams: the control plane creates them.
      ...(config.natsJetStream ? { durable: { streams: defaultDurableStreams(), consumerName, ...(auth?.node ? { createStreams: false } : {}) } } : {}),
      // TLS verified against this CA only (SHELLWEGO_NATS_TLS_CA, or the CA a joined node pinned);
      // NATS user credentials when NATS authenticates (nats-auth.ts).
      ...(tls || auth ? { connection: { ...(tls ? { tls } : {}), ...auth?.connection } } : {}),
      onError: (err, subject) => logger.error({ err, subject }, 'bus handler failed'),
      onStatus: (s) => {
        if (s.type === 'disconnect') logger.warn({ server: s.data }, 'NATS connection lost: reconnecting (apps keep running)');
        else if (s.type === 'reconnect') logger.info({ server: s.data }, 'NATS connection restored');
        else if (s.type === 'dropped') logger.warn({ messages: s.data }, 'NATS was away too long: messages beyond the offline buffer were dropped (state is republished)');
        else if (s.type === 'error') logger.error({ err: s.data }, natsErrorMessage(s.data, tls));
      },
    });
  } finally {
    clearTimeout(waiting);
  }
}

/** A NATS error in words: a certificate the CA does not vouch for is refused, not retried silently. */
function natsErrorMessage(err: unknown, tls: { ca: string } | null): string {
  const text = `${(err as NodeJS.ErrnoException)?.code ?? ''} ${(err as Error)?.message ?? err}`;
  if (tls && /CERT|SELF_SIGNED|UNABLE_TO|ALTNAME|ERR_TLS|ERR_SSL/i.test(text)) {
    return "NATS error: nats-server's certificate is not signed by the CA this process trusts for NATS (SHELLWEGO_NATS_TLS_CA, or the CA pinned at join): refusing to connect";
  }
  return 'NATS error';
}

/** `server`: API, deployer and build controller, plus the builder, on SQLite and NATS. */
export async function startServer(config: SplitConfig, logger: Logger = pino({ level: config.logLevel })): Promise<SplitServer> {
  await mkdir(config.dataDir, { recursive: true, mode: 0o711 });
  await requireIsolation(config.isolation, 'apps and builds', logger);

  const natsTls = config.natsTlsCa ? { ca: await readFile(config.natsTlsCa, 'utf8') } : null;
  const natsAuth = await serverNatsAuth(config);
  const { store, blobs, blobsDir, bus, cp, bootstrap, apiTls } = await startControlPlaneRole(config, logger, async () => ({
    bus: await connectBus(config, `shellwego-server-${hostname()}`, logger.child({ part: 'bus' }), `server-${hostname()}-${config.apiPort}`, natsTls,
      natsAuth.connection ? { connection: natsAuth.connection, node: false } : null),
  }), { shareBlobsDir: true, databaseUrl: config.databaseUrl, natsTlsCaFile: config.natsTlsCa });
  if (natsAuth.issueNodeCreds) cp.context.settings.natsNodeCreds = natsAuth.issueNodeCreds;
  // Removed nodes' NATS users: the store's revocation list, pushed now, on every reconnect and at each removal.
  const revocations = natsAuth.revocation
    ? await startNatsRevocations({ servers: config.natsUrls, ...natsAuth.revocation, store, logger: logger.child({ part: 'nats-revocations' }), tls: natsTls })
    : null;
  if (revocations) cp.context.settings.natsRevoke = () => revocations.sync('node removed');

  // Builds get their own bridge: a node on the same machine owns the apps' bridge and its IPs.
  const runtime = await startRuntime(config.isolation, { name: config.buildBridgeName, cidr: config.buildBridgeCidr }, config.dataDir);
  const builder = startBuilder(config, { bus, blobs, runtime, bridgeCidr: config.buildBridgeCidr, logger });
  const { apiUrl, apiPort } = await listenApi(config, cp, apiTls);

  let closed = false;
  return {
    apiUrl,
    apiPort,
    blobsDir,
    bootstrap,
    apiTls,
    natsAuth: natsAuth.summary,
    logger,
    async close() {
      if (closed) return;
      closed = true;
      await cp.close();
      await revocations?.close();
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
  const creds = await nodeCredentials({
    dataDir: config.nodeDataDir, joinUrl: config.joinUrl, joinToken: config.joinToken, caFingerprint: config.caFingerprint, isolation: config.isolation, warn: (m) => logger.warn(m),
  });
  if (!creds) {
    await access(config.blobsDir).catch(() => {
      throw new Error(`blob directory ${config.blobsDir} does not exist: point --blobs-dir (SHELLWEGO_BLOBS_DIR) at the blobs/ ` +
        "directory in the server's data dir (nodes on this machine read build artifacts from it), or join over the network with --join <API URL> --token <join token>");
    });
  }
  await mkdir(config.nodeDataDir, { recursive: true, mode: 0o711 });
  await requireIsolation(config.isolation, 'apps and builds', logger);
  const natsAuth = await nodeNatsAuth(config, creds);
  const nodeId = creds?.nodeId ?? natsAuth?.nodeId ?? await stableNodeId(config.nodeDataDir);
  // NATS over TLS: the operator's CA file, else the CA pinned at join when the control plane said nats-server uses it.
  const natsTls = config.natsTlsCa ? { ca: await readFile(config.natsTlsCa, 'utf8') } : creds?.ca && creds.natsUsesInstallCa ? { ca: creds.ca.pem } : null;
  const bus = await connectBus(config, `shellwego-node-${nodeId}`, logger.child({ part: 'bus' }), `node-${nodeId}`, natsTls,
    natsAuth ? { connection: credsConnection(natsAuth.creds, natsAuth.nodeId), node: true } : null);
  const blobs = creds
    ? new FailoverBlobStore({ apiUrls: creds.apiUrls ?? [creds.apiUrl], authorization: `Node ${creds.nodeId}:${creds.secret}`, cacheDir: join(config.nodeDataDir, 'blobs'), pin: creds.ca, warn: (m) => logger.warn(m) })
    : new FileBlobStore(config.blobsDir);

  // Router-to-router hops are mutual TLS with this node's certificate (ADR 0022): without one
  // there is no cluster listener, and this router reaches other nodes' instances directly.
  const clusterCert = creds ? await startupNodeCert(creds, config.nodeDataDir, logger) : null;
  if (creds && !clusterCert) {
    logger.error(`no cluster certificate: the cluster listener is not started, so other nodes' routers cannot reach this node's apps (and its router reaches other nodes' apps only if their addresses are routable from here). ` +
      `The node asks the control plane at ${creds.apiUrl} for one at every start: restart it once the control plane answers (a control plane older than this node's cannot issue one: upgrade it first).`);
  } else if (!creds) {
    logger.warn('this node did not join over the network (no --join): it has no cluster certificate, so no cluster listener; routers reach its apps, and it reaches other nodes\' apps, directly (one host only). Join with --join <API URL> --token <join token> for routing across hosts.');
  }
  const { runtime, router, agent } = await startNodeRole(config, {
    dataDir: config.nodeDataDir, nodeId, bus, blobs, logger,
    ...(clusterCert ? { cluster: { advertiseAddress: config.advertiseAddress, port: config.clusterPort, tls: clusterCert } } : {}),
  });
  const renewal = creds && clusterCert ? renewNodeCertDaily(creds, config.nodeDataDir, clusterCert, (c) => {
    router.setClusterIdentity(c);
    logger.info({ notAfter: c.notAfter.toISOString() }, 'node cluster certificate renewed: new hops use it');
  }, logger) : null;

  const hostForUrl = urlHost(config.bind);
  let closed = false;
  return {
    nodeId,
    blobsFrom: creds ? `${(creds.apiUrls ?? [creds.apiUrl]).join(', ')} (joined; verified copies cached in ${join(config.nodeDataDir, 'blobs')})` : `${config.blobsDir} (the server's blob directory, read locally)`,
    routerUrl: `http://${hostForUrl}:${router.port}`,
    routerPort: router.port,
    clusterEndpoint: router.clusterPort === null ? null : endpoint(config.advertiseAddress, router.clusterPort),
    httpsUrl: router.httpsPort === null ? null : `https://${hostForUrl}:${router.httpsPort}`,
    logger,
    async close(opts = {}) {
      if (closed) return;
      closed = true;
      renewal?.close();
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
  apiHostname?: string;
  advertiseAddress?: string;
  natsCreds?: string;
  natsAccountSeed?: string;
  natsSystemCreds?: string;
  natsOperatorSigner?: string;
}

/** Command-line options that stand for an environment variable (the option wins). */
const OPTION_ENV: readonly [keyof SplitCommandOptions, string][] = [
  ['nats', 'SHELLWEGO_NATS_URL'], ['database', 'SHELLWEGO_DATABASE_URL'], ['blobsDir', 'SHELLWEGO_BLOBS_DIR'],
  ['join', 'SHELLWEGO_JOIN_URL'], ['token', 'SHELLWEGO_JOIN_TOKEN'], ['caFingerprint', 'SHELLWEGO_CA_FINGERPRINT'],
  ['apiHostname', 'SHELLWEGO_API_HOSTNAMES'], ['advertiseAddress', 'SHELLWEGO_ADVERTISE_ADDRESS'],
  ['natsCreds', 'SHELLWEGO_NATS_CREDS'], ['natsAccountSeed', 'SHELLWEGO_NATS_ACCOUNT_SEED'],
  ['natsSystemCreds', 'SHELLWEGO_NATS_SYSTEM_CREDS'], ['natsOperatorSigner', 'SHELLWEGO_NATS_OPERATOR_SIGNER'],
];

/** The `server` and `node` commands of main.ts: config errors exit 2, startup errors exit 1. */
export async function runSplit(role: 'server' | 'node', opts: SplitCommandOptions): Promise<void> {
  let config: SplitConfig;
  try {
    config = splitConfigFromEnv({
      ...process.env,
      ...Object.fromEntries(OPTION_ENV.filter(([o]) => opts[o]).map(([o, name]) => [name, opts[o] as string])),
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
        (s.apiTls
          ? `  TLS:      ${s.apiTls.describe}\n            CLI on this machine: NODE_EXTRA_CA_CERTS=${config.dataDir}/tls/local-ca.pem or your CA file\n`
          : '  TLS:      OFF (SHELLWEGO_API_TLS=off): node traffic, join tokens included, is plain http — loopback/development only\n') +
        `  NATS auth: ${s.natsAuth}\n` +
        login +
        `  Nodes:    run \`shellwego-server node --nats ${config.natsUrls.join(',')} --blobs-dir ${s.blobsDir}\` on this machine,\n` +
        `            or elsewhere: \`shellwego-server node --nats <url> --join ${s.apiUrl} --token <token>${s.apiTls ? ` --ca-fingerprint ${s.apiTls.nodeTls.caFingerprint}` : ''}\`\n` +
        '            (`shellwego nodes token` prints the whole command)\n' +
        `            (apps are served by the nodes' routers: http://<app>.${config.baseDomain}:${config.routerPort})\n` +
        `  Log in:   npx shellwego login --email ${b.email} --api ${s.apiUrl}${b.generatedPassword ? ` --password ${b.generatedPassword}` : ''}\n\n`,
      );
    } else {
      const n = await startNode(config);
      running = n;
      process.stdout.write(
        `\nShellWeGo node ${n.nodeId} is running (isolation: ${config.isolation}, data: ${config.nodeDataDir}, NATS: ${config.natsUrls.join(',')})\n` +
        `  Apps:     http://<app>.${config.baseDomain}:${n.routerPort}${n.httpsUrl ? `   and https on port ${new URL(n.httpsUrl).port}` : ''}\n` +
        (n.clusterEndpoint
          ? `  Cluster:  other nodes' routers reach this node's apps at ${n.clusterEndpoint} (mutual TLS, node certificate in ${join(config.nodeDataDir, 'cluster-tls')}; SHELLWEGO_ADVERTISE_ADDRESS, SHELLWEGO_CLUSTER_PORT)\n`
          : "  Cluster:  none (no node certificate, see the log): other nodes' routers cannot hop here\n") +
        `  Blobs:    ${n.blobsFrom}\n` +
        `  The node keeps serving its apps while the control plane is away.\n\n`,
      );
    }
  } catch (err) {
    exitOnStartupError(err, `the ShellWeGo ${role}`);
  }
  stopOnSignals(running);
}
