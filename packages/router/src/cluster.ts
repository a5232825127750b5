/**
 * Routing across nodes (ADR 0018). Instances sit on a per-node bridge that is not routed between
 * hosts (no ip_forward: tenants stay walled off), so a router reaches another node's instance
 * through that node's router: it sends the request to the node's cluster listener (the `nodes`
 * map of the route table) with the instance id and the cluster token in two headers, and that
 * router forwards it to the named instance only, if it is its own and in its table. The first
 * router keeps the per-instance stats and the client's X-Forwarded-*.
 *
 * The hop is mutual TLS (ADR 0022): both routers present their node's certificate from the
 * install CA (identity: URI SAN `shellwego://node/<id>`), trust that CA alone, and check the
 * other's identity — the dialer that it reached the node the table names, the listener that the
 * caller is a node in its current table (a removed node is out of it: that is the revocation).
 */
import net from 'node:net';
import tls from 'node:tls';
import type { PeerCertificate, SecureContext, TLSSocket } from 'node:tls';
import { NODE_IDENTITY_PREFIX } from '@shellwego/core';
import { scanRequestHeaders } from './headers.ts';
import type { ScannedRequest } from './headers.ts';
import { routerErrors } from './errors.ts';
import type { RouterError } from './errors.ts';

export const INSTANCE_HEADER = 'X-Shellwego-Instance';
export const TOKEN_HEADER = 'X-Shellwego-Cluster-Token';

/** Answers of a cluster listener that mean "nothing reached the instance": the first router tries another backend. */
export const UNDELIVERED_CODES: ReadonlySet<string> = new Set([routerErrors.instanceNotOnNode.code, routerErrors.instanceUnreachable.code]);

/** The two headers a router adds for another node's router. */
export function hopHeaders(instanceId: string, token: string): string[] {
  return [INSTANCE_HEADER, instanceId, TOKEN_HEADER, token];
}

/**
 * Headers of a request from another router, for the instance: hop-by-hop headers and the two
 * cluster headers go, everything else stays as the first router set it (X-Forwarded-*,
 * X-Request-Id). One scanner with the public port's (headers.ts), so both frame bodies alike.
 */
export function scanHopRequest(raw: string[], forUpgrade: boolean): ScannedRequest {
  return scanRequestHeaders(raw, null, forUpgrade);
}

/**
 * Why a cluster listener refuses a forwarded request before looking for the instance; null = go
 * on. `peer`: the calling node (from its certificate; null = the certificate names none).
 */
export function hopRefusal(hop: ScannedRequest, acceptsToken: (t: string) => boolean, peer: string | null, isMember: (nodeId: string) => boolean): { err: RouterError; message: string } | null {
  if (peer === null) return { err: routerErrors.clusterForbidden, message: 'this port takes requests from the cluster\'s routers only (the client certificate names no node)' };
  if (!isMember(peer)) {
    return { err: routerErrors.clusterForbidden, message: `node ${peer} is not in this router's route table (removed from the cluster, or not known yet): hop refused` };
  }
  if (hop.token === undefined || !acceptsToken(hop.token)) {
    return { err: routerErrors.clusterForbidden, message: "this port takes requests from the cluster's routers only (cluster token missing or wrong)" };
  }
  if (hop.instanceId === undefined || hop.instanceId === '') return { err: routerErrors.badRequest, message: `${INSTANCE_HEADER} header missing` };
  return null;
}

/** This node's cluster certificate (PEM, may be followed by the CA), its key, and the install CA: the only trust root of hops. */
export interface ClusterIdentity {
  cert: string;
  key: string;
  ca: string;
}

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const NODE_URI = new RegExp(`(?:^|, )URI:${NODE_IDENTITY_PREFIX.replace(/[/.]/g, '\\$&')}([A-Za-z0-9_-]+)(?=, |$)`, 'g');

/**
 * The node a (chain-verified) certificate is for: its one `shellwego://node/<id>` URI SAN, when
 * its extended key usage allows `purpose`; else null. The install CA also signs API, NATS and
 * (TLS mode local-ca) tenant-domain certificates: none of them has a node URI or clientAuth.
 */
export function certNodeId(cert: PeerCertificate | null | undefined, purpose: 'client' | 'server'): string | null {
  if (!cert?.subjectaltname || !cert.ext_key_usage?.includes(purpose === 'client' ? CLIENT_AUTH : SERVER_AUTH)) return null;
  const ids = [...cert.subjectaltname.matchAll(NODE_URI)].map((m) => m[1]);
  return ids.length === 1 ? ids[0] : null;
}

const peers = new WeakMap<net.Socket, string | null>();

/** The node on the other end of a cluster listener connection (read once per connection). */
export function peerNodeId(socket: net.Socket): string | null {
  let id = peers.get(socket);
  if (id === undefined) {
    const t = socket as TLSSocket;
    id = t.encrypted && t.authorized ? certNodeId(t.getPeerCertificate(), 'client') : null;
    peers.set(socket, id);
  }
  return id;
}

/**
 * Both sides of the hop's TLS with this node's identity. `set` takes a renewed certificate:
 * new connections (both ways) use it, open ones keep theirs.
 */
export class ClusterTls {
  private identity!: ClusterIdentity;
  private context!: SecureContext;

  constructor(identity: ClusterIdentity) {
    this.set(identity);
  }

  set(identity: ClusterIdentity): void {
    // Built first: a bad certificate or key throws here and the current one stays.
    const context = tls.createSecureContext({ cert: identity.cert, key: identity.key, ca: [identity.ca], minVersion: 'TLSv1.3' });
    this.identity = identity;
    this.context = context;
  }

  /** For the cluster listener: a client certificate from the install CA (and nothing else) is required. */
  serverOptions(): tls.TlsOptions {
    const { cert, key, ca } = this.identity;
    return { cert, key, ca: [ca], requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' };
  }

  /** A connection to node `nodeId`'s cluster listener; the handshake fails unless its certificate is for that node. */
  connect(host: string, port: number, nodeId: string): TLSSocket {
    const socket = tls.connect({
      host, port, secureContext: this.context, rejectUnauthorized: true,
      // Who it must be is the node the route table names, not a host name.
      checkServerIdentity: (_host, cert) => {
        const got = certNodeId(cert, 'server');
        if (got === nodeId) return undefined;
        const err: NodeJS.ErrnoException = new Error(`the router at ${host}:${port} is ${got === null ? 'no node' : `node ${got}`}, not node ${nodeId} as the route table says`);
        err.code = 'ERR_TLS_CERT_ALTNAME_INVALID';
        return err;
      },
    });
    socket.setNoDelay(true);
    return socket;
  }
}
