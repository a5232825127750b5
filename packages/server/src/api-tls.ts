/**
 * The split-mode API over https (ADR draft "API TLS"). By default the `server` serves its API
 * with a certificate for its host names and addresses signed by the install's CA (one per
 * install, in the store: HA servers on one database share it); nodes pin that CA at join, so
 * each server issuing its own leaf, and renewing it, changes nothing for them. The leaf and its
 * key live in memory only: every start issues a fresh one and a timer renews it at two thirds
 * of its lifetime (`setSecureContext`, no restart, no dropped connection). Operators may bring
 * their own certificate and key (SHELLWEGO_API_TLS_CERT/KEY; re-read when the files change) or
 * turn TLS off (SHELLWEGO_API_TLS=off, loopback development).
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import type { Server as TlsServer } from 'node:tls';
import type { Logger } from 'pino';
import { certFingerprint, installCa, issueLeaf } from '@shellwego/control-plane';
import type { LocalCa, SecretBox } from '@shellwego/control-plane';
import type { Store } from '@shellwego/store';

export interface ApiTlsConfig {
  /** `install-ca` (default in split mode), `files` (the operator's certificate) or `off`. */
  mode: 'install-ca' | 'files' | 'off';
  /** Extra names/addresses the certificate is for (SHELLWEGO_API_HOSTNAMES / --api-hostname). */
  hostnames: string[];
  certFile?: string;
  keyFile?: string;
  /** files: the CA that signed the operator's certificate, when the certificate file does not end with it. */
  caFile?: string;
}

const HOSTNAME = /^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;

/** From SHELLWEGO_API_TLS (on|off), SHELLWEGO_API_HOSTNAMES, SHELLWEGO_API_TLS_CERT/KEY/CA; `defaultOn` per role. */
export function apiTlsConfigFromEnv(env: NodeJS.ProcessEnv, defaultOn: boolean): ApiTlsConfig {
  const raw = (env.SHELLWEGO_API_TLS ?? '').toLowerCase();
  if (!['', 'on', 'off'].includes(raw)) throw new Error(`SHELLWEGO_API_TLS must be 'on' or 'off', got '${env.SHELLWEGO_API_TLS}'`);
  const hostnames = (env.SHELLWEGO_API_HOSTNAMES ?? '').split(',').map((h) => h.trim().toLowerCase()).filter(Boolean);
  for (const h of hostnames) {
    if (!isIP(h) && !HOSTNAME.test(h)) throw new Error(`SHELLWEGO_API_HOSTNAMES / --api-hostname must be host names or IP addresses, got '${h}'`);
  }
  const certFile = env.SHELLWEGO_API_TLS_CERT || undefined;
  const keyFile = env.SHELLWEGO_API_TLS_KEY || undefined;
  const caFile = env.SHELLWEGO_API_TLS_CA || undefined;
  if (Boolean(certFile) !== Boolean(keyFile)) throw new Error('SHELLWEGO_API_TLS_CERT and SHELLWEGO_API_TLS_KEY go together: give both files (PEM) or neither');
  if (caFile && !certFile) throw new Error('SHELLWEGO_API_TLS_CA names the CA of your own certificate: give SHELLWEGO_API_TLS_CERT and SHELLWEGO_API_TLS_KEY too');
  const on = raw === '' ? defaultOn || Boolean(certFile) : raw === 'on';
  if (!on && certFile) throw new Error('SHELLWEGO_API_TLS=off contradicts SHELLWEGO_API_TLS_CERT/KEY: unset one of them');
  return { mode: !on ? 'off' : certFile ? 'files' : 'install-ca', hostnames, certFile, keyFile, caFile };
}

/** What the API's certificate is for: the configured names, the bind address (all of this host's addresses for a wildcard), hostname(), loopback. */
export function apiHostnames(config: ApiTlsConfig, bind: string): string[] {
  const wildcard = bind === '0.0.0.0' || bind === '::';
  const addresses = wildcard ? Object.values(networkInterfaces()).flat().filter((a) => a && !a.internal && a.family === 'IPv4').map((a) => a!.address) : [bind];
  return [...new Set([...config.hostnames, ...addresses, hostname().toLowerCase(), 'localhost', '127.0.0.1'].filter((h) => h && (isIP(h) || HOSTNAME.test(h))))];
}

export interface ApiTls {
  /** For the API listener (certificate chain ending in the CA, key). */
  https: { cert: string; key: string };
  /** What nodes pin (the CA), its fingerprint, and whether NATS' certificate is signed by it. */
  nodeTls: { caPem: string; caFingerprint: string; natsUsesInstallCa: boolean };
  /** For the startup banner. */
  describe: string;
  /** Renews (install CA) or reloads (files) the certificate of `server` from now on. */
  attach(server: TlsServer): void;
  close(): void;
}

export interface ApiTlsDeps {
  store: Store;
  secrets: SecretBox;
  baseDomain: string;
  dataDir: string;
  bind: string;
  logger: Logger;
  /** SHELLWEGO_NATS_TLS_CA: nodes verify NATS with the pinned CA when this file is that CA. */
  natsTlsCaFile?: string | null;
  /** Leaf lifetime (default 90 days) and how often renewal is looked for (default hourly); tests shorten them. */
  leafLifetimeDays?: number;
  checkEveryMs?: number;
}

/** The API's TLS as configured; null when it is off. */
export async function startApiTls(config: ApiTlsConfig, deps: ApiTlsDeps): Promise<ApiTls | null> {
  if (config.mode === 'off') return null;
  const natsCa = deps.natsTlsCaFile ? await readFile(deps.natsTlsCaFile, 'utf8') : null;
  const withNats = (caPem: string) => {
    const caFingerprint = certFingerprint(caPem);
    return { caPem, caFingerprint, natsUsesInstallCa: natsCa !== null && certFingerprint(natsCa) === caFingerprint };
  };
  return config.mode === 'files' ? filesTls(config, deps, withNats) : installCaTls(config, deps, withNats);
}

async function installCaTls(config: ApiTlsConfig, deps: ApiTlsDeps, withNats: (caPem: string) => ApiTls['nodeTls']): Promise<ApiTls> {
  const ca: LocalCa = await installCa(deps);
  const names = apiHostnames(config, deps.bind);
  const lifetimeDays = deps.leafLifetimeDays ?? 90;
  const issue = async () => {
    const leaf = await issueLeaf(ca, names, new Date(), lifetimeDays);
    // The chain ends in the CA: a node joining without a fingerprint reads it from the handshake.
    return { https: { cert: `${leaf.certPem.trimEnd()}\n${ca.certPem.trimEnd()}\n`, key: leaf.keyPem }, renewAt: leaf.notBefore.getTime() + (leaf.notAfter.getTime() - leaf.notBefore.getTime()) * 2 / 3 };
  };
  let current = await issue();
  const nodeTls = withNats(ca.certPem);
  return {
    https: current.https,
    nodeTls,
    describe: `install CA ${nodeTls.caFingerprint} (trust ${deps.dataDir}/tls/local-ca.pem; certificate for ${names.join(', ')})`,
    ...swapCertificates(deps.checkEveryMs ?? 3_600_000, async () => {
      if (Date.now() < current.renewAt) return null;
      current = await issue();
      return current.https;
    }, {
      swapped: () => deps.logger.info({ hostnames: names }, 'API certificate renewed (same CA: joined nodes keep working)'),
      failed: (err) => deps.logger.error({ err }, 'renewing the API certificate failed (the current one keeps serving)'),
    }),
  };
}

/**
 * The attach/close of ApiTls: every `everyMs`, `next` gives a new certificate (null: keep the
 * current one), which the listener takes for new handshakes (`setSecureContext`: no restart, no
 * dropped connection).
 */
function swapCertificates(everyMs: number, next: () => Promise<ApiTls['https'] | null>, say: { swapped(): void; failed(err: unknown): void }): Pick<ApiTls, 'attach' | 'close'> {
  let timer: NodeJS.Timeout | null = null;
  return {
    attach(server) {
      timer = setInterval(() => {
        next().then((https) => {
          if (!https) return;
          server.setSecureContext(https);
          say.swapped();
        }, say.failed);
      }, everyMs);
      timer.unref();
      server.once('close', () => clearInterval(timer!));
    },
    close() {
      if (timer) clearInterval(timer);
    },
  };
}

/** PEM blocks of a file, in order. */
const pemBlocks = (text: string) => text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];

async function filesTls(config: ApiTlsConfig, deps: ApiTlsDeps, withNats: (caPem: string) => ApiTls['nodeTls']): Promise<ApiTls> {
  const load = async () => {
    const [certText, key] = await Promise.all([readFile(config.certFile!, 'utf8'), readFile(config.keyFile!, 'utf8')]);
    const chain = pemBlocks(certText);
    if (chain.length === 0) throw new Error(`SHELLWEGO_API_TLS_CERT (${config.certFile}) holds no PEM certificate`);
    // Nodes pin a CA: the given one, or the CA the chain ends in.
    const caPem: string | undefined = config.caFile ? pemBlocks(await readFile(config.caFile, 'utf8'))[0] : chain.slice(1).find((c) => new X509Certificate(c).ca);
    if (!caPem && config.caFile) throw new Error(`SHELLWEGO_API_TLS_CA (${config.caFile}) holds no PEM certificate`);
    if (!caPem) throw new Error(`SHELLWEGO_API_TLS_CERT (${config.certFile}) does not end with the CA that signed it: give that CA with SHELLWEGO_API_TLS_CA (nodes pin it at join)`);
    const caX = new X509Certificate(caPem);
    // The leaf (or an intermediate of the chain) must be signed by that CA, or nodes could never verify it.
    if (!chain.some((c) => { const x = new X509Certificate(c); return x.checkIssued(caX) && x.verify(caX.publicKey); })) {
      throw new Error(`SHELLWEGO_API_TLS_CERT (${config.certFile}) is not signed by the CA in ${config.caFile ?? 'its chain'}`);
    }
    // The chain is served with the CA so a node joining without a fingerprint can read it.
    const cert = [...chain, ...(chain.some((c) => new X509Certificate(c).raw.equals(caX.raw)) ? [] : [caPem])].map((c) => `${c.trimEnd()}\n`).join('');
    return { https: { cert, key }, text: certText + key, caPem };
  };
  let current = await load();
  const nodeTls = withNats(current.caPem);
  return {
    https: current.https,
    nodeTls,
    describe: `${config.certFile} (CA ${nodeTls.caFingerprint})`,
    // The operator's renewal tool rewrites the files; a certificate from another CA is refused (nodes would be cut off).
    ...swapCertificates(deps.checkEveryMs ?? 60_000, async () => {
      const next = await load();
      if (next.text === current.text) return null;
      if (certFingerprint(next.caPem) !== nodeTls.caFingerprint) {
        deps.logger.error({ ca: certFingerprint(next.caPem), pinned: nodeTls.caFingerprint }, 'the new API certificate is from another CA than nodes pinned: restart the server to switch CAs (nodes then join again)');
        return null;
      }
      current = next;
      return next.https;
    }, {
      swapped: () => deps.logger.info({ file: config.certFile }, 'API certificate reloaded'),
      failed: (err) => deps.logger.error({ err }, 'reloading the API certificate failed (the current one keeps serving)'),
    }),
  };
}
