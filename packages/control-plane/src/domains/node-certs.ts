/**
 * Nodes' cluster certificates (ADR 0022): the install CA signs the public key a node generated,
 * for the identity `shellwego://node/<id>`, so routers can hop to each other over mutual TLS.
 * Issued at join (in the answer) and again through the node's own credentials (renewal, or a
 * node that joined before this existed).
 */
import { badRequest, nodeIdentityUri } from '@shellwego/core';
import type { ControlPlaneContext } from '../context.ts';
import { installCa } from './install-ca.ts';
import { importNodePublicKey, issueNodeLeaf } from './local-ca.ts';
import type { LocalCa } from './local-ca.ts';

export interface NodeCertificate {
  certPem: string;
  /** The install CA: the only trust root of router-to-router hops. */
  caPem: string;
  notAfter: string;
}

const cas = new WeakMap<object, Promise<LocalCa>>();

function caOf(cp: Pick<ControlPlaneContext, 'store' | 'secrets' | 'settings'>): Promise<LocalCa> {
  let ca = cas.get(cp.store);
  if (ca === undefined) {
    ca = installCa({ store: cp.store, secrets: cp.secrets, baseDomain: cp.settings.baseDomain, dataDir: cp.settings.dataDir });
    // A failed read (database away) is tried again next time.
    ca.catch(() => cas.delete(cp.store));
    cas.set(cp.store, ca);
  }
  return ca;
}

/** The node's public key checked (400 `invalid_public_key` otherwise), before anything is changed. */
export async function nodePublicKey(pem: string): Promise<CryptoKey> {
  const key = await importNodePublicKey(pem);
  if (key === null) throw badRequest('invalid_public_key', 'the public key must be an ECDSA P-256 key in SPKI PEM (-----BEGIN PUBLIC KEY-----)');
  return key;
}

/** A certificate for `nodeId` on `publicKey`, signed by the install CA. */
export async function issueNodeCertificate(cp: Pick<ControlPlaneContext, 'store' | 'secrets' | 'settings'>, nodeId: string, publicKey: CryptoKey): Promise<NodeCertificate> {
  const ca = await caOf(cp);
  const leaf = await issueNodeLeaf(ca, nodeId, nodeIdentityUri(nodeId), publicKey);
  return { certPem: leaf.certPem, caPem: ca.certPem, notAfter: leaf.notAfter.toISOString() };
}
