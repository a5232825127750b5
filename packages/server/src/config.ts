import { resolve } from 'node:path';
import type { IsolationMode } from '@shellwego/sandbox';

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
}

function port(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${name} must be a port number (0-65535), got '${value}'`);
  return n;
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
    ...overrides,
    isolation,
  };
}
