/**
 * HTTP from a node to the control plane, with the control plane's certificate pinned when the
 * API URL is https: the certificate seen at join (trust on first use, or checked against the
 * fingerprint the operator gave) is the only one accepted afterwards. The pinned certificate is a
 * trust anchor (so a self-signed one verifies) and its sha256 must match what the server
 * presents; a different certificate fails the TLS handshake before any request byte (credentials
 * included) is sent. Plain http (loopback tests, a trusted network) has nothing to pin.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, rootCertificates } from 'node:tls';
import type { PeerCertificate } from 'node:tls';

/** The control plane's certificate as pinned at join. */
export interface TlsPin {
  /** `sha256:<64 hex>` of the certificate's DER bytes. */
  fingerprint: string;
  pem: string;
}

const FINGERPRINT = /^sha256:[0-9a-f]{64}$/;

/** `sha256:AB:CD…` or `sha256:abcd…` → `sha256:abcd…`; throws on anything else. */
export function normalizeFingerprint(raw: string): string {
  const f = raw.trim().toLowerCase().replace(/^sha256:/, '').replaceAll(':', '');
  const out = `sha256:${f}`;
  if (!FINGERPRINT.test(out)) throw new Error(`a certificate fingerprint is sha256:<64 hex digits> (as printed by \`openssl x509 -fingerprint -sha256\`), got '${raw}'`);
  return out;
}

const fingerprintOf = (der: Buffer) => `sha256:${createHash('sha256').update(der).digest('hex')}`;

/**
 * The certificate an https server presents, fetched without sending anything but the TLS
 * handshake (trust on first use); with `expected`, a different one is refused.
 */
export function probeCertificate(url: string, expected?: string | null): Promise<TlsPin> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: u.hostname, port: Number(u.port || 443), servername: isIp(u.hostname) ? undefined : u.hostname, rejectUnauthorized: false }, () => {
      const cert = socket.getPeerCertificate(true) as PeerCertificate;
      socket.destroy();
      if (!cert?.raw) return reject(new Error(`${u.origin} presented no TLS certificate`));
      const pin = { fingerprint: fingerprintOf(cert.raw), pem: new X509Certificate(cert.raw).toString() };
      if (expected && normalizeFingerprint(expected) !== pin.fingerprint) {
        return reject(new Error(`the control plane at ${u.origin} presented certificate ${pin.fingerprint}, not the expected ${normalizeFingerprint(expected)}: refusing to join (check --ca-fingerprint, or someone is in between)`));
      }
      resolve(pin);
    });
    socket.on('error', (err) => reject(new Error(`could not reach ${u.origin} over TLS: ${err.message}`, { cause: err })));
  });
}

const isIp = (host: string) => /^[\d.]+$/.test(host) || host.includes(':');

/** One request; the response streams (the caller reads or discards it). */
export function nodeRequest(url: string, opts: { method?: 'GET' | 'POST'; headers?: Record<string, string>; body?: string; pin?: TlsPin | null } = {}): Promise<IncomingMessage> {
  const u = new URL(url);
  const https = u.protocol === 'https:';
  return new Promise((resolve, reject) => {
    const tlsOptions = https && opts.pin ? {
      ca: [...rootCertificates, opts.pin.pem],
      // The pin stands in for the host name check: only this very certificate is accepted.
      checkServerIdentity: (_host: string, cert: PeerCertificate) =>
        fingerprintOf(cert.raw) === opts.pin!.fingerprint ? undefined : new Error(`certificate ${fingerprintOf(cert.raw)} is not the pinned one`),
    } : {};
    const req = (https ? httpsRequest : httpRequest)(url, {
      method: opts.method ?? 'GET', headers: opts.headers, agent: false, ...tlsOptions,
    }, resolve);
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (https && opts.pin && isTlsError(err)) {
        reject(new Error(`the control plane at ${u.origin} presented a certificate other than the one pinned at join (${opts.pin.fingerprint}): refusing to talk to it (${err.message}). ` +
          'If it was replaced on purpose, remove node-credentials.json from the node\'s data dir and join again with a new token.', { cause: err }));
      } else reject(err);
    });
    req.end(opts.body);
  });
}

function isTlsError(err: NodeJS.ErrnoException): boolean {
  return /CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|pinned/i.test(`${err.code ?? ''} ${err.message}`);
}

/** Reads a whole (small, JSON) response. */
export async function readJson(res: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    return null;
  }
}
