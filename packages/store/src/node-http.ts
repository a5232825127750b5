/**
 * HTTP from a node to the control plane, verified against the control plane's CA pinned at join
 * when the API URL is https. The pin is the install's CA, not the server's leaf certificate: the
 * control plane renews (or HA servers each issue) leaf certificates signed by that CA and nodes
 * keep working, while a certificate from any other CA — a public one included — fails the TLS
 * handshake before any request byte (credentials included) is sent. Plain http (loopback tests,
 * a trusted network) has nothing to pin.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:tls';
import type { DetailedPeerCertificate } from 'node:tls';

/** The control plane's CA as pinned at join. */
export interface TlsPin {
  /** `sha256:<64 hex>` of the CA certificate's DER bytes. */
  fingerprint: string;
  pem: string;
}

const FINGERPRINT = /^sha256:[0-9a-f]{64}$/;

/** `sha256:AB:CD…` or `sha256:abcd…` → `sha256:abcd…`; throws on anything else. */
export function normalizeFingerprint(raw: string): string {
  const f = raw.trim().toLowerCase().replace(/^sha256:/, '').replaceAll(':', '');
  const out = `sha256:${f}`;
  if (!FINGERPRINT.test(out)) throw new Error(`a certificate fingerprint is sha256:<64 hex digits> (as printed by \`shellwego nodes token\` or \`openssl x509 -fingerprint -sha256\`), got '${raw}'`);
  return out;
}

const fingerprintOf = (der: Buffer) => `sha256:${createHash('sha256').update(der).digest('hex')}`;

/** `sha256:…` of the first certificate in a PEM text. */
export function pemFingerprint(pem: string): string {
  return fingerprintOf(new X509Certificate(pem).raw);
}

/**
 * The CA an https server's certificate chain ends in, read from the TLS handshake without
 * sending anything else (the join token must not leave before the server is known). With
 * `expected`, the chain must contain the CA of that fingerprint; without it, the top of the chain
 * is taken (trust on first use). Either way the server must send its CA with its chain; the
 * caller then verifies the chain for real (`nodeRequest` with the pin).
 */
export function probeCa(url: string, expected?: string | null): Promise<TlsPin> {
  const u = new URL(url);
  const want = expected ? normalizeFingerprint(expected) : null;
  return new Promise((resolve, reject) => {
    const socket = connect({ host: u.hostname, port: Number(u.port || 443), servername: isIp(u.hostname) ? undefined : u.hostname, rejectUnauthorized: false }, () => {
      const chain = peerChain(socket.getPeerCertificate(true));
      socket.destroy();
      if (chain.length === 0) return reject(new Error(`${u.origin} presented no TLS certificate`));
      const cas = chain.filter((c) => c.ca);
      const ca = want ? cas.find((c) => c.fingerprint === want) : cas.at(-1);
      if (want && !ca) {
        return reject(new Error(`the control plane at ${u.origin} presented a certificate chain without the CA ${want} ` +
          `(it sent ${chain.map((c) => `${c.subject} ${c.fingerprint}`).join(', ')}): refusing to join (check --ca-fingerprint, or someone is in between)`));
      }
      if (!ca) {
        return reject(new Error(`the control plane at ${u.origin} sent no CA certificate with its own (${chain[0].fingerprint}): nothing to pin. ` +
          'Its operator must serve the chain with the CA (SHELLWEGO_API_TLS_CA on the server).'));
      }
      resolve({ fingerprint: ca.fingerprint, pem: ca.pem });
    });
    socket.on('error', (err) => reject(new Error(`could not reach ${u.origin} over TLS: ${err.message}`, { cause: err })));
  });
}

/** The certificates the server sent, leaf first (Node links them through issuerCertificate). */
function peerChain(leaf: DetailedPeerCertificate): { fingerprint: string; pem: string; ca: boolean; subject: string }[] {
  const out: { fingerprint: string; pem: string; ca: boolean; subject: string }[] = [];
  for (let c: DetailedPeerCertificate | undefined = leaf; c?.raw && !out.some((o) => o.fingerprint === fingerprintOf(c!.raw)); c = c.issuerCertificate) {
    const x = new X509Certificate(c.raw);
    out.push({ fingerprint: fingerprintOf(c.raw), pem: x.toString(), ca: x.ca, subject: x.subject.replaceAll('\n', ', ') });
  }
  return out;
}

const isIp = (host: string) => /^[\d.]+$/.test(host) || host.includes(':');

/** TLS client options that trust the pinned CA and nothing else (the system's CAs included). */
export function pinnedTlsOptions(pin: TlsPin): { ca: string[] } {
  return { ca: [pin.pem] };
}

/** One request; the response streams (the caller reads or discards it). */
export function nodeRequest(url: string, opts: { method?: 'GET' | 'POST'; headers?: Record<string, string>; body?: string; pin?: TlsPin | null } = {}): Promise<IncomingMessage> {
  const u = new URL(url);
  const https = u.protocol === 'https:';
  return new Promise((resolve, reject) => {
    const req = (https ? httpsRequest : httpRequest)(url, {
      method: opts.method ?? 'GET', headers: opts.headers, agent: false, ...(https && opts.pin ? pinnedTlsOptions(opts.pin) : {}),
    }, resolve);
    req.on('error', (err: NodeJS.ErrnoException) => reject(https && opts.pin ? pinnedTlsError(u.origin, opts.pin, err) : err));
    req.end(opts.body);
  });
}

/** What a failed handshake against the pinned CA means, in words an operator can act on. */
export function pinnedTlsError(origin: string, pin: TlsPin, err: NodeJS.ErrnoException): Error {
  const code = `${err.code ?? ''}`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return new Error(`the control plane's certificate at ${origin} is signed by the pinned CA but not issued for this host name (${err.message}): ` +
      'add the name with --api-hostname (SHELLWEGO_API_HOSTNAMES) on the server', { cause: err });
  }
  if (code === 'CERT_HAS_EXPIRED') return new Error(`the control plane's certificate at ${origin} has expired: ${err.message}`, { cause: err });
  if (/CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|ERR_SSL/i.test(`${code} ${err.message}`)) {
    return new Error(`the control plane at ${origin} presented a certificate not issued by the CA pinned at join (${pin.fingerprint}): refusing to talk to it (${code || err.message}). ` +
      'If the install\'s CA was replaced on purpose, remove node-credentials.json from the node\'s data dir and join again with a new token.', { cause: err });
  }
  return err;
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
