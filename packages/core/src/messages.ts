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
  // What a node publishes lives under `agent.<its id>.`: NATS permissions confine each node to
  // its own subjects, and the control plane checks the subject's id against the message's nodeId.
  /** Agent → control plane: liveness and capacity. */
  heartbeat: (nodeId: string) => `agent.${nodeId}.heartbeat`,
  allHeartbeats: 'agent.*.heartbeat',
  /**
   * Agent → control plane: observed state of instances, one status per change and every 10 s all
   * of them as one report (InstanceStatusReport): on one subject, so the two stay in order.
   */
  instanceStatus: (nodeId: string) => `agent.${nodeId}.status`,
  allInstanceStatus: 'agent.*.status',
  /** Agent → control plane: app output. */
  appLogs: (nodeId: string, appId: string) => `agent.${nodeId}.logs.${appId}`,
  allAppLogs: 'agent.*.logs.*',
  /** Control plane → builders (queue group: one builder takes each build). */
  buildRequested: 'build.requested',
  buildLog: (buildId: string) => `build.${buildId}.log`,
  buildResult: (buildId: string) => `build.${buildId}.result`,
  allBuildResults: 'build.*.result',
  /** Control plane → routers: the route table, whole or in chunks, and deltas between (core/src/route-sync.ts). */
  routes: 'router.routes',
  /** Router → control plane: per-instance request and error counts (canary analysis), as its node (router id = node id). */
  routerStats: (nodeId: string) => `agent.${nodeId}.router.stats`,
  allRouterStats: 'agent.*.router.stats',
  /** Router → control plane: ask for the current route table after (re)start. */
  routesRequest: 'router.routes.request',
  /** Control plane → routers: every certificate (with its key) routers terminate TLS with, whole or in chunks of one version. */
  certificates: 'router.certificates',
  /** Router → control plane: ask for the certificates after (re)start. */
  certificatesRequest: 'router.certificates.request',
  /** Control plane → routers: pending ACME HTTP-01 tokens and their key authorizations, whole. */
  acmeChallenges: 'router.acme.challenges',
  /** A control plane that does not lead → the leader: reconcile this app (or everything: appId null) now. */
  reconcileRequest: 'controlplane.reconcile',
  /** Control plane → subscribers (SSE): state changes, one subject per organization. */
  events: (orgId: string) => `events.${orgId}`,
  // ---------- one-off processes ----------
  /** Control plane → one agent: start a one-off process (`shellwego run`). */
  oneOffStart: (nodeId: string) => `agent.${nodeId}.oneoff.start`,
  /** Control plane → agent: input, resize, signal, keepalive, kill for one session. */
  oneOffInput: (nodeId: string, sessionId: string) => `agent.${nodeId}.oneoff.${sessionId}.in`,
  /** Agent → control plane: output chunks, then exactly one exit (or error). */
  oneOffOutput: (nodeId: string, sessionId: string) => `agent.${nodeId}.oneoff.${sessionId}.out`,
  // ---------- volumes ----------
  /** Control plane → one agent: a volume was destroyed, remove its directory (durable: the only thing that ever removes one). */
  volumeDelete: (nodeId: string) => `agent.${nodeId}.volumes.delete`,
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
  /** When the instance may get traffic; absent = TCP connect on $PORT for web, at once for others. */
  readiness?: Readiness;
  /** Time between SIGTERM and SIGKILL when the instance is stopped; absent = the agent's default. */
  stopTimeoutMs?: number;
  /** Volumes of the process type that live on this node, bind-mounted read-write; absent = none. */
  volumes?: VolumeMount[];
}

/** A volume as an agent mounts it: `<dataDir>/volumes/<id>` at `path` inside the sandbox. */
export interface VolumeMount {
  id: string;
  name: string;
  path: string;
}

/** Control plane → agent: remove a destroyed volume's directory. */
export interface VolumeDeleteMessage {
  nodeId: string;
  volumeId: string;
  /** For the agent's log only. */
  name: string;
}

/** An HTTP readiness check, in milliseconds (the API's HealthCheck, converted). */
export interface Readiness {
  type: 'http';
  path: string;
  intervalMs: number;
  timeoutMs: number;
  healthyThreshold: number;
  unhealthyThreshold: number;
}

export interface AssignmentsMessage {
  nodeId: string;
  /** Monotonic per control plane; agents ignore older generations. */
  generation: number;
  instances: InstanceSpec[];
  /** Set when one generation is too large for one message: this is part `index` of `count` (route-sync.ts). */
  chunk?: { index: number; count: number };
}

export interface HeartbeatMessage {
  nodeId: string;
  name: string;
  isolation: string;
  /** diskMb: what the agent's config offers (absent = not reported). */
  capacity: { cpus: number; memoryMb: number; diskMb?: number };
  /** Labels from the agent's config (e.g. zone=a); an operator's labels on the node win over them. */
  labels?: Record<string, string>;
  instances: number;
  at: string;
  /** host:port where this node's router takes requests for its instances from other nodes' routers (absent = not offered). */
  clusterEndpoint?: string;
  /**
   * The assignment generation the agent acts on (null: none yet, e.g. just restarted). The
   * control plane resends a node's set only when the node is behind, not on every pass.
   */
  assignmentsGeneration?: number | null;
  /** The route table version this node's router holds (null: none yet; absent: the node runs no router). */
  routesVersion?: number | null;
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

/**
 * Every instance's status at once (the agent's periodic, level-triggered report). One message
 * per node instead of one per instance: at 30,000 instances the single messages were 3,000 a
 * second for a control plane that has to read a row for each. A report too large for one
 * message goes as several; each stands alone.
 */
export interface InstanceStatusReport {
  nodeId: string;
  statuses: InstanceStatusMessage[];
}

/** A message on `instanceStatus`: one status, or a report of all of them. */
export function isStatusReport(m: InstanceStatusMessage | InstanceStatusReport): m is InstanceStatusReport {
  return Array.isArray((m as InstanceStatusReport | null)?.statuses);
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
  /**
   * OCI image builds: pull this image instead of building `sourceDigest`. Credentials travel
   * only inside the request (sealed in the store), like the config values in `env`.
   */
  image?: { reference: string; credentials: { username: string; password: string } | null };
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
  /** Relative share of the route's traffic (weighted round-robin); absent = 1. 0 = no new requests. */
  weight?: number;
  /** The node the instance runs on: another node's instance is reached through that node's router (`nodes`). */
  nodeId?: string;
}

/** Router → control plane, every few seconds: requests and failures per instance since the last report. */
export interface RouterStatsMessage {
  routerId: string;
  at: string;
  /** instanceId → counts since the previous report (failed = 5xx answers + backend failures) */
  instances: Record<string, { requests: number; failed: number }>;
}

export interface RouteTableMessage {
  version: number;
  /** hostname (lowercase, no port) → ready web instances */
  routes: Record<string, { appId: string; appName: string; backends: RouteBackend[] } & RouteTlsOptions>;
  /**
   * Routing across nodes: nodeId → the host:port of that node's router cluster listener. A
   * router reaches its own node's instances directly and another node's through that listener
   * (instance bridges are not routed between hosts); a node absent here is reached directly.
   */
  nodes?: Record<string, string>;
  /** Shared secret a router presents to another node's cluster listener (only routers may pick instances there). */
  clusterToken?: string;
  /** Part `index` of `count` of a full table too large for one message (route-sync.ts); absent = the whole table. */
  chunk?: { index: number; count: number };
  /** A change since version `base`: `routes` holds added/changed hosts, `removed` the hosts gone; absent = a full table. */
  delta?: { base: number; removed: string[] };
}

/** Per-host TLS behaviour of a route (custom domains); absent = off. */
export interface RouteTlsOptions {
  /** Answer plain-HTTP requests with a 308 to the same URL on HTTPS. */
  redirectHttps?: boolean;
  /** Send `Strict-Transport-Security: max-age=N` on HTTPS responses (N > 0). */
  hstsMaxAge?: number;
}

/** One certificate a router can serve: chain and key as PEM, for the names it covers. */
export interface RouterCertificate {
  /** DNS names (SANs) it is selected for; `*.example.com` covers one label. */
  hostnames: string[];
  certPem: string;
  keyPem: string;
  notAfter: string;
}

export interface CertificatesMessage {
  version: number;
  certificates: RouterCertificate[];
  /** Part `index` of `count` when the certificates are too many for one message (route-sync.ts); absent = all. */
  chunk?: { index: number; count: number };
}

export interface AcmeChallengesMessage {
  /** HTTP-01 token → key authorization (the exact body to answer with). */
  tokens: Record<string, string>;
}

// ---------- one-off processes ----------

/**
 * Start a one-off process in the same sandbox as instances, with the release's artifact, env and
 * limits. `spec.instanceId` is the session id; `spec.command` the shell command line to run.
 */
export interface OneOffStartMessage {
  sessionId: string;
  spec: InstanceSpec;
  tty: boolean;
  cols: number;
  rows: number;
  /** The agent kills the process when no input/keepalive arrived for this long. */
  idleTimeoutMs: number;
}

/** Control plane → agent. `data` is base64; `eof` closes stdin (non-TTY). */
export type OneOffInputMessage =
  | { type: 'data'; data: string }
  | { type: 'eof' }
  | { type: 'resize'; cols: number; rows: number }
  | { type: 'signal'; signal: string }
  | { type: 'keepalive' }
  | { type: 'kill' };

/** Agent → control plane. `data` is base64; `stderr` only without a TTY (a TTY merges both). */
export type OneOffOutputMessage =
  | { type: 'started' }
  | { type: 'output'; stream: 'stdout' | 'stderr'; data: string }
  | { type: 'exit'; exitCode: number | null; signal: string | null }
  | { type: 'error'; message: string };

/** Where the build artifact and source tarballs live: content-addressed, write-once. */
export interface BlobStore {
  /** Stores a file (moved or copied in) and returns its sha256 hex digest. */
  putFile(path: string): Promise<string>;
  /** Local path of a blob, fetching it first when the store is remote. */
  pathOf(digest: string): Promise<string>;
  has(digest: string): Promise<boolean>;
}

/** Follower → leader: a write through this control plane's API needs a reconcile pass. */
export interface ReconcileRequestMessage {
  organizationId: string | null;
  appId: string | null;
}
