/**
 * The agent's reconcile step: a pure function from (what the control plane assigned, what this
 * node runs) to the actions that converge them. Level-triggered: it is called on every
 * assignment message and periodically, and calling it again with the same inputs while the
 * actions are in flight yields nothing new (instances being started are already "actual").
 */
import type { InstanceSpec } from '@shellwego/core';

/** The agent-side phase of an instance, as far as reconciling is concerned. */
export type ActualPhase = 'starting' | 'running' | 'crashed' | 'stopping' | 'stopped';

export interface ActualInstance {
  instanceId: string;
  /** The spec the instance is running (or will run next, when a replacement is under way). */
  spec: InstanceSpec;
  phase: ActualPhase;
}

export type ReplaceReason = 'restart' | 'release' | 'spec';

export type Action =
  | { type: 'start'; spec: InstanceSpec }
  | { type: 'stop'; instanceId: string }
  | { type: 'replace'; instanceId: string; spec: InstanceSpec; reason: ReplaceReason };

/** Fields of a spec that change what runs; any difference means "replace the process". */
function runtimeShape(s: InstanceSpec): string {
  const env = Object.keys(s.env ?? {})
    .sort()
    .map((k) => [k, s.env[k]]);
  // Volumes only when there are some: specs without them keep the shape they always had (no replacement on upgrade).
  const volumes = s.volumes?.length ? [s.volumes.map((v) => [v.id, v.path])] : [];
  return JSON.stringify([s.appId, s.processType, s.index, s.command, s.artifactDigest, s.port, s.limits?.memoryMb, s.limits?.cpus, s.limits?.pids, env, ...volumes]);
}

/** Why `running` must be replaced to become `wanted`, or null when it can be left alone. */
export function replaceReason(running: InstanceSpec, wanted: InstanceSpec): ReplaceReason | null {
  if (running.restartGeneration !== wanted.restartGeneration) return 'restart';
  if (running.releaseId !== wanted.releaseId) return 'release';
  if (runtimeShape(running) !== runtimeShape(wanted)) return 'spec';
  return null;
}

export function reconcile(desired: readonly InstanceSpec[], actual: readonly ActualInstance[]): Action[] {
  const actions: Action[] = [];
  const want = new Map<string, InstanceSpec>();
  // Duplicates in one message: the first entry wins, so the outcome does not depend on repeats.
  for (const d of desired) if (!want.has(d.instanceId)) want.set(d.instanceId, d);
  const have = new Map<string, ActualInstance>();
  for (const a of actual) have.set(a.instanceId, a);

  for (const [id, spec] of want) {
    const a = have.get(id);
    if (!a || a.phase === 'stopped') {
      actions.push({ type: 'start', spec });
      continue;
    }
    // Assigned again while a stop is under way: let it finish; the next pass starts it afresh.
    if (a.phase === 'stopping') continue;
    const reason = replaceReason(a.spec, spec);
    if (reason) actions.push({ type: 'replace', instanceId: id, spec, reason });
  }
  for (const [id, a] of have) {
    if (want.has(id) || a.phase === 'stopping' || a.phase === 'stopped') continue;
    actions.push({ type: 'stop', instanceId: id });
  }
  return actions;
}
