export { createAgent } from './agent.ts';
export type { Agent, AgentOptions } from './agent.ts';
export type { InstanceInfo, BackoffOptions } from './instance-runner.ts';
export { reconcile, replaceReason } from './reconcile.ts';
export type { Action, ActualInstance, ActualPhase, ReplaceReason } from './reconcile.ts';
export { appUid, APP_UID_BASE, APP_UID_RANGE } from './identity.ts';
