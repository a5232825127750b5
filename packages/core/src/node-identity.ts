/**
 * A node's identity in its cluster certificate (ADR 0022: router-to-router hops over mutual TLS).
 * It is a URI SAN, not a DNS name: in TLS mode `local-ca` the same install CA issues DNS-SAN
 * certificates for tenants' custom domains, so a tenant could otherwise ask for a certificate
 * named like a node.
 */
export const NODE_IDENTITY_PREFIX = 'shellwego://node/';

/** `shellwego://node/<nodeId>`: the URI SAN of that node's cluster certificate. */
export function nodeIdentityUri(nodeId: string): string {
  return `${NODE_IDENTITY_PREFIX}${nodeId}`;
}

/** Renew a node's cluster certificate when it has less than this left. */
export const NODE_CERT_RENEW_BEFORE_MS = 30 * 86_400_000;
