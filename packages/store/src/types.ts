/**
 * The store's public contract: repositories per aggregate. The control plane codes against
 * these interfaces only; SQLite (embedded) and PostgreSQL (multi-node) implement them with the
 * same Kysely queries. Every method that touches tenant data takes the organization id, so a
 * query that forgets the tenant does not compile.
 */
import type { AppPlacement, BuildState, DeploySettingsT, DeploymentState, DeployStrategy, HealthCheckT, InstanceState, NodeOperatorState, NodeState, NodeTaint, Role, Stack } from '@shellwego/core';

export interface UserRow { id: string; email: string; passwordHash: string; platformAdmin: boolean; createdAt: string }
export interface OrganizationRow { id: string; name: string; createdAt: string }
export interface MembershipRow { id: string; organizationId: string; userId: string; email: string; role: Role; createdAt: string }
export interface TokenRow {
  id: string; userId: string; organizationId: string; name: string; tokenHash: string; scopes: string[];
  kind: 'session' | 'api'; createdAt: string; expiresAt: string | null; lastUsedAt: string | null;
}
export interface AppRow {
  id: string; organizationId: string; name: string; plan: string; currentReleaseId: string | null;
  restartGeneration: number; createdAt: string; updatedAt: string;
}
export interface FormationRow { appId: string; type: string; quantity: number; command: string | null; healthcheck: HealthCheckT | null; updatedAt: string }
export interface BuildRow {
  id: string; appId: string; organizationId: string; state: BuildState; stack: Stack | null; sourceDigest: string;
  artifactDigest: string | null; processTypes: Record<string, string>; cacheHit: boolean | null; error: string | null;
  releaseId: string | null; createdBy: string | null; createdAt: string; finishedAt: string | null;
}
export interface ReleaseRow {
  id: string; appId: string; organizationId: string; version: number; buildId: string; description: string;
  processTypes: Record<string, string>; artifactDigest: string;
  /** Sealed (encrypted) JSON of the config snapshot; the store never sees plaintext values. */
  configSealed: string; configKeys: string[]; createdBy: string | null; createdAt: string;
}
export interface InstanceRow {
  id: string; appId: string; organizationId: string; releaseId: string; releaseVersion: number; processType: string;
  index: number; nodeId: string | null; desired: 'running' | 'stopped'; state: InstanceState; exitCode: number | null;
  signal: string | null; oomKilled: boolean; restarts: number; address: string | null; startedAt: string | null;
  restartGeneration: number; lastLog: string[]; createdAt: string; updatedAt: string;
  /** Set while draining out of the router: the instance is stopped at this time. */
  stopAfter: string | null;
  /** The scheduler's last decision for this instance, explained (where and why, or why pending). */
  placement: string | null;
}
export interface EventRow {
  id: string; organizationId: string; appId: string | null; type: string; message: string;
  data: Record<string, unknown>; createdAt: string;
}
export interface NodeRow {
  /** Liveness from heartbeats: 'ready' or 'down' (see `nodeState()` for what operators see). */
  id: string; name: string; state: NodeState; isolation: string; cpus: number; memoryMb: number;
  lastHeartbeatAt: string | null; createdAt: string;
  /** Scheduling (migration 0007): heartbeats write diskMb and agentLabels, operators the rest. */
  diskMb: number | null; agentLabels: Record<string, string>; labels: Record<string, string>; taints: NodeTaint[];
  operatorState: NodeOperatorState;
  /** host:port of the node's router cluster listener, from its heartbeats (migration 0010); null/absent = none. */
  clusterEndpoint?: string | null;
}
/** What a heartbeat writes; operator fields (labels, taints, operatorState) are left as they are. */
export type NodeHeartbeatRow = Omit<NodeRow, 'createdAt' | 'diskMb' | 'agentLabels' | 'labels' | 'taints' | 'operatorState'> & {
  diskMb?: number | null; agentLabels?: Record<string, string>;
};

/** An organization's data key, wrapped by the master key `keyId` of key provider `provider`. */
export interface OrganizationKeyRow { organizationId: string; provider: string; keyId: string; wrappedKey: string; createdAt: string }

export interface UsersRepo {
  create(row: Omit<UserRow, 'createdAt'>): Promise<UserRow>;
  byId(id: string): Promise<UserRow | undefined>;
  byEmail(email: string): Promise<UserRow | undefined>;
  count(): Promise<number>;
  setPassword(id: string, passwordHash: string): Promise<void>;
}

export interface OrganizationsRepo {
  create(row: Omit<OrganizationRow, 'createdAt'>): Promise<OrganizationRow>;
  byId(id: string): Promise<OrganizationRow | undefined>;
  byName(name: string): Promise<OrganizationRow | undefined>;
  /** Organizations the user is a member of, with the user's role, oldest first. */
  listForUser(userId: string): Promise<(OrganizationRow & { role: Role })[]>;
}

export interface MembershipsRepo {
  add(row: { id: string; organizationId: string; userId: string; role: Role }): Promise<MembershipRow>;
  get(organizationId: string, userId: string): Promise<MembershipRow | undefined>;
  list(organizationId: string): Promise<MembershipRow[]>;
  updateRole(organizationId: string, userId: string, role: Role): Promise<MembershipRow | undefined>;
  remove(organizationId: string, userId: string): Promise<boolean>;
  countOwners(organizationId: string): Promise<number>;
}

export interface TokensRepo {
  create(row: Omit<TokenRow, 'createdAt' | 'lastUsedAt'>): Promise<TokenRow>;
  byHash(tokenHash: string): Promise<TokenRow | undefined>;
  /** API tokens (not sessions) of one user in one organization. */
  listForUser(organizationId: string, userId: string): Promise<TokenRow[]>;
  delete(organizationId: string, userId: string, id: string): Promise<boolean>;
  touch(id: string, at: string): Promise<void>;
}

export interface AppsRepo {
  create(row: Omit<AppRow, 'createdAt' | 'updatedAt' | 'currentReleaseId' | 'restartGeneration'>): Promise<AppRow>;
  /** `nameOrId` matches either the app's name or its id, within the organization only. */
  get(organizationId: string, nameOrId: string): Promise<AppRow | undefined>;
  /** Global lookup by name: names are unique platform-wide because they are hostnames. */
  nameTaken(name: string): Promise<boolean>;
  /** By name (byte order); `after` a name and at most `limit` of them when given: a page. */
  list(organizationId: string, page?: { after?: string; limit?: number }): Promise<AppRow[]>;
  /** Every app of every organization: controllers only (routes, reconciler). */
  listAll(): Promise<AppRow[]>;
  update(organizationId: string, id: string, patch: Partial<Pick<AppRow, 'plan' | 'currentReleaseId' | 'restartGeneration'>>): Promise<AppRow | undefined>;
  /** Deletes the app and everything that belongs to it (config, formation, builds, releases, instances, events). */
  delete(organizationId: string, id: string): Promise<boolean>;
}

export interface ConfigRepo {
  /** key → sealed value */
  get(organizationId: string, appId: string): Promise<Record<string, string>>;
  /** Sets (sealed string) or removes (null) keys in one statement batch. */
  apply(organizationId: string, appId: string, changes: Record<string, string | null>): Promise<void>;
}

export interface FormationRepo {
  list(organizationId: string, appId: string): Promise<FormationRow[]>;
  /** Creates or updates one process type's quantity and/or command. */
  upsert(organizationId: string, appId: string, type: string, patch: { quantity?: number; command?: string | null; healthcheck?: HealthCheckT | null }): Promise<FormationRow>;
  remove(organizationId: string, appId: string, type: string): Promise<void>;
}

export interface BuildsRepo {
  create(row: Omit<BuildRow, 'createdAt' | 'finishedAt' | 'artifactDigest' | 'processTypes' | 'cacheHit' | 'error' | 'releaseId' | 'stack' | 'state'>): Promise<BuildRow>;
  get(organizationId: string, appId: string, id: string): Promise<BuildRow | undefined>;
  /** Controllers: by id across tenants (build results arrive on the bus with only the build id). */
  byId(id: string): Promise<BuildRow | undefined>;
  list(organizationId: string, appId: string, limit?: number): Promise<BuildRow[]>;
  /** Builds not finished (pending/building): recovery after a crash. */
  listUnfinished(): Promise<BuildRow[]>;
  update(id: string, patch: Partial<Pick<BuildRow, 'state' | 'stack' | 'artifactDigest' | 'processTypes' | 'cacheHit' | 'error' | 'releaseId' | 'finishedAt'>>): Promise<BuildRow | undefined>;
}

export interface ReleasesRepo {
  /** Allocates the next version number for the app atomically (max + 1). */
  create(row: Omit<ReleaseRow, 'version' | 'createdAt'>): Promise<ReleaseRow>;
  byId(organizationId: string, id: string): Promise<ReleaseRow | undefined>;
  byVersion(organizationId: string, appId: string, version: number): Promise<ReleaseRow | undefined>;
  list(organizationId: string, appId: string, limit?: number): Promise<ReleaseRow[]>;
  /** Version numbers of releases by id, one query (app lists); unknown ids are left out. */
  versionsByIds(organizationId: string, ids: string[]): Promise<Map<string, number>>;
}

export interface InstancesRepo {
  create(row: Omit<InstanceRow, 'createdAt' | 'updatedAt' | 'stopAfter' | 'placement'> & { placement?: string | null }): Promise<InstanceRow>;
  get(organizationId: string, id: string): Promise<InstanceRow | undefined>;
  /** Controllers: by id across tenants (status reports carry only the instance id). */
  byId(id: string): Promise<InstanceRow | undefined>;
  listByApp(organizationId: string, appId: string): Promise<InstanceRow[]>;
  listByNode(nodeId: string): Promise<InstanceRow[]>;
  /** Every instance not yet stopped-and-desired-stopped: the reconciler's working set. */
  listActive(): Promise<InstanceRow[]>;
  update(id: string, patch: Partial<Omit<InstanceRow, 'id' | 'appId' | 'organizationId' | 'createdAt'>>): Promise<InstanceRow | undefined>;
  delete(id: string): Promise<void>;
}

export interface EventsRepo {
  append(row: Omit<EventRow, 'createdAt'> & { createdAt?: string }): Promise<EventRow>;
  list(organizationId: string, opts?: { appId?: string; limit?: number }): Promise<EventRow[]>;
}

export interface NodesRepo {
  upsert(row: NodeHeartbeatRow): Promise<NodeRow>;
  byId(id: string): Promise<NodeRow | undefined>;
  list(): Promise<NodeRow[]>;
  setState(id: string, state: NodeState): Promise<void>;
  /** Operator changes (migration 0007); returns the updated row, or undefined for an unknown node. */
  updateSpec(id: string, patch: Partial<Pick<NodeRow, 'labels' | 'taints' | 'operatorState'>>): Promise<NodeRow | undefined>;
  delete(id: string): Promise<boolean>;
}

/** Per-app placement constraints (migration 0007); an app without a row has none. */
export interface PlacementsRepo {
  get(organizationId: string, appId: string): Promise<AppPlacement | undefined>;
  set(organizationId: string, appId: string, placement: AppPlacement): Promise<void>;
}

// ---------- scheduling (issue 4) ----------
/** What instances desired running hold on one node, by their app's plan. */
export interface NodeAllocation { nodeId: string; memoryMb: number; cpus: number; instances: number }
export interface PlacementClaim {
  instanceId: string; nodeId: string;
  /** What the instance needs (its app's plan); CPUs are checked against the node's CPUs × `cpuOvercommit`. */
  memoryMb: number; cpus: number; cpuOvercommit: number;
  /** The scheduler's explanation, kept on the instance when placed. */
  placement: string;
  /**
   * Volumes the instance mounts (its process type's): each must live on `nodeId` or on no node
   * yet — those are pinned to `nodeId` in the same transaction as the placement (migration 0012).
   */
  volumeIds?: string[];
}
export type PlacementClaimResult =
  | { placed: true; allocation: NodeAllocation }
  /**
   * `allocation` (when the node is short of room): what it holds now, for the caller's next choice;
   * `pinned` (when a volume was pinned elsewhere meanwhile): volume id → its node.
   */
  | { placed: false; reason: string; allocation?: NodeAllocation; pinned?: Record<string, string> };
/** Bulk reads for a periodic pass over every app. */
/** One page of a pass over every app (`scheduling.passPage`): the apps and what a pass needs of each, read together. */
export interface PassPage {
  /** Apps with an id after the cursor, in id order. */
  apps: AppRow[];
  formations: Map<string, FormationRow[]>;
  settings: Map<string, DeploySettingsT>;
  /** Apps with rows stopped for good (to forget). */
  withStoppedRows: Set<string>;
  /**
   * Their instances not stopped for good, oldest first, lighter than `instances.listByApp`: no last
   * log lines (`lastLog: []`), and `placement` only when it is a "leaving <node>" or "kept on <node>" note.
   */
  instances: InstanceRow[];
  /** Their deployments in progress. */
  deployments: DeploymentRow[];
}
/** A persistent volume of an app (migration 0012): `nodeId` null until its first instance is placed, then fixed. */
export interface VolumeRow {
  id: string; organizationId: string; appId: string; name: string; processType: string; mountPath: string; sizeMb: number;
  nodeId: string | null; createdAt: string;
}
export interface VolumesRepo {
  create(row: Omit<VolumeRow, 'createdAt' | 'nodeId'>): Promise<VolumeRow>;
  /** `nameOrId` within one app of one organization. */
  get(organizationId: string, appId: string, nameOrId: string): Promise<VolumeRow | undefined>;
  /** One app's volumes, by name. */
  list(organizationId: string, appId: string): Promise<VolumeRow[]>;
  /** Controllers: volumes pinned to a node (its instances' mounts). */
  byNode(nodeId: string): Promise<VolumeRow[]>;
  /** Controllers: every pinned volume, for a publish of every node's assignments. */
  listPinned(): Promise<VolumeRow[]>;
  delete(organizationId: string, appId: string, id: string): Promise<boolean>;
}

export interface SchedulingRepo {
  /** Per node, what instances desired running hold: one aggregate query. */
  allocations(): Promise<Map<string, NodeAllocation>>;
  /**
   * Places a waiting instance (desired running, no node) on a node if the node is ready and,
   * re-checked in the same transaction with the node row locked, still has room: two control
   * planes placing at once never promise a node more than it holds.
   */
  claim(req: PlacementClaim): Promise<PlacementClaimResult>;
  /**
   * Marks a ready node down only if its last heartbeat is still the one judged too old (a
   * compare-and-set): a heartbeat that arrived meanwhile keeps it up. True when marked.
   */
  markDown(nodeId: string, lastHeartbeatAt: string): Promise<boolean>;
  /**
   * A pass over every app, `limit` apps at a time after the id `after` (null: from the start):
   * what is read per page is dropped before the next one, so a pass at 10,000 apps never holds
   * all 30,000 instance rows at once (they were V8 old-space garbage every 5 s).
   */
  passPage(after: string | null, limit: number): Promise<PassPage>;
  /** Process types of releases by id (unknown ids are left out). */
  processTypes(releaseIds: string[]): Promise<Map<string, Record<string, string>>>;
}

export interface OrganizationKeysRepo {
  get(organizationId: string): Promise<OrganizationKeyRow | undefined>;
  /**
   * Stores the key unless the organization already has one; returns the stored row either way
   * (the first writer wins, so concurrent first uses agree on one key).
   */
  createIfAbsent(row: Omit<OrganizationKeyRow, 'createdAt'>): Promise<OrganizationKeyRow>;
}

export type WebhookProvider = 'github' | 'gitlab';
/** An inbound webhook; the URL's credentials and the secret are sealed (the store sees no plaintext). */
export interface WebhookRow {
  id: string; organizationId: string; appId: string; provider: WebhookProvider; repositoryUrl: string;
  repositorySealed: string; branch: string; secretSealed: string; createdBy: string | null; createdAt: string;
}
export type WebhookDeliveryStatus = 'received' | 'ignored' | 'building' | 'failed';
export interface WebhookDeliveryRow {
  hookId: string; deliveryId: string; organizationId: string; appId: string; event: string; status: WebhookDeliveryStatus;
  message: string; buildId: string | null; createdAt: string; updatedAt: string;
}

/** What an OCI image build pulls; registry credentials are sealed (the store sees no plaintext). */
export interface ImageBuildRow {
  buildId: string; organizationId: string; appId: string; reference: string; credentialsSealed: string | null; createdAt: string;
}
/** A node join token (migration 0008); the secret itself is never stored. */
export interface JoinTokenRow { id: string; tokenHash: string; usesLeft: number; expiresAt: string; createdBy: string; createdAt: string }
/** A joined node's credential: the sha256 of the secret it got at join. */
export interface NodeCredentialRow { nodeId: string; secretHash: string; joinTokenId: string; createdAt: string }
/** Why a join token was refused (nothing was consumed). */
export type JoinTokenRefusal = 'unknown' | 'used' | 'expired';

export interface NodeJoinRepo {
  createToken(row: Omit<JoinTokenRow, 'createdAt'>): Promise<JoinTokenRow>;
  /**
   * Takes one use of the token with this hash, atomically (a single conditional UPDATE: two joins
   * racing for the last use cannot both win); the refusal says why when none was left.
   */
  consumeToken(tokenHash: string, now: string): Promise<{ ok: true; token: JoinTokenRow } | { ok: false; reason: JoinTokenRefusal }>;
  setCredential(row: Omit<NodeCredentialRow, 'createdAt'>): Promise<void>;
  credential(nodeId: string): Promise<NodeCredentialRow | undefined>;
  /** Revokes a node's credentials (the node is forgotten); false when it had none. */
  deleteCredential(nodeId: string): Promise<boolean>;
}

/** A NATS user issued to a node at join (migration 0011): its public key (U…), kept after revocation. */
export interface NatsUserRow { userKey: string; nodeId: string; issuedAt: string; revokedAt: string | null }

export interface NatsUsersRepo {
  add(row: { userKey: string; nodeId: string }): Promise<void>;
  byNode(nodeId: string): Promise<NatsUserRow[]>;
  /** Marks every unrevoked user of the node revoked at `at`; how many were. */
  revokeNode(nodeId: string, at: string): Promise<number>;
  /** Every revoked user: the NATS account's revocation list. */
  revoked(): Promise<NatsUserRow[]>;
}

export interface ImageBuildsRepo {
  create(row: Omit<ImageBuildRow, 'createdAt'>): Promise<ImageBuildRow>;
  get(organizationId: string, buildId: string): Promise<ImageBuildRow | undefined>;
}

export interface WebhooksRepo {
  create(row: Omit<WebhookRow, 'createdAt'>): Promise<WebhookRow>;
  get(organizationId: string, appId: string, id: string): Promise<WebhookRow | undefined>;
  /** Inbound deliveries only: the hook id in the URL is all they carry (their signature is checked next). */
  byId(id: string): Promise<WebhookRow | undefined>;
  list(organizationId: string, appId: string): Promise<WebhookRow[]>;
  /** Deletes the hook and its delivery records. */
  delete(organizationId: string, appId: string, id: string): Promise<boolean>;
  /**
   * Records a delivery unless this hook already has one with the same id; returns undefined
   * for a replay (the first writer wins, so concurrent identical deliveries agree).
   */
  recordDelivery(row: Omit<WebhookDeliveryRow, 'createdAt' | 'updatedAt' | 'buildId'>): Promise<WebhookDeliveryRow | undefined>;
  getDelivery(hookId: string, deliveryId: string): Promise<WebhookDeliveryRow | undefined>;
  updateDelivery(hookId: string, deliveryId: string, patch: Partial<Pick<WebhookDeliveryRow, 'status' | 'message' | 'buildId'>>): Promise<void>;
  /** Newest first. */
  listDeliveries(organizationId: string, hookId: string, limit?: number): Promise<WebhookDeliveryRow[]>;
}

/** A custom domain routed to an app; `hostname` is unique platform-wide. */
export interface DomainRow {
  id: string; organizationId: string; appId: string; hostname: string; redirectHttps: boolean; hstsMaxAge: number;
  createdAt: string; updatedAt: string;
}
export type CertificateKind = 'leaf' | 'ca' | 'acme-account';
export type CertificateStatus = 'pending' | 'issued' | 'failed';
/** A certificate (or platform TLS key); `keySealed` is the SecretBox-sealed private key PEM. */
export interface CertificateRow {
  id: string; organizationId: string; domainId: string | null; name: string; kind: CertificateKind; hostnames: string[];
  issuer: string; challengeType: string | null; status: CertificateStatus; certPem: string | null; keySealed: string | null;
  notBefore: string | null; notAfter: string | null; renewAfter: string | null; error: string | null; attempts: number;
  nextAttemptAt: string | null; createdAt: string; updatedAt: string;
}

export interface DomainsRepo {
  create(row: Omit<DomainRow, 'createdAt' | 'updatedAt'>): Promise<DomainRow>;
  /** `idOrHostname` within one app of one organization. */
  get(organizationId: string, appId: string, idOrHostname: string): Promise<DomainRow | undefined>;
  /** Global lookup: hostnames are unique platform-wide. */
  byHostname(hostname: string): Promise<DomainRow | undefined>;
  /** The organization's domains, or one app's, by hostname. */
  list(organizationId: string, appId?: string): Promise<DomainRow[]>;
  /** Every domain of every organization: controllers only (routes, certificates). */
  listAll(): Promise<DomainRow[]>;
  update(organizationId: string, id: string, patch: Partial<Pick<DomainRow, 'redirectHttps' | 'hstsMaxAge'>>): Promise<DomainRow | undefined>;
  /** Deletes the domain and its certificate. */
  delete(organizationId: string, id: string): Promise<boolean>;
}

export interface CertificatesRepo {
  byName(name: string): Promise<CertificateRow | undefined>;
  /** Inserts unless a row of that name exists; returns the stored row either way (first writer wins). */
  createIfAbsent(row: Omit<CertificateRow, 'createdAt' | 'updatedAt'>): Promise<CertificateRow>;
  update(id: string, patch: Partial<Omit<CertificateRow, 'id' | 'organizationId' | 'name' | 'createdAt' | 'updatedAt'>>): Promise<CertificateRow | undefined>;
  /** Certificates of one organization's domains. */
  list(organizationId: string): Promise<CertificateRow[]>;
  /** Every certificate and key: the certificate manager only. */
  listAll(): Promise<CertificateRow[]>;
  delete(id: string): Promise<void>;
}

export interface DeploymentRow {
  id: string; organizationId: string; appId: string; fromReleaseId: string | null; fromVersion: number | null;
  toReleaseId: string; toVersion: number; strategy: DeployStrategy; settings: DeploySettingsT; state: DeploymentState;
  phase: string; reason: string | null; step: number; stepStartedAt: string | null; progressAt: string;
  history: { at: string; message: string }[]; createdBy: string | null; createdAt: string; updatedAt: string; finishedAt: string | null;
}

export interface DeploymentsRepo {
  create(row: Omit<DeploymentRow, 'createdAt' | 'updatedAt' | 'finishedAt' | 'history'> & { history?: DeploymentRow['history'] }): Promise<DeploymentRow>;
  get(organizationId: string, appId: string, id: string): Promise<DeploymentRow | undefined>;
  list(organizationId: string, appId: string, limit?: number): Promise<DeploymentRow[]>;
  /** The app's deployment in pending/in_progress/rolling_back, if any (at most one). */
  active(organizationId: string, appId: string): Promise<DeploymentRow | undefined>;
  /** Controllers: every active deployment of every app. */
  listActive(): Promise<DeploymentRow[]>;
  /**
   * Compare-and-set: applies `patch` only while the row is still in state `from` (two passes,
   * or two control planes, cannot both move one deployment). Appends `note` to the history.
   * Returns the updated row, or undefined when the state had moved on.
   */
  transition(id: string, from: DeploymentState, patch: Partial<Pick<DeploymentRow, 'state' | 'phase' | 'reason' | 'step' | 'stepStartedAt' | 'progressAt' | 'finishedAt'>>, note?: string): Promise<DeploymentRow | undefined>;
  getSettings(organizationId: string, appId: string): Promise<DeploySettingsT | undefined>;
  setSettings(organizationId: string, appId: string, settings: DeploySettingsT): Promise<void>;
}

// ---------- cluster routing ----------
/** Platform-wide secrets the control planes share (the routers' cluster token). */
export interface ClusterSecretsRepo {
  /** The value named `name`, created with `make()` by whoever asks first (concurrent first calls agree). */
  getOrCreate(name: string, make: () => string): Promise<string>;
}

export interface Store {
  readonly dialect: 'sqlite' | 'postgres';
  users: UsersRepo;
  organizations: OrganizationsRepo;
  memberships: MembershipsRepo;
  tokens: TokensRepo;
  apps: AppsRepo;
  config: ConfigRepo;
  formation: FormationRepo;
  builds: BuildsRepo;
  releases: ReleasesRepo;
  instances: InstancesRepo;
  events: EventsRepo;
  nodes: NodesRepo;
  placements: PlacementsRepo;
  organizationKeys: OrganizationKeysRepo;
  deployments: DeploymentsRepo;
  domains: DomainsRepo;
  certificates: CertificatesRepo;
  webhooks: WebhooksRepo;
  imageBuilds: ImageBuildsRepo;
  nodeJoin: NodeJoinRepo;
  scheduling: SchedulingRepo;
  clusterSecrets: ClusterSecretsRepo;
  natsUsers: NatsUsersRepo;
  volumes: VolumesRepo;
  /** Runs `fn` in one database transaction; the Store passed to `fn` is bound to it. */
  transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T>;
  /** Applied migration names, oldest first. */
  migrations(): Promise<string[]>;
  close(): Promise<void>;
}
