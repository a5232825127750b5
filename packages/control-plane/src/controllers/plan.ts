import type { InstanceRow } from '@shellwego/store';

/**
 * What an app's instances should become, computed from desired state (current release +
 * formation) and actual state (instance rows). Pure: the deployer applies the plan in one
 * transaction, and a crash before or after loses nothing because the next pass recomputes it.
 */
export interface AppPlan {
  /** New instances to create for the current release. */
  create: { type: string; index: number }[];
  /** Instances to stop (desired → stopped). */
  stop: string[];
  /** Rows of instances that are stopped for good and can be forgotten. */
  forget: string[];
}

export interface PlanInput {
  currentReleaseId: string | null;
  processTypes: Record<string, string>;
  formation: { type: string; quantity: number }[];
  instances: InstanceRow[];
}

const key = (type: string, index: number) => `${type}.${index}`;

export function planApp(input: PlanInput): AppPlan {
  const wanted = new Set<string>();
  if (input.currentReleaseId) {
    for (const f of input.formation) {
      if (!input.processTypes[f.type]) continue;
      for (let i = 1; i <= f.quantity; i++) wanted.add(key(f.type, i));
    }
  }
  const live = input.instances.filter((i) => i.desired === 'running');
  const current = new Map<string, InstanceRow>();
  const plan: AppPlan = { create: [], stop: [], forget: [] };

  for (const inst of live) {
    if (inst.releaseId !== input.currentReleaseId) continue;
    const k = key(inst.processType, inst.index);
    if (!wanted.has(k) || current.has(k)) plan.stop.push(inst.id);
    else current.set(k, inst);
  }
  for (const k of wanted) {
    if (current.has(k)) continue;
    const dot = k.lastIndexOf('.');
    plan.create.push({ type: k.slice(0, dot), index: Number(k.slice(dot + 1)) });
  }
  for (const inst of live) {
    if (inst.releaseId === input.currentReleaseId) continue;
    const k = key(inst.processType, inst.index);
    // Surge: an old-release instance keeps serving until its replacement runs.
    const replacement = current.get(k);
    const replaced = !wanted.has(k) || (replacement !== undefined && replacement.state === 'running');
    if (replaced) plan.stop.push(inst.id);
  }
  for (const inst of input.instances) {
    if (inst.desired !== 'stopped') continue;
    if (inst.state === 'stopped' || inst.nodeId === null || inst.state === 'pending') plan.forget.push(inst.id);
  }
  return plan;
}
