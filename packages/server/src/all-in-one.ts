import { mkdir } from 'node:fs/promises';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { InProcessBus } from '@shellwego/bus';
import type { BootstrapResult } from '@shellwego/control-plane';
import type { AllInOneConfig } from './config.ts';
import { stableNodeId } from './util.ts';
import { listenApi, requireIsolation, startBuilder, startControlPlaneRole, startNodeRole, urlHost } from './roles.ts';

export { VERSION } from './roles.ts';

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

  await requireIsolation(config.isolation, 'apps', logger);

  const { store, blobs, bus, nodeId, cp, bootstrap, apiTls } = await startControlPlaneRole(config, logger, async () => ({
    bus: new InProcessBus((err, subject) => logger.error({ err, subject }, 'bus handler failed')),
    nodeId: await stableNodeId(config.dataDir),
  }));

  // One runtime on the apps' bridge for apps and builds; the builder starts before the agent.
  const { runtime, router, builder, agent } = await startNodeRole(config, { dataDir: config.dataDir, nodeId, bus, blobs, logger }, ({ runtime, router }) => {
    // Port 0 picked a free HTTPS port: URLs the control plane prints must use it.
    if (cp.context.settings.tls && router.httpsPort !== null) cp.context.settings.tls.httpsPort = router.httpsPort;
    return { builder: startBuilder(config, { bus, blobs, runtime, bridgeCidr: config.bridgeCidr, logger }) };
  });
  // Plain http on loopback unless SHELLWEGO_API_TLS=on.
  const { apiUrl, apiPort } = await listenApi(config, cp, apiTls);

  const hostForUrl = urlHost(config.bind);
  let closed = false;
  return {
    apiUrl,
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
