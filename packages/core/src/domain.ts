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

export const INSTANCE_STATES = ['pending', 'starting', 'running', 'crashed', 'stopping', 'stopped'] as const;
export type InstanceState = (typeof INSTANCE_STATES)[number];

/**
 * Instance states are observations the agent reports. A report may skip a state the bus never
 * delivered (pending → running), so the table allows every forward step a real process can take.
 */
export const instanceMachine = new StateMachine<InstanceState>('instance', {
  pending: ['starting', 'running', 'crashed', 'stopping', 'stopped'],
  starting: ['running', 'crashed', 'stopping', 'stopped'],
  running: ['starting', 'crashed', 'stopping', 'stopped'],
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

export const NODE_STATES = ['ready', 'down'] as const;
export type NodeState = (typeof NODE_STATES)[number];
export const nodeMachine = new StateMachine<NodeState>('node', {
  ready: ['down'],
  down: ['ready'],
});

export const STACKS = ['node', 'python', 'static', 'procfile'] as const;
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
