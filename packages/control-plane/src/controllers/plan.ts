import type { DeploySettingsT, DeploymentState, DeployStrategy, RouteBackend } from '@shellwego/core';
import type { InstanceRow } from '@shellwego/store';

/**
 * What an app's instances should become, computed from desired state (target release,
 * formation, the active deployment and its strategy) and actual state (instance rows). Pure: the
 * deployer applies the plan in one transaction, and a crash before or after loses nothing
 * because the next pass recomputes it from the database — which is also how a deployment
 * survives a control-plane restart.
 */
export interface AppPlan {
  /** New instances of the target release. */
  create: { type: string; index: number }[];
  /** Ready web instances to take out of the router now and stop once the drain time has passed. */
  drain: string[];
  /** Instances to stop now (desired → stopped): not serving, or drained. */
  stop: string[];
  /** Rows of instances that are stopped for good and can be forgotten. */
  forget: string[];
  progress: RolloutProgress;
}

export interface RolloutProgress {
  /** Instances the formation wants, all types. */
  wanted: number;
  /** Ready (or, for non-web, running) live instances of the target release. */
  ready: number;
  /** Live instances of other releases. */
  old: number;
  /** Every type has its full count of ready target instances and no old instance is live. */
  complete: boolean;
}

/** The part of an active deployment the planner needs. */
export interface PlanDeployment {
  strategy: DeployStrategy;
  state: DeploymentState;
  /** Canary step index; steps.length = promoted. */
  step: number;
  settings: DeploySettingsT;
}

export interface PlanInput {
  now: number;
  /** The release the app should end on; null = no release, nothing runs. */
  targetReleaseId: string | null;
  processTypes: Record<string, string>;
  formation: { type: string; quantity: number }[];
  instances: InstanceRow[];
  /** The app's active deployment, or null in steady state (scaling, crash replacement). */
  deployment: PlanDeployment | null;
  /** The app's deploy settings (drain time and rolling limits in steady state). */
  settings: DeploySettingsT;
  /** Nodes the app's instances must leave (draining, NoExecute taint): replaced like marked instances. */
  leavingNodes?: ReadonlySet<string>;
  /**
   * Process type → the node its volumes live on. Its instances belong there: one on that node is
   * never replaced for leaving it (it cannot move; it stays, saying why), one elsewhere is.
   */
  pinned?: ReadonlyMap<string, string>;
}

/**
 * `restart` (and a plan change) marks instances for replacement with a negative
 * `restartGeneration` (-(g + 1), so the agent still sees g): the planner replaces them like
 * instances of an older release — new instance first, the old one drains once it is ready — so a
 * restart never drops a request.
 */
export const replaceRequested = (restartGeneration: number): number => (restartGeneration < 0 ? restartGeneration : -(restartGeneration + 1));
/** The generation the agent knows, whether or not a replacement was requested. */
export const agentGeneration = (restartGeneration: number): number => (restartGeneration < 0 ? -restartGeneration - 1 : restartGeneration);
export const isCurrent = (i: InstanceRow, target: string | null): boolean => i.releaseId === target && i.restartGeneration >= 0;

/** Serving: asked to run and not on its way out. */
export const isLive = (i: InstanceRow): boolean => i.desired === 'running' && i.stopAfter === null;
/** Ready for traffic: the agent's readiness check passed (non-web: the process is up). */
export const isReady = (i: InstanceRow): boolean => i.state === 'running';

interface Limits { batch: number; surge: number; unavailable: number }

/** How one process type is replaced: strategies other than rolling/recreate only shape web traffic. */
function modeFor(type: string, d: PlanDeployment | null, appSettings: DeploySettingsT): { kind: 'rolling' | 'recreate' | 'blue-green' | 'canary'; limits: Limits } {
  const s = d?.settings ?? appSettings;
  const rolling = (limits?: Limits) => ({ kind: 'rolling' as const, limits: limits ?? { batch: s?.batchSize ?? 1, surge: s?.maxSurge ?? 1, unavailable: s?.maxUnavailable ?? 0 } });
  // Recovery (rolling back) brings everything up at once: nothing to protect. Without a
  // deployment (scaling, restarts) the app's rolling limits apply to replacements; new slots that
  // replace nothing start at once anyway.
  const all = { batch: Number.MAX_SAFE_INTEGER, surge: Number.MAX_SAFE_INTEGER, unavailable: 0 };
  if (!d) return rolling();
  if (d.state === 'rolling_back') return rolling(all);
  if (d.state === 'pending') return rolling(all); // release phase: the target is still the old release
  if (d.strategy === 'recreate') return { kind: 'recreate', limits: all };
  if (type !== 'web') return rolling();
  if (d.strategy === 'blue-green') return { kind: 'blue-green', limits: all };
  if (d.strategy === 'canary') return d.step >= d.settings.canarySteps.length ? rolling(all) : { kind: 'canary', limits: all };
  return rolling();
}

/** How many canary instances a step runs: its share of the formation, at least one. */
export function canaryCount(wanted: number, percent: number): number {
  return Math.min(wanted, Math.max(1, Math.ceil((wanted * percent) / 100)));
}

const byIndexDesc = (a: InstanceRow, b: InstanceRow) => b.index - a.index || b.createdAt.localeCompare(a.createdAt);

export function planApp(input: PlanInput): AppPlan {
  const { now, targetReleaseId: target, deployment } = input;
  const plan: AppPlan = { create: [], drain: [], stop: [], forget: [], progress: { wanted: 0, ready: 0, old: 0, complete: true } };
  const drainMs = (deployment?.settings ?? input.settings).drainSeconds * 1000;
  const retire = (i: InstanceRow) => {
    // Only a web instance the router may be sending requests to needs to drain first.
    if (i.processType === 'web' && isReady(i) && drainMs > 0) plan.drain.push(i.id);
    else plan.stop.push(i.id);
  };

  const wanted = new Map<string, number>();
  if (target) for (const f of input.formation) if (input.processTypes[f.type]) wanted.set(f.type, f.quantity);
  const types = new Set<string>([...wanted.keys(), ...input.instances.filter(isLive).map((i) => i.processType)]);

  for (const type of [...types].sort()) {
    const W = wanted.get(type) ?? 0;
    const live = input.instances.filter((i) => isLive(i) && i.processType === type);
    const draining = input.instances.filter((i) => i.desired === 'running' && i.stopAfter !== null && i.processType === type);
    const home = input.pinned?.get(type);
    const current = (i: InstanceRow) => isCurrent(i, target) &&
      (home !== undefined ? i.nodeId === null || i.nodeId === home : !(i.nodeId !== null && input.leavingNodes?.has(i.nodeId)));
    const mine = live.filter(current);
    let old = live.filter((i) => !current(i));

    // Target instances: one per index 1..W; duplicates and indexes past W go.
    const kept = new Map<number, InstanceRow>();
    for (const i of [...mine].sort((a, b) => Number(isReady(b)) - Number(isReady(a)) || a.createdAt.localeCompare(b.createdAt))) {
      if (i.index >= 1 && i.index <= W && !kept.has(i.index)) kept.set(i.index, i);
      else retire(i);
    }
    const newReady = [...kept.values()].filter(isReady).length;
    const { kind, limits } = modeFor(type, deployment, input.settings);
    let target_ = W; // how many target instances this pass aims for
    let stopOld: InstanceRow[] = [];

    if (kind === 'recreate') {
      stopOld = old;
      // Nothing new starts while an old instance still runs (drain included).
      if (old.length > 0 || draining.some((i) => i.releaseId !== target)) target_ = 0;
    } else if (kind === 'blue-green') {
      const switched = newReady >= W || old.filter(isReady).length === 0;
      if (switched) stopOld = old;
    } else if (kind === 'canary') {
      const pct = deployment!.settings.canarySteps[deployment!.step];
      target_ = canaryCount(W, pct);
      // Old instances beyond the formation (a scale-down during the canary) still go.
      stopOld = [...old].sort(byIndexDesc).slice(0, Math.max(0, old.length - W));
    } else {
      // Rolling: stop first (not-ready old instances cost no availability), then create.
      const notReady = old.filter((i) => !isReady(i));
      const readyOld = old.filter(isReady).sort(byIndexDesc);
      const minAvailable = Math.max(0, W - limits.unavailable);
      const canStop = Math.max(0, readyOld.length + newReady - minAvailable);
      stopOld = [...notReady, ...readyOld.slice(0, canStop)];
    }
    for (const i of stopOld) retire(i);
    const stopped = new Set(stopOld.map((i) => i.id));
    old = old.filter((i) => !stopped.has(i.id));

    // Create the missing target instances, within the strategy's limits.
    const missing = Math.max(0, target_ - kept.size);
    let n = missing;
    if (kind === 'rolling' && old.length > 0) {
      const room = W + limits.surge - (old.length + kept.size);
      const batchRoom = limits.batch - (kept.size - newReady);
      const free = W - old.length - kept.size; // slots that replace nothing: no reason to wait
      n = Math.min(missing, Math.max(free, Math.min(room, batchRoom)));
    }
    for (let index = 1; n > 0 && index <= W; index++) {
      if (kept.has(index)) continue;
      plan.create.push({ type, index });
      n--;
    }

    plan.progress.wanted += W;
    plan.progress.ready += newReady;
    plan.progress.old += old.length;
    if (newReady < W || old.length > 0) plan.progress.complete = false;
  }

  for (const i of input.instances) {
    if (i.desired === 'running' && i.stopAfter !== null && Date.parse(i.stopAfter) <= now) plan.stop.push(i.id);
    if (i.desired !== 'stopped') continue;
    if (i.state === 'stopped' || i.nodeId === null || i.state === 'pending') plan.forget.push(i.id);
  }
  return plan;
}

/**
 * The web backends the router gets for an app: ready, live instances; blue-green sends traffic to
 * one colour only, canary splits it by weight so the new release gets its step's share whatever
 * the instance counts are.
 */
export function routeBackends(input: { targetReleaseId: string | null; instances: InstanceRow[]; deployment: PlanDeployment | null }): RouteBackend[] {
  const web = input.instances.filter((i) => i.processType === 'web' && isLive(i) && isReady(i) && i.address !== null);
  const d = input.deployment;
  const fresh = web.filter((i) => i.releaseId === input.targetReleaseId);
  const old = web.filter((i) => i.releaseId !== input.targetReleaseId);
  const plain = (list: InstanceRow[]) => list.map((i) => ({ instanceId: i.id, address: i.address! }));
  if (d?.state === 'in_progress' && d.strategy === 'blue-green' && old.length > 0) {
    // (`fresh`/`old` here are by release: a restart marker does not change who gets traffic.)
    // Until every green instance is ready, blue keeps all the traffic; then all of it moves at once.
    const wantedGreen = input.instances.filter((i) => i.processType === 'web' && isLive(i) && i.releaseId === input.targetReleaseId).length;
    return fresh.length > 0 && fresh.length >= wantedGreen ? plain(fresh) : plain(old);
  }
  if (d?.state === 'in_progress' && d.strategy === 'canary' && d.step < d.settings.canarySteps.length && old.length > 0 && fresh.length > 0) {
    const pct = d.settings.canarySteps[d.step];
    // Per-backend weights so that the totals are pct : (100 - pct).
    return [
      ...fresh.map((i) => ({ instanceId: i.id, address: i.address!, weight: pct * old.length })),
      ...old.map((i) => ({ instanceId: i.id, address: i.address!, weight: (100 - pct) * fresh.length })),
    ];
  }
  return plain(web);
}
