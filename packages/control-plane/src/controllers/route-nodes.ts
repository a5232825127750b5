/**
 * Routing across nodes: the route table names each backend's node, maps nodes to their routers'
 * cluster endpoints (from heartbeats, kept on the node row) and carries the cluster token the
 * routers present to each other. Instance bridges are not routed between hosts (no ip_forward,
 * tenants stay walled off), so a router reaches another node's instance through that node's
 * router (packages/router/src/cluster.ts). A node that reports no endpoint (an older agent) is
 * left out of `nodes`: routers reach its instances directly, as before.
 */
import { randomBytes } from 'node:crypto';
import type { HeartbeatMessage, RouteBackend, RouteTableMessage } from '@shellwego/core';
import type { InstanceRow, Store } from '@shellwego/store';

const TOKEN_NAME = 'router-cluster-token';
const tokens = new WeakMap<Store, Promise<string>>();

/** The cluster token, shared by every control plane on this store and kept across restarts. */
export function clusterToken(store: Store): Promise<string> {
  let t = tokens.get(store);
  if (t === undefined) {
    t = store.clusterSecrets.getOrCreate(TOKEN_NAME, () => randomBytes(32).toString('base64url'));
    // A failed read (database away) is asked again next time.
    t.catch(() => tokens.delete(store));
    tokens.set(store, t);
  }
  return t;
}

/** The route's backends with the node each instance runs on (`instances`: the rows they came from). */
export function withNodes(backends: RouteBackend[], instances: Pick<InstanceRow, 'id' | 'nodeId'>[]): RouteBackend[] {
  const nodeOf = new Map(instances.map((i) => [i.id, i.nodeId]));
  return backends.map((b) => {
    const nodeId = nodeOf.get(b.instanceId);
    if (!nodeId) return b;
    // Literals, not `{ ...b, nodeId }`: V8 gives every spread copy a hidden class of its own
    // (≈ 200 bytes each, 30,000 backends at 10,000 apps; bench/scale.ts).
    return b.weight === undefined ? { instanceId: b.instanceId, address: b.address, nodeId } : { instanceId: b.instanceId, address: b.address, weight: b.weight, nodeId };
  });
}

/**
 * The table's `nodes` map and the cluster token; empty when no backend of `routes` runs on a
 * node and no node reports an endpoint (routers then go direct). Every node with an endpoint is
 * in the map, not only those with backends: a router takes hops only from routers whose node
 * (from their certificate) is in it (ADR 0022), so a removed node's row leaving it revokes it.
 */
export async function clusterNodes(store: Store, routes: Iterable<{ route: RouteTableMessage['routes'][string] }>): Promise<Pick<RouteTableMessage, 'nodes' | 'clusterToken'>> {
  let used = false;
  for (const { route } of routes) if (route.backends.some((b) => b.nodeId)) used = true;
  if (!used) return {};
  const nodes: Record<string, string> = {};
  for (const n of await store.nodes.list()) if (n.clusterEndpoint) nodes[n.id] = n.clusterEndpoint;
  if (Object.keys(nodes).length === 0) return {};
  return { nodes, clusterToken: await clusterToken(store) };
}

/** A heartbeat's cluster endpoint when it is a plausible host:port (anything else: none). */
export function clusterEndpointOf(m: Pick<HeartbeatMessage, 'clusterEndpoint'>): string | null {
  const e = m.clusterEndpoint;
  if (typeof e !== 'string' || e.length > 300) return null;
  const match = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(e);
  return match && Number(match[1]) >= 1 && Number(match[1]) <= 65535 ? e : null;
}
