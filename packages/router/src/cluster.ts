/**
 * Routing across nodes (ADR draft: cross-node routing). Instances sit on a per-node bridge that is
 * not routed between hosts (no ip_forward: tenants stay walled off), so a router reaches another
 * node's instance through that node's router: it sends the request to the node's cluster
 * listener (the `nodes` map of the route table) with the instance id and the cluster token in
 * two headers, and that router forwards it to the named instance only, if it is its own and in
 * its table. The first router keeps the per-instance stats and the client's X-Forwarded-*.
 */
import { randomUUID } from 'node:crypto';
import { declaredHopHeaders, dropNamed, requestIdFrom } from './headers.ts';
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

/** What a cluster listener learns from a forwarded request's headers. */
export interface HopRequest extends ScannedRequest {
  instanceId: string | undefined;
  token: string | undefined;
}

/**
 * Headers of a request from another router, for the instance: hop-by-hop headers and the two
 * cluster headers go, everything else stays as the first router set it (X-Forwarded-*,
 * X-Request-Id). The body is framed like scanRequestHeaders does.
 */
export function scanHopRequest(raw: string[], forUpgrade: boolean): HopRequest {
  let out: string[] = [];
  let host: string | undefined;
  let connection: string | undefined;
  let requestId: string | undefined;
  let instanceId: string | undefined;
  let token: string | undefined;
  let transferEncoding = '';
  let chunked = false;
  let hasBody = false;
  let upgrade: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const value = raw[i + 1];
    switch (name.toLowerCase()) {
      case 'host':
        if (host === undefined) {
          host = value;
          out.push(name, value);
        }
        break;
      case 'connection':
        connection = connection === undefined ? value : `${connection}, ${value}`;
        break;
      case 'content-length':
        if (value !== '0') hasBody = true;
        out.push(name, value);
        break;
      case 'transfer-encoding':
        transferEncoding = transferEncoding === '' ? value : `${transferEncoding}, ${value}`;
        chunked = true;
        hasBody = true;
        break;
      case 'x-request-id':
        if (requestId === undefined) {
          requestId = value;
          out.push(name, value);
        }
        break;
      case 'x-shellwego-instance':
        instanceId ??= value;
        break;
      case 'x-shellwego-cluster-token':
        token ??= value;
        break;
      case 'upgrade':
        upgrade = value;
        break;
      case 'keep-alive':
      case 'proxy-connection':
      case 'proxy-authorization':
      case 'proxy-authenticate':
      case 'te':
      case 'trailer':
      case 'expect':
        break;
      default:
        out.push(name, value);
    }
  }
  if (connection !== undefined) {
    const extra = declaredHopHeaders(connection);
    if (extra) out = dropNamed(out, extra);
  }
  const id = requestId === undefined ? randomUUID() : requestIdFrom(requestId);
  if (requestId === undefined) out.push('X-Request-Id', id);
  if (chunked) out.push('Transfer-Encoding', transferEncoding);
  if (forUpgrade && upgrade !== undefined) out.push('Connection', 'Upgrade', 'Upgrade', upgrade);
  return { headers: out, host, requestId: id, hasBody, chunked, upgrade, instanceId, token };
}

/** Why a cluster listener refuses a forwarded request before looking for the instance; null = go on. */
export function hopRefusal(hop: HopRequest, acceptsToken: (t: string) => boolean): { err: RouterError; message: string } | null {
  if (hop.token === undefined || !acceptsToken(hop.token)) {
    return { err: routerErrors.clusterForbidden, message: "this port takes requests from the cluster's routers only (cluster token missing or wrong)" };
  }
  if (hop.instanceId === undefined || hop.instanceId === '') return { err: routerErrors.badRequest, message: `${INSTANCE_HEADER} header missing` };
  return null;
}
