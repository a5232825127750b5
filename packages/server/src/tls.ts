/** TLS settings of the server from the environment (SHELLWEGO_TLS, SHELLWEGO_HTTPS_PORT, SHELLWEGO_ACME_*). */
import { readFile } from 'node:fs/promises';
import type { TlsMode, TlsSettings } from '@shellwego/control-plane';

export interface TlsConfig {
  /** `local-ca` (default: a CA of this install signs every certificate), `acme` or `off`. */
  mode: TlsMode;
  /** HTTPS listener of the router (default 8443; 0 picks a free one). */
  httpsPort: number;
  /** ACME directory URL (mode acme), e.g. https://acme-v02.api.letsencrypt.org/directory. */
  acmeDirectory?: string;
  acmeEmail?: string;
  /** PEM file of extra CAs to trust for the ACME server's own TLS (a test CA like Pebble's). */
  acmeCaFile?: string;
  /** How often renewals and retries are looked for. */
  checkIntervalMs: number;
  /** First retry delay after a failed issuance; doubles per failure. */
  retryBaseMs: number;
}

const MODES: readonly TlsMode[] = ['off', 'local-ca', 'acme'];

export function tlsConfigFromEnv(env: NodeJS.ProcessEnv): TlsConfig {
  const mode = (env.SHELLWEGO_TLS || 'local-ca') as TlsMode;
  if (!MODES.includes(mode)) throw new Error(`SHELLWEGO_TLS must be one of ${MODES.join(', ')}, got '${mode}'`);
  const rawPort = env.SHELLWEGO_HTTPS_PORT;
  const httpsPort = rawPort === undefined || rawPort === '' ? 8443 : Number(rawPort);
  if (!Number.isInteger(httpsPort) || httpsPort < 0 || httpsPort > 65535) throw new Error(`SHELLWEGO_HTTPS_PORT must be a port number (0-65535), got '${rawPort}'`);
  const acmeDirectory = env.SHELLWEGO_ACME_DIRECTORY || undefined;
  if (mode === 'acme' && !acmeDirectory) {
    throw new Error('SHELLWEGO_TLS=acme needs SHELLWEGO_ACME_DIRECTORY (e.g. https://acme-v02.api.letsencrypt.org/directory)');
  }
  if (acmeDirectory && !/^https:\/\//.test(acmeDirectory)) throw new Error(`SHELLWEGO_ACME_DIRECTORY must be an https:// URL, got '${acmeDirectory}'`);
  const ms = (name: string, fallback: number) => {
    const v = env[name];
    const n = v === undefined || v === '' ? fallback : Number(v);
    if (!Number.isFinite(n) || n < 100) throw new Error(`${name} must be a number of milliseconds (≥ 100), got '${v}'`);
    return n;
  };
  return {
    mode, httpsPort, acmeDirectory, acmeEmail: env.SHELLWEGO_ACME_EMAIL || undefined, acmeCaFile: env.SHELLWEGO_ACME_CA_FILE || undefined,
    checkIntervalMs: ms('SHELLWEGO_TLS_CHECK_MS', 60_000), retryBaseMs: ms('SHELLWEGO_TLS_RETRY_MS', 30_000),
  };
}

/** The control plane's TLS settings; `httpsPort` is the port the router actually listens on. */
export async function tlsSettings(config: TlsConfig, httpsPort: number): Promise<TlsSettings> {
  return {
    mode: config.mode, httpsPort, checkIntervalMs: config.checkIntervalMs, retryBaseMs: config.retryBaseMs,
    ...(config.acmeDirectory
      ? { acme: { directoryUrl: config.acmeDirectory, email: config.acmeEmail, caBundle: config.acmeCaFile ? await readFile(config.acmeCaFile, 'utf8') : undefined } }
      : {}),
  };
}
