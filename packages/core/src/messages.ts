/**
 * Messages that cross the bus between the control plane, agents, builders and routers.
 * Subjects follow NATS conventions (dot-separated tokens, `*` one token, `>` the rest) so the
 * in-process bus and NATS JetStream carry the same traffic.
 */
import type { InstanceState, Stack } from './domain.ts';
import type { LogLineT } from './api.ts';

export const subjects = {
  /** Control plane → one agent: the full set of instances it should run (level-triggered). */
  assignments: (nodeId: string) => `agent.${nodeId}.assignments`,
  /** Agent → control plane: liveness and capacity. */
  heartbeat: 'agent.heartbeat',
  /** Agent → control plane: observed state of instances. */
  instanceStatus: 'instance.status',
  /** Agent → control plane: app output. */
  appLogs: (appId: string) => `logs.app.${appId}`,
  allAppLogs: 'logs.app.>',
  /** Control plane → builders (queue group: one builder takes each build). */
  buildRequested: 'build.requested',
  buildLog: (buildId: string) => `build.${buildId}.log`,
  buildResult: (buildId: string) => `build.${buildId}.result`,
  allBuildResults: 'build.*.result',
  /** Control plane → routers: the whole route table (small; replacing it whole keeps routers simple). */
  routes: 'router.routes',
  /** Router → control plane: ask for the current route table after (re)start. */
  routesRequest: 'router.routes.request',
  /** Control plane → subscribers (SSE): state changes, one subject per organization. */
  events: (orgId: string) => `events.${orgId}`,
} as const;

export interface InstanceLimits {
  memoryMb: number;
  cpus: number;
  pids: number;
}

/** What an agent needs to run one instance; everything is in the message so agents need no DB. */
export interface InstanceSpec {
  instanceId: string;
  appId: string;
  appName: string;
  organizationId: string;
  releaseId: string;
  releaseVersion: number;
  processType: string;
  index: number;
  /** Shell command line from the Procfile / detected start command. */
  command: string;
  env: Record<string, string>;
  /** Content address (sha256 hex) of the build artifact tarball. */
  artifactDigest: string;
  limits: InstanceLimits;
  /** Port the process must listen on (web); exposed as $PORT. */
  port: number;
  /** Bumped by `restart`: a different value than the running one means "replace the process". */
  restartGeneration: number;
}

export interface AssignmentsMessage {
  nodeId: string;
  /** Monotonic per control plane; agents ignore older generations. */
  generation: number;
  instances: InstanceSpec[];
}

export interface HeartbeatMessage {
  nodeId: string;
  name: string;
  isolation: string;
  capacity: { cpus: number; memoryMb: number };
  instances: number;
  at: string;
}

export interface InstanceStatusMessage {
  nodeId: string;
  instanceId: string;
  state: InstanceState;
  exitCode: number | null;
  signal: string | null;
  oomKilled: boolean;
  restarts: number;
  /** host:port the instance serves on, once known. */
  address: string | null;
  startedAt: string | null;
  at: string;
  /** Last output lines when the instance crashed, so `ps` can say why. */
  lastLog?: string[];
  restartGeneration: number;
}

export interface AppLogMessage {
  appId: string;
  lines: LogLineT[];
}

export interface BuildRequest {
  buildId: string;
  appId: string;
  appName: string;
  organizationId: string;
  /** sha256 hex of the uploaded source tarball in the blob store. */
  sourceDigest: string;
  /** Build-time environment (the app's config vars). */
  env: Record<string, string>;
  limits: InstanceLimits;
}

export interface BuildLogMessage {
  buildId: string;
  ts: string;
  line: string;
}

export interface BuildResultMessage {
  buildId: string;
  ok: boolean;
  stack: Stack | null;
  artifactDigest: string | null;
  processTypes: Record<string, string>;
  cacheHit: boolean | null;
  error: string | null;
  durationMs: number;
}

export interface RouteBackend {
  instanceId: string;
  /** host:port */
  address: string;
}

export interface RouteTableMessage {
  version: number;
  /** hostname (lowercase, no port) → ready web instances */
  routes: Record<string, { appId: string; appName: string; backends: RouteBackend[] }>;
}

/** Where the build artifact and source tarballs live: content-addressed, write-once. */
export interface BlobStore {
  /** Stores a file (moved or copied in) and returns its sha256 hex digest. */
  putFile(path: string): Promise<string>;
  /** Local path of a blob, fetching it first when the store is remote. */
  pathOf(digest: string): Promise<string>;
  has(digest: string): Promise<boolean>;
}
