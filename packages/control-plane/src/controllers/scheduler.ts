/**
 * Placement is a pure function from (nodes, their current load, one request) to a node, so it
 * can be tested with fixture clusters and explained. Filters first (ready, enough memory), then
 * scores: spread an app's replicas, then pick the least loaded node; ties break on node id so
 * the same input always gives the same answer.
 */
export interface NodeLoad {
  id: string;
  ready: boolean;
  memoryMb: number;
  /** Memory already promised to instances placed on the node. */
  allocatedMb: number;
  /** Instances of the app being placed already on this node. */
  sameApp: number;
}

export interface PlacementRequest {
  memoryMb: number;
}

export type Placement = { nodeId: string; reason: string } | { nodeId: null; reason: string };

export function place(nodes: NodeLoad[], req: PlacementRequest): Placement {
  const ready = nodes.filter((n) => n.ready);
  if (ready.length === 0) return { nodeId: null, reason: 'no ready nodes' };
  const fits = ready.filter((n) => n.memoryMb - n.allocatedMb >= req.memoryMb);
  if (fits.length === 0) {
    return { nodeId: null, reason: `no node has ${req.memoryMb} MB free (${ready.map((n) => `${n.id}: ${n.memoryMb - n.allocatedMb} MB`).join(', ')})` };
  }
  const best = [...fits].sort((a, b) =>
    a.sameApp - b.sameApp ||
    a.allocatedMb / a.memoryMb - b.allocatedMb / b.memoryMb ||
    a.id.localeCompare(b.id),
  )[0];
  return { nodeId: best.id, reason: `fewest replicas of the app (${best.sameApp}), most free memory among ${fits.length} fitting node(s)` };
}
