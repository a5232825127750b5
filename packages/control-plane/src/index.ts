import { join } from 'node:path';
import type { Logger } from 'pino';
import type { FastifyInstance } from 'fastify';
import { subjects } from '@shellwego/core';
import type { AppLogMessage, BlobStore } from '@shellwego/core';
import type { Bus, Subscription } from '@shellwego/bus';
import { SoleLeader } from '@shellwego/store';
import type { LeaderElection, Store } from '@shellwego/store';
import { buildHttpServer } from './http.ts';
import type { Handlers } from './http.ts';
import type { ControlPlaneContext, ControlPlaneSettings } from './context.ts';
import { EventRecorder } from './events.ts';
import { LogStore } from './logs.ts';
import { BuildLogs } from './build-logs.ts';
import { Deployer } from './controllers/deployer.ts';
import { BuildController } from './controllers/builds.ts';
import { NodeReports } from './controllers/node-reports.ts';
import { SecretBox } from './secrets.ts';
import { bootstrapOwner } from './auth.ts';
import type { BootstrapResult } from './auth.ts';
import { identityHandlers } from './api/identity.ts';
import { appHandlers } from './api/apps.ts';
import { streamHandlers } from './api/streams.ts';
import { domainHandlers } from './domains/api.ts';
import { CertificateManager } from './domains/manager.ts';
import { webhookHandlers } from './api/webhooks.ts';
import { deploymentHandlers } from './api/deployments.ts';
import { runToCompletion } from './oneoff.ts';
import { imageHandlers } from './api/images.ts';
import { nodeHandlers } from './api/nodes.ts';
import { nodeJoinHandlers } from './api/node-join.ts';
import { volumeHandlers } from './api/volumes.ts';

export { SecretBox } from './secrets.ts';
export { startOneOff, runToCompletion } from './oneoff.ts';
export type { OneOffRequest, OneOffSession, OneOffExit } from './oneoff.ts';
export type { ControlPlaneSettings } from './context.ts';
export type { TlsMode, TlsSettings } from './domains/manager.ts';
export type { BootstrapResult } from './auth.ts';
export { hashPassword, verifyPassword } from './passwords.ts';
export { certFingerprint, installCa } from './domains/install-ca.ts';
export { issueLeaf, createCa, loadCa, issueNodeLeaf, importNodePublicKey } from './domains/local-ca.ts';
export type { IssuedPem, LocalCa } from './domains/local-ca.ts';

export const handlers: Handlers = { ...identityHandlers, ...appHandlers, ...streamHandlers, ...webhookHandlers, ...deploymentHandlers, ...imageHandlers, ...domainHandlers, ...nodeHandlers, ...nodeJoinHandlers, ...volumeHandlers };

export interface ControlPlaneOptions {
  store: Store;
  bus: Bus;
  blobs: BlobStore;
  secrets: SecretBox;
  logger: Logger;
  settings: ControlPlaneSettings;
  /** Reconcile loop period; tests shorten it. */
  reconcileIntervalMs?: number;
  /** A node silent this long is down and its instances are replaced elsewhere (default 10 s). */
  nodeDownAfterMs?: number;
  /**
   * Which of several control planes on one database runs the controllers (ADR 0012); every one
   * serves the API. Default: this one alone (embedded store).
   */
  leader?: LeaderElection;
  /** Serve the API over https with this certificate (chain) and key; renew with http.server.setSecureContext. */
  https?: { cert: string; key: string };
}

export interface ControlPlane {
  context: ControlPlaneContext;
  http: FastifyInstance;
  bootstrap(opts: { email: string; password?: string }): Promise<BootstrapResult>;
  listen(host: string, port: number): Promise<number>;
  close(): Promise<void>;
}

/** Wires the API, controllers and stores of the control plane. Composition roots call this. */
export async function createControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const { store, bus, logger, settings, secrets } = opts;
  const events = new EventRecorder(store, bus);
  const logs = new LogStore(join(settings.dataDir, 'logs'));
  const buildLogs = new BuildLogs(join(settings.dataDir, 'build-logs'));
  const deployer = new Deployer({ store, bus, secrets, events, logs, settings, logger: logger.child({ part: 'deployer' }) }, opts.reconcileIntervalMs, opts.nodeDownAfterMs);
  const builds = new BuildController({ store, bus, secrets, events, logs, buildLogs, deployer, logger: logger.child({ part: 'builds' }) });
  const certificates = new CertificateManager({
    store, bus, secrets, events, logger: logger.child({ part: 'certificates' }), baseDomain: settings.baseDomain, dataDir: settings.dataDir,
    tls: settings.tls ?? { mode: 'off', httpsPort: 443 }, onCertificateChange: () => deployer.publishRoutes(false),
  });
  const context: ControlPlaneContext = { settings, store, bus, blobs: opts.blobs, secrets, events, logs, buildLogs, deployer, builds, certificates, logger };

  // The Procfile `release:` command runs as a one-off process of the new release before traffic moves.
  deployer.deployments.setReleasePhaseRunner((req, onLine) => runToCompletion(context, req, (line) => onLine(line)));
  // A node's log lines count only for instances it was assigned (controllers/node-reports.ts).
  const nodeReports = new NodeReports({ store, logger: logger.child({ part: 'node-reports' }) });
  const subs: Subscription[] = [bus.subscribe<AppLogMessage>(subjects.allAppLogs, async (m, subject) => {
    if (await nodeReports.logsAllowed(subject, m)) logs.append(m.appId, m.lines);
  })];
  builds.listen();
  // Controllers run while this control plane leads; leadership can come and go (failover).
  const leader = opts.leader ?? new SoleLeader();
  let transition: Promise<void> = Promise.resolve();
  const lead = async (leading: boolean) => {
    if (leading) {
      logger.info('leading: running the controllers (deployer, builds, certificates)');
      deployer.start();
      await builds.start();
      await certificates.start();
      // The first pass runs in the background: the API serves meanwhile (a large install's first
      // pass takes a while).
      void deployer.reconcileAll().catch((err) => logger.error({ err }, 'reconcile pass failed'));
    } else {
      logger.warn('no longer leading: controllers stopped, the API keeps serving');
      builds.stop();
      await certificates.stop();
      await deployer.stop();
    }
  };
  leader.start((leading) => {
    transition = transition.then(() => lead(leading)).catch((err) => logger.error({ err, leading }, 'changing leadership failed'));
  });
  await transition;
  const http = await buildHttpServer(context, handlers, opts.https);

  return {
    context,
    http,
    bootstrap: (b) => bootstrapOwner(store, { ...b, passwordFile: join(settings.dataDir, 'initial-admin-password') }),
    async listen(host, port) {
      await http.listen({ host, port });
      const addr = http.server.address();
      return typeof addr === 'object' && addr ? addr.port : port;
    },
    async close() {
      for (const s of subs) s.unsubscribe();
      await leader.close();
      await transition;
      builds.close();
      await certificates.stop();
      await deployer.stop();
      await http.close();
      await logs.flush();
    },
  };
}
