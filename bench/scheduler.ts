/**
 * Scheduler throughput: place 10,000 instances (1,000 apps × 10 replicas) on 1,000 nodes in 5
 * zones with labels and a few taints, through the real `place()` (filters, scores, the full
 * per-node explanation), applying each decision to the loads as the deployer does. Reference,
 * same run: the simplest possible scheduler (first node with enough free memory) over the same
 * loads — what explainability and spreading cost.
 * Run: node --import tsx bench/scheduler.ts
 */
import { place } from '../packages/control-plane/src/controllers/scheduler.ts';
import type { NodeLoad } from '../packages/control-plane/src/controllers/scheduler.ts';
import { percentile, saveResult } from './lib.ts';

const NODES = Number(process.env.BENCH_NODES || 1000);
const APPS = Number(process.env.BENCH_APPS || 1000);
const REPLICAS = 10;
const MEMORY = 256;

function cluster(): NodeLoad[] {
  return Array.from({ length: NODES }, (_, i) => ({
    id: `nod_${String(i).padStart(5, '0')}`, name: `n${i}`, state: 'ready' as const, cpus: 16, memoryMb: 65_536,
    allocatedMb: 0, allocatedCpus: 0, labels: { zone: `z${i % 5}`, ...(i % 10 === 0 ? { disk: 'ssd' } : {}) },
    taints: i % 50 === 0 ? [{ key: 'gpu', value: 'true', effect: 'NoSchedule' as const }] : [], sameApp: 0,
  }));
}

/** Runs every placement through `decide`, updating loads like the deployer; returns per-decision ms. */
function run(decide: (nodes: NodeLoad[]) => string | null): { ms: number[]; placed: number; totalMs: number } {
  const nodes = cluster();
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const ms: number[] = [];
  let placed = 0;
  const t0 = performance.now();
  for (let a = 0; a < APPS; a++) {
    for (const n of nodes) n.sameApp = 0;
    for (let r = 0; r < REPLICAS; r++) {
      const s = performance.now();
      const id = decide(nodes);
      ms.push(performance.now() - s);
      if (!id) continue;
      const n = byId.get(id)!;
      n.allocatedMb += MEMORY;
      n.allocatedCpus += 0.5;
      n.sameApp += 1;
      placed++;
    }
  }
  return { ms, placed, totalMs: performance.now() - t0 };
}

const firstFit = run((nodes) => nodes.find((n) => n.memoryMb - n.allocatedMb >= MEMORY)?.id ?? null);
const real = run((nodes) => place(nodes, { memoryMb: MEMORY, cpus: 0.5 }).nodeId);

const rate = (r: { placed: number; totalMs: number }) => r.placed / (r.totalMs / 1000);
const result = {
  nodes: NODES, instances: APPS * REPLICAS,
  scheduler: { placed: real.placed, perSecond: rate(real), p50Ms: percentile(real.ms, 50), p99Ms: percentile(real.ms, 99) },
  referenceFirstFit: { placed: firstFit.placed, perSecond: rate(firstFit), p50Ms: percentile(firstFit.ms, 50), p99Ms: percentile(firstFit.ms, 99) },
};
console.log(`placing ${APPS * REPLICAS} instances on ${NODES} nodes (5 zones, labels, taints), one decision at a time`);
console.log(`  reference: first fit        ${Math.round(result.referenceFirstFit.perSecond).toLocaleString()} placements/s   p99 ${result.referenceFirstFit.p99Ms.toFixed(3)} ms`);
console.log(`  scheduler (filter + score)  ${Math.round(result.scheduler.perSecond).toLocaleString()} placements/s   p99 ${result.scheduler.p99Ms.toFixed(3)} ms   (${(result.scheduler.perSecond / result.referenceFirstFit.perSecond).toFixed(3)}x first fit)`);
console.log(`  placed ${real.placed} of ${APPS * REPLICAS}`);
await saveResult('scheduler', result);
