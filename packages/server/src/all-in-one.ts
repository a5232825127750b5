import { chmod, mkdir } from 'node:fs/promises';
import { cpus, hostname, totalmem } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { InProcessBus } from '@shellwego/bus';
import { FileBlobStore, openSqliteStore } from '@shellwego/store';
import { createControlPlane, SecretBox } from '@shellwego/control-plane';
import type { BootstrapResult } from '@shellwego/control-plane';
import { createRuntime, detectIsolation } from '@shellwego/sandbox';
import { createAgent } from '@shellwego/agent';
import { createBuilder } from '@shellwego/builder';
import { createRouter } from '@shellwego/router';
import type { AllInOneConfig } from './config.ts';
import { firstHost, stableNodeId } from './util.ts';
import { tlsSettings } from './tls.ts';

export const VERSION = '0.1.0';

export interface AllInOne {
  apiUrl: string;
  routerUrl: string;
  /** The router's HTTPS listener; null when TLS is off. */
  httpsUrl: string | null;
  apiPort: number;
  routerPort: number;
  nodeId: string;
  bootstrap: BootstrapResult;
  logger: Logger;
  /** Stops the platform; apps keep running only when asked to (live restore). */
  close(opts?: { keepAppsRunning?: boolean }): Promise<void>;
}

/**
 * The all-in-one platform: control plane, builder, agent and router in one process, on the
 * embedded defaults (SQLite, in-process bus, built-in router), state under one data directory.
 */
export async function startAllInOne(config: AllInOneConfig, logger: Logger = pino({ level: config.logLevel })): Promise<AllInOne> {
  // 0711: other users may pass through (sandboxed apps reach their own dirs below) but not list it;
  // sensitive files inside are 0600 each.
  await mkdir(config.dataDir, { recursive: true, mode: 0o711 });

  if (config.isolation === 'sandbox') {
    const d = await detectIsolation();
    if (!d.available) {
      throw new Error(`sandboxed isolation is not available here: ${d.reason}. ` +
        'Install bubblewrap and run as root (see README: Isolation), or start with --isolation none ' +
        '(SHELLWEGO_ISOLATION=none) to run apps as plain processes without isolation.');
    }
  } else {
    logger.warn('isolation is NONE: apps run as plain processes without namespaces or limits (development only)');
  }

  const dbFile = join(config.dataDir, 'shellwego.db');
  const store = await openSqliteStore(dbFile);
  await chmod(dbFile, 0o600); // SQLite creates -wal/-shm with the database file's mode
  const blobs = new FileBlobStore(join(config.dataDir, 'blobs'));
  // Config values: per-organization data keys wrapped by the file master key (ADR 0005).
  const secrets = await SecretBox.fromFile(join(config.dataDir, 'master.key'), store);
  const bus = new InProcessBus((err, subject) => logger.error({ err, subject }, 'bus handler failed'));
  const nodeId = await stableNodeId(config.dataDir);

  const cp = await createControlPlane({
    store, bus, blobs, secrets, logger: logger.child({ part: 'control-plane' }),
    settings: { baseDomain: config.baseDomain, routerPort: config.routerPort, routerScheme: 'http', dataDir: config.dataDir, maxUploadBytes: config.maxUploadBytes, version: VERSION, tls: await tlsSettings(config.tls, config.tls.httpsPort), fetchAllowPrivate: config.fetchAllowPrivate },
    reconcileIntervalMs: config.reconcileIntervalMs,
  });
  const bootstrap = await cp.bootstrap({ email: config.adminEmail, password: config.adminPassword });

  const runtime = await createRuntime({
    isolation: config.isolation,
    bridge: { name: config.bridgeName, cidr: config.bridgeCidr },
    cgroupRoot: 'shellwego',
    stateRoot: join(config.dataDir, 'sandbox'),
  });

  const router = await createRouter({
    bus, host: config.bind, port: config.routerPort, logger: logger.child({ part: 'router' }),
    ...(config.tls.mode === 'off' ? {} : { tls: { port: config.tls.httpsPort } }),
  });
  // Port 0 picked a free HTTPS port: URLs the control plane prints must use it.
  if (cp.context.settings.tls && router.httpsPort !== null) cp.context.settings.tls.httpsPort = router.httpsPort;
  const builder = createBuilder({
    bus, blobs, runtime, logger: logger.child({ part: 'builder' }),
    workDir: join(config.dataDir, 'builds'), cacheDir: join(config.dataDir, 'build-cache'),
    gatewayIp: config.isolation === 'sandbox' ? firstHost(config.bridgeCidr) : undefined,
  });
  builder.start();
  const agent = createAgent({
    nodeId, name: hostname(), bus, blobs, runtime, dataDir: join(config.dataDir, 'agent'), logger: logger.child({ part: 'agent' }),
    capacity: { cpus: cpus().length, memoryMb: Math.floor(totalmem() / 1024 / 1024) },
  });
  await agent.start();
  const apiPort = await cp.listen(config.bind, config.apiPort);

  const hostForUrl = config.bind === '0.0.0.0' || config.bind === '::' ? '127.0.0.1' : config.bind;
  let closed = false;
  return {
    apiUrl: `http://${hostForUrl}:${apiPort}`,
    routerUrl: `http://${hostForUrl}:${router.port}`,
    httpsUrl: router.httpsPort === null ? null : `https://${hostForUrl}:${router.httpsPort}`,
    apiPort,
    routerPort: router.port,
    nodeId,
    bootstrap,
    logger,
    async close(opts = {}) {
      if (closed) return;
      closed = true;
      const keep = opts.keepAppsRunning ?? config.keepAppsRunning;
      await router.close();
      await cp.close();
      await builder.close();
      await agent.stop({ leaveRunning: keep });
      await runtime.close(); // releases pre-warmed network slots; running sandboxes are untouched
      await bus.close();
      await store.close();
    },
  };
}
