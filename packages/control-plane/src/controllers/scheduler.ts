/**
 * Placement is a pure function from (nodes, their current load, one request) to a decision, so
 * it can be tested with fixture clusters and explained. Filters first (node state, memory, CPU,
 * the app's required labels, taints it does not tolerate, volume locality: a volume the instance
 * mounts lives on one node, and only that node may take it), then scores what is left:
 *   replicas  −1000 per instance of the app already on the node (spread an app across nodes),
 *   zone      −100 per instance of the app already in the node's `zone` label (and across zones),
 *   load      0..100: free share after placing (policy `spread`) or used share (policy `pack`).
 * The weights make the order lexicographic: replicas, then zones, then load. Ties break on node
 * id, so the same input always gives the same answer. Every node gets a verdict: why it was
 * filtered out, or its score parts — that is what `ps --explain` shows.
 */
import type { AppPlacement, NodeState, NodeTaint, SchedulingPolicy } from '@shellwego/core';
import { taintString, tolerates } from '@shellwego/core';

export interface NodeLoad {
  id: string;
  name: string;
  /** As operators see it (`nodeState()`): only `ready` takes new instances. */
  state: NodeState;
  cpus: number;
  memoryMb: number;
  /** Memory and CPUs already promised to instances placed on the node. */
  allocatedMb: number;
  allocatedCpus: number;
  /** Effective labels (agent's, overridden by the operator's). */
  labels: Record<string, string>;
  taints: NodeTaint[];
  /** Instances of the app being placed already on this node. */
  sameApp: number;
}

export interface SchedulingSettings {
  policy: SchedulingPolicy;
  /** CPU limits are compressible: a node takes instances up to this many times its CPUs. */
  cpuOvercommit: number;
}
export const DEFAULT_SCHEDULING: SchedulingSettings = { policy: 'spread', cpuOvercommit: 4 };

export interface PlacementRequest {
  memoryMb: number;
  cpus: number;
  placement?: AppPlacement;
  settings?: SchedulingSettings;
  /** Volumes the instance mounts; `nodeId` null = not pinned yet (any node may take it, and pins it). */
  volumes?: { name: string; nodeId: string | null }[];
}

export interface ScoreParts { replicas: number; zone: number; load: number; total: number }
export type NodeVerdict =
  | { nodeId: string; name: string; fits: false; reasons: string[] }
  | { nodeId: string; name: string; fits: true; score: ScoreParts };

export type Placement = ({ nodeId: string } | { nodeId: null }) & {
  /** One line for people: where and why, or why nothing fits. */
  reason: string;
  /** Every node's verdict, in node-id order. */
  nodes: NodeVerdict[];
};

const ZONE = 'zone';
const fmtCpus = (n: number) => String(Math.round(n * 100) / 100);

export function place(nodes: NodeLoad[], req: PlacementRequest): Placement {
  const settings = req.settings ?? DEFAULT_SCHEDULING;
  const required = req.placement?.requiredLabels ?? {};
  const tolerations = req.placement?.tolerations ?? [];
  const sorted = [...nodes].sort((a, b) => a.id.localeCompare(b.id));
  if (sorted.length === 0) return { nodeId: null, reason: 'no nodes have joined the platform', nodes: [] };
  const nameOf = (id: string) => sorted.find((n) => n.id === id)?.name ?? id;
  const pinned = (req.volumes ?? []).filter((v): v is { name: string; nodeId: string } => v.nodeId !== null).sort((a, b) => a.name.localeCompare(b.name));

  // Replicas of the app per zone, over every node (a cordoned node's replicas still occupy its zone).
  const perZone = new Map<string, number>();
  for (const n of sorted) {
    const z = n.labels[ZONE];
    if (z !== undefined) perZone.set(z, (perZone.get(z) ?? 0) + n.sameApp);
  }

  const verdicts: NodeVerdict[] = sorted.map((n) => {
    const reasons: string[] = [];
    if (n.state !== 'ready') reasons.push(`is ${n.state}`);
    // The data is on one node: no other node can stand in for it (nor does anything move it).
    for (const v of pinned) if (v.nodeId !== n.id) reasons.push(`volume "${v.name}" lives on node ${nameOf(v.nodeId)}`);
    const freeMb = n.memoryMb - n.allocatedMb;
    if (freeMb < req.memoryMb) reasons.push(`needs ${req.memoryMb} MB, has ${Math.max(0, freeMb)} MB free`);
    const cpuCap = n.cpus * settings.cpuOvercommit;
    if (n.allocatedCpus + req.cpus > cpuCap + 1e-9) {
      reasons.push(`needs ${fmtCpus(req.cpus)} CPU, has ${fmtCpus(Math.max(0, cpuCap - n.allocatedCpus))} free (${fmtCpus(n.cpus)} × ${settings.cpuOvercommit} overcommit)`);
    }
    for (const [k, v] of Object.entries(required).sort(([a], [b]) => a.localeCompare(b))) {
      if (n.labels[k] !== v) reasons.push(`lacks label ${k}=${v}${n.labels[k] !== undefined ? ` (has ${k}=${n.labels[k]})` : ''}`);
    }
    for (const t of n.taints) if (!tolerates(tolerations, t)) reasons.push(`taint ${taintString(t)} not tolerated`);
    if (reasons.length > 0) return { nodeId: n.id, name: n.name, fits: false, reasons };

    const zone = n.labels[ZONE] === undefined ? 0 : 0 - 100 * (perZone.get(n.labels[ZONE]) ?? 0);
    const usedAfter = Math.max((n.allocatedMb + req.memoryMb) / Math.max(1, n.memoryMb), n.cpus > 0 ? (n.allocatedCpus + req.cpus) / cpuCap : 0);
    const used = Math.round(Math.min(1, usedAfter) * 100);
    const load = settings.policy === 'pack' ? used : 100 - used;
    const replicas = 0 - 1000 * n.sameApp; // (not -1000 * n: no -0 in explanations)
    return { nodeId: n.id, name: n.name, fits: true, score: { replicas, zone, load, total: replicas + zone + load } };
  });

  const fitting = verdicts.filter((v): v is Extract<NodeVerdict, { fits: true }> => v.fits);
  if (fitting.length === 0) {
    const why = upTo(verdicts.map((v) => (v.fits ? '' : `${v.name} ${v.reasons.join(', ')}`)));
    return { nodeId: null, reason: `no node fits: ${why}`, nodes: verdicts };
  }
  // Stable sort over id-ordered verdicts: equal totals keep node-id order.
  const best = [...fitting].sort((a, b) => b.score.total - a.score.total)[0];
  const s = best.score;
  return {
    nodeId: best.nodeId,
    reason: `on ${best.name}: score ${s.total} (replicas ${s.replicas}, zone ${s.zone}, ${settings.policy} ${s.load}), best of ${fitting.length} fitting node(s)` +
      (verdicts.length > 1 ? `; ${explainOthers(verdicts, best.nodeId)}` : ''),
    nodes: verdicts,
  };
}

/** The runners-up and the filtered nodes, in a line. */
function explainOthers(verdicts: NodeVerdict[], chosen: string): string {
  return upTo(verdicts.filter((v) => v.nodeId !== chosen).map((v) => (v.fits ? `${v.name} scored ${v.score.total}` : `${v.name} ${v.reasons.join(', ')}`)));
}

/**
 * The explanation is stored with every instance: on 1,000 nodes a line per node would be tens
 * of kilobytes per instance, so it names the first few and counts the rest.
 */
const EXPLAIN_NODES = 8;
function upTo(lines: string[]): string {
  return lines.length <= EXPLAIN_NODES ? lines.join('; ') : `${lines.slice(0, EXPLAIN_NODES).join('; ')}; and ${lines.length - EXPLAIN_NODES} more node(s)`;
}

/**
 * Nodes an app's instances must leave: draining nodes, and nodes with a NoExecute taint the app
 * does not tolerate. The planner replaces instances there like instances marked for replacement
 * (new one elsewhere first, then the old one drains), so leaving costs no availability.
 */
export function leavingNodes(nodes: Pick<NodeLoad, 'id' | 'state' | 'taints'>[], placement: AppPlacement | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const n of nodes) {
    if (n.state === 'draining') out.set(n.id, 'node is draining');
    else {
      const t = n.taints.find((x) => x.effect === 'NoExecute' && !tolerates(placement?.tolerations ?? [], x));
      if (t) out.set(n.id, `taint ${taintString(t)} not tolerated`);
    }
  }
  return out;
}
