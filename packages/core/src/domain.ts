import { StateMachine } from './state-machine.ts';

export const ROLES = ['viewer', 'developer', 'admin', 'owner'] as const;
export type Role = (typeof ROLES)[number];

/** Roles are ordered: each one can do everything the ones before it can. */
export function roleAtLeast(role: Role, min: Role): boolean {
  return ROLES.indexOf(role) >= ROLES.indexOf(min);
}

/**
 * Token scopes. A token can do what its scopes allow AND its user's role allows: scopes narrow
 * a token (a CI token that can only deploy), they never widen a role.
 */
export const SCOPES = ['apps:read', 'apps:write', 'apps:deploy', 'orgs:read', 'orgs:admin', 'tokens:manage', 'platform:admin'] as const;
export type Scope = (typeof SCOPES)[number] | '*';

/** `running` means ready (its readiness check passes); `unhealthy` means it was ready and its check now fails. */
export const INSTANCE_STATES = ['pending', 'starting', 'running', 'unhealthy', 'crashed', 'stopping', 'stopped'] as const;
export type InstanceState = (typeof INSTANCE_STATES)[number];

/**
 * Instance states are observations the agent reports. A report may skip a state the bus never
 * delivered (pending → running), so the table allows every forward step a real process can take.
 */
export const instanceMachine = new StateMachine<InstanceState>('instance', {
  pending: ['starting', 'running', 'crashed', 'stopping', 'stopped'],
  starting: ['running', 'crashed', 'stopping', 'stopped'],
  running: ['starting', 'unhealthy', 'crashed', 'stopping', 'stopped'],
  unhealthy: ['running', 'starting', 'crashed', 'stopping', 'stopped'],
  crashed: ['starting', 'running', 'stopping', 'stopped'],
  stopping: ['stopped', 'crashed'],
  stopped: [],
});

export const BUILD_STATES = ['pending', 'building', 'succeeded', 'failed'] as const;
export type BuildState = (typeof BUILD_STATES)[number];
export const buildMachine = new StateMachine<BuildState>('build', {
  pending: ['building', 'failed'],
  building: ['succeeded', 'failed'],
  succeeded: [],
  failed: [],
});

export const DEPLOY_STRATEGIES = ['rolling', 'blue-green', 'canary', 'recreate'] as const;
export type DeployStrategy = (typeof DEPLOY_STRATEGIES)[number];

/**
 * A deployment moves an app from one release to the next. `pending` while the release phase
 * runs; `in_progress` while instances roll; then succeeded, or rolling_back → rolled_back when
 * the new release fails its health checks or canary analysis; `failed` when the release phase
 * fails (nothing was shifted); `superseded` when a newer release took over mid-way.
 */
export const DEPLOYMENT_STATES = ['pending', 'in_progress', 'rolling_back', 'succeeded', 'rolled_back', 'failed', 'superseded'] as const;
export type DeploymentState = (typeof DEPLOYMENT_STATES)[number];
export const deploymentMachine = new StateMachine<DeploymentState>('deployment', {
  pending: ['in_progress', 'failed', 'superseded'],
  in_progress: ['succeeded', 'rolling_back', 'superseded'],
  rolling_back: ['rolled_back', 'superseded'],
  succeeded: [],
  rolled_back: [],
  failed: [],
  superseded: [],
});
export const ACTIVE_DEPLOYMENT_STATES: readonly DeploymentState[] = ['pending', 'in_progress', 'rolling_back'];

/**
 * A node's state as operators see it. `down` comes from missed heartbeats (liveness); `cordoned`
 * (no new instances) and `draining` (no new instances, and its instances move away) are operator
 * states stored apart from liveness, so a heartbeat never undoes them and a cordoned node that
 * goes down and comes back is still cordoned. Only `ready` nodes accept new instances.
 */
export const NODE_STATES = ['ready', 'cordoned', 'draining', 'down'] as const;
export type NodeState = (typeof NODE_STATES)[number];
export const nodeMachine = new StateMachine<NodeState>('node', {
  ready: ['cordoned', 'draining', 'down'],
  cordoned: ['ready', 'draining', 'down'],
  draining: ['ready', 'cordoned', 'down'],
  down: ['ready'],
});
/** What an operator set: null = schedulable. */
export type NodeOperatorState = 'cordoned' | 'draining' | null;
/** The state shown for a node: liveness first (a dead node is down whatever the operator said). */
export function nodeState(liveness: NodeState, operatorState: NodeOperatorState): NodeState {
  return liveness === 'down' ? 'down' : operatorState ?? 'ready';
}

export const TAINT_EFFECTS = ['NoSchedule', 'NoExecute'] as const;
export type TaintEffect = (typeof TAINT_EFFECTS)[number];
/** `key=value:Effect`. NoSchedule keeps new instances off; NoExecute also moves existing ones away. */
export interface NodeTaint { key: string; value: string; effect: TaintEffect }
/** An app tolerates a taint with the same key and effect, and the same value (or any value when omitted). */
export interface Toleration { key: string; value?: string; effect: TaintEffect }
/** Where an app's instances may run: labels every node must have, taints it tolerates. */
export interface AppPlacement { requiredLabels: Record<string, string>; tolerations: Toleration[] }
export const taintString = (t: NodeTaint): string => `${t.key}=${t.value}:${t.effect}`;
export const tolerates = (tolerations: readonly Toleration[], t: NodeTaint): boolean =>
  tolerations.some((x) => x.key === t.key && x.effect === t.effect && (x.value === undefined || x.value === t.value));

/** Placement policy for replicas of different apps: spread load evenly, or pack nodes tight. */
export const SCHEDULING_POLICIES = ['spread', 'pack'] as const;
export type SchedulingPolicy = (typeof SCHEDULING_POLICIES)[number];

export const STACKS = ['node', 'python', 'static', 'procfile', 'image'] as const;
export type Stack = (typeof STACKS)[number];

/** Resource plans: the limits every instance of an app runs under. */
export interface Plan {
  name: string;
  memoryMb: number;
  cpus: number;
  pids: number;
}

export const PLANS: Record<string, Plan> = {
  free: { name: 'free', memoryMb: 256, cpus: 0.5, pids: 128 },
  standard: { name: 'standard', memoryMb: 512, cpus: 1, pids: 256 },
  performance: { name: 'performance', memoryMb: 1024, cpus: 2, pids: 512 },
};
export const DEFAULT_PLAN = 'standard';
