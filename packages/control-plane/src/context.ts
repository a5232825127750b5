import type { Logger } from 'pino';
import type { Bus } from '@shellwego/bus';
import type { BlobStore } from '@shellwego/core';
import type { Store } from '@shellwego/store';
import type { SecretBox } from './secrets.ts';
import type { EventRecorder } from './events.ts';
import type { LogStore } from './logs.ts';
import type { Deployer } from './controllers/deployer.ts';
import type { SchedulingSettings } from './controllers/scheduler.ts';
import type { BuildLogs } from './build-logs.ts';
import type { BuildController } from './controllers/builds.ts';
import type { CertificateManager, TlsSettings } from './domains/manager.ts';

export interface ControlPlaneSettings {
  /** Apps answer at `<app>.<baseDomain>`. */
  baseDomain: string;
  /** Port users reach the router on, for the URLs we print (omitted when 80/443). */
  routerPort: number;
  routerScheme: 'http' | 'https';
  dataDir: string;
  maxUploadBytes: number;
  version: string;
  /** TLS termination and certificates (custom domains); absent = off. */
  tls?: TlsSettings;
  /** Webhook fetches may reach private/loopback addresses (SHELLWEGO_FETCH_ALLOW_PRIVATE=1). */
  fetchAllowPrivate?: boolean;
  /** Placement policy and CPU overcommit (SHELLWEGO_SCHEDULING_POLICY, SHELLWEGO_CPU_OVERCOMMIT); absent = spread, 4. */
  scheduling?: SchedulingSettings;
  /**
   * Split mode with an https API: the install's CA nodes pin at join (`shellwego nodes token`
   * prints its fingerprint) and whether nats-server's certificate is signed by it too.
   */
  nodeTls?: { caPem: string; caFingerprint: string; natsUsesInstallCa: boolean };
  /** The API's URL for nodes to join (set by the composition root once the API listens). */
  apiUrl?: string;
  /** NATS with authentication: issues a joining node's NATS credentials (.creds), allowed only its own subjects, and the user's public key. */
  natsNodeCreds?: (nodeId: string) => Promise<{ creds: string; userKey: string }>;
  /** NATS with authentication: pushes the store's revoked NATS users to nats-server now (a removed node's connections close). */
  natsRevoke?: () => Promise<void>;
}

/** Everything a handler or controller needs, built once by the composition root. */
export interface ControlPlaneContext {
  settings: ControlPlaneSettings;
  store: Store;
  bus: Bus;
  blobs: BlobStore;
  secrets: SecretBox;
  events: EventRecorder;
  logs: LogStore;
  buildLogs: BuildLogs;
  deployer: Deployer;
  builds: BuildController;
  certificates: CertificateManager;
  logger: Logger;
}

export function appUrl(settings: ControlPlaneSettings, name: string): string {
  const defaultPort = settings.routerScheme === 'https' ? 443 : 80;
  const port = settings.routerPort === defaultPort ? '' : `:${settings.routerPort}`;
  return `${settings.routerScheme}://${name}.${settings.baseDomain}${port}`;
}
