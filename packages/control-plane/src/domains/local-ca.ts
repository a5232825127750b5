/**
 * The local certificate authority (TLS mode `local-ca`): one CA key and certificate per install,
 * issuing short-lived leaf certificates for `*.<base domain>` and each custom domain. For offline
 * and development installs; users trust `<data>/tls/local-ca.pem` once.
 */
import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;
export const CA_LIFETIME_DAYS = 3650;
export const LEAF_LIFETIME_DAYS = 90;

export interface IssuedPem {
  certPem: string;
  keyPem: string;
  notBefore: Date;
  notAfter: Date;
}

export interface LocalCa {
  cert: x509.X509Certificate;
  key: CryptoKey;
  certPem: string;
}

function serial(): string {
  // Positive 128-bit serial (high bit cleared), as RFC 5280 asks.
  const b = randomBytes(16);
  b[0] &= 0x7f;
  return b.toString('hex');
}

async function keyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key as webcrypto.CryptoKey);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

/** A new CA: ECDSA P-256, valid ten years, path length 0 (it signs leaves only). */
export async function createCa(name: string, now = new Date()): Promise<IssuedPem> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
  const notBefore = new Date(now.getTime() - 60_000);
  const notAfter = new Date(now.getTime() + CA_LIFETIME_DAYS * DAY);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(), name: `CN=${name}, O=ShellWeGo`, notBefore, notAfter, keys, signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await keyPem(keys.privateKey), notBefore, notAfter };
}

export async function loadCa(certPem: string, keyPemText: string): Promise<LocalCa> {
  const cert = new x509.X509Certificate(certPem);
  const der = x509.PemConverter.decodeFirst(keyPemText);
  const key = (await webcrypto.subtle.importKey('pkcs8', der, ALG, false, ['sign'])) as unknown as CryptoKey;
  return { cert, key, certPem };
}

/** A leaf certificate for `hostnames` (the first is the subject CN), signed by `ca`. */
export async function issueLeaf(ca: LocalCa, hostnames: string[], now = new Date(), lifetimeDays = LEAF_LIFETIME_DAYS): Promise<IssuedPem> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
  const notBefore = new Date(now.getTime() - 60_000);
  const notAfter = new Date(Math.min(now.getTime() + lifetimeDays * DAY, ca.cert.notAfter.getTime()));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(), subject: `CN=${hostnames[0]}`, issuer: ca.cert.subject, notBefore, notAfter,
    signingKey: ca.key, publicKey: keys.publicKey, signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      // IP addresses (an API or nats-server reached by address) are IP SANs, names DNS SANs.
      new x509.SubjectAlternativeNameExtension(hostnames.map((value) => ({ type: isIP(value) ? 'ip' as const : 'dns' as const, value }))),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await keyPem(keys.privateKey), notBefore, notAfter };
}

/** A node's public key (SPKI PEM, ECDSA P-256), or null when it is not one. */
export async function importNodePublicKey(pem: string): Promise<CryptoKey | null> {
  try {
    const der = x509.PemConverter.decodeFirst(pem);
    return (await webcrypto.subtle.importKey('spki', der, { name: 'ECDSA', namedCurve: 'P-256' }, true, ['verify'])) as unknown as CryptoKey;
  } catch {
    return null;
  }
}

/**
 * A node's cluster certificate (ADR 0022) for the public key the node generated (SPKI PEM, ECDSA
 * P-256): its private key never leaves the node. Identity = URI SAN `shellwego://node/<id>`
 * (`identityUri`), for both ends of a router-to-router hop (serverAuth + clientAuth). No proof
 * of possession is needed: a certificate for someone else's key is useless without that key, and
 * the identity is always the caller's own node id.
 */
export async function issueNodeLeaf(ca: LocalCa, nodeId: string, identityUri: string, publicKey: CryptoKey, now = new Date(), lifetimeDays = LEAF_LIFETIME_DAYS): Promise<{ certPem: string; notBefore: Date; notAfter: Date }> {
  const notBefore = new Date(now.getTime() - 60_000);
  // Whole seconds: what the certificate says (X.509 time has no milliseconds), so `notAfter` reported is exact.
  const notAfter = new Date(Math.floor(Math.min(now.getTime() + lifetimeDays * DAY, ca.cert.notAfter.getTime()) / 1000) * 1000);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(), subject: `CN=${nodeId}, OU=nodes, O=ShellWeGo`, issuer: ca.cert.subject, notBefore, notAfter,
    signingKey: ca.key, publicKey, signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identityUri }]),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), notBefore, notAfter };
}

/** Validity of the first certificate of a PEM chain. */
export function certificateDates(certPem: string): { notBefore: Date; notAfter: Date } {
  const cert = new x509.X509Certificate(x509.PemConverter.decodeFirst(certPem));
  return { notBefore: cert.notBefore, notAfter: cert.notAfter };
}
