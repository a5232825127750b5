/**
 * Routing across nodes (ADR draft: cross-node routing). Instances sit on a per-node bridge that is
 * not routed between hosts (no ip_forward: tenants stay walled off), so a router reaches another
 * node's instance through that node's router: it sends the request to the node's cluster
 * listener (the `nodes` map of the route table) with the instance id and the cluster token in
 * two headers, and that router forwards it to the named instance only, if it is its own and in
 * its table. The first router keeps the per-instance stats and the client's X-Forwarded-*.
 */
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

/** Why a cluster listener refuses a forwarded request before looking for the instance; null = go on. */
export function hopRefusal(hop: ScannedRequest, acceptsToken: (t: string) => boolean): { err: RouterError; message: string } | null {
  if (hop.token === undefined || !acceptsToken(hop.token)) {
    return { err: routerErrors.clusterForbidden, message: "this port takes requests from the cluster's routers only (cluster token missing or wrong)" };
  }
  if (hop.instanceId === undefined || hop.instanceId === '') return { err: routerErrors.badRequest, message: `${INSTANCE_HEADER} header missing` };
  return null;
}
