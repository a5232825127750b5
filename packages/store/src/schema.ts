/**
 * Table definitions as Kysely sees them. Kept portable between SQLite and PostgreSQL:
 * JSON is stored as text, booleans as integer 0/1, timestamps as ISO-8601 UTC text
 * (`Date#toISOString()`, which sorts correctly as text). The rows here are the database's
 * shape; `kysely-store.ts` maps them to the camelCase rows of `types.ts`.
 *
 * The migrations in `migrations/` are the source of truth for the actual schema; this file
 * must describe the schema they produce.
 */

export interface UsersTable {
  id: string;
  email: string;
  password_hash: string;
  platform_admin: number;
  created_at: string;
}

export interface OrganizationsTable {
  id: string;
  name: string;
  created_at: string;
}

export interface MembershipsTable {
  id: string;
  organization_id: string;
  user_id: string;
  role: string;
  created_at: string;
}

export interface ApiTokensTable {
  id: string;
  user_id: string;
  organization_id: string;
  name: string;
  token_hash: string;
  /** JSON array of scopes */
  scopes: string;
  kind: string;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
}

export interface AppsTable {
  id: string;
  organization_id: string;
  name: string;
  plan: string;
  current_release_id: string | null;
  restart_generation: number;
  created_at: string;
  updated_at: string;
}

export interface ConfigVarsTable {
  organization_id: string;
  app_id: string;
  key: string;
  /** Sealed (encrypted) value; the store never sees plaintext. */
  value: string;
  updated_at: string;
}

export interface FormationsTable {
  organization_id: string;
  app_id: string;
  type: string;
  quantity: number;
  command: string | null;
  updated_at: string;
  /** JSON HealthCheck or null (TCP connect) — migration 0004. */
  healthcheck: string | null;
}

export interface BuildsTable {
  id: string;
  organization_id: string;
  app_id: string;
  state: string;
  stack: string | null;
  source_digest: string;
  artifact_digest: string | null;
  /** JSON object: process type → command */
  process_types: string;
  cache_hit: number | null;
  error: string | null;
  release_id: string | null;
  created_by: string | null;
  created_at: string;
  finished_at: string | null;
}

export interface ReleasesTable {
  id: string;
  organization_id: string;
  app_id: string;
  version: number;
  build_id: string;
  description: string;
  /** JSON object: process type → command */
  process_types: string;
  artifact_digest: string;
  config_sealed: string;
  /** JSON array of config keys */
  config_keys: string;
  created_by: string | null;
  created_at: string;
}

export interface InstancesTable {
  id: string;
  organization_id: string;
  app_id: string;
  release_id: string;
  release_version: number;
  process_type: string;
  /** `InstanceRow.index` (renamed: INDEX is an SQL keyword). */
  process_index: number;
  node_id: string | null;
  desired: string;
  state: string;
  exit_code: number | null;
  signal: string | null;
  oom_killed: number;
  restarts: number;
  address: string | null;
  started_at: string | null;
  restart_generation: number;
  /** JSON array of the last log lines */
  last_log: string;
  created_at: string;
  updated_at: string;
  /** Set while the instance drains out of the router; it is stopped at this time (migration 0004). */
  stop_after: string | null;
  /** The scheduler's last decision for the instance, explained (migration 0007). */
  placement: string | null;
}

export interface EventsTable {
  id: string;
  organization_id: string;
  app_id: string | null;
  type: string;
  message: string;
  /** JSON object */
  data: string;
  created_at: string;
}

export interface NodesTable {
  id: string;
  name: string;
  state: string;
  isolation: string;
  cpus: number;
  memory_mb: number;
  last_heartbeat_at: string | null;
  created_at: string;
  // migration 0007: scheduling
  disk_mb: number | null;
  /** JSON objects / array (see the migration). */
  agent_labels: string;
  labels: string;
  taints: string;
  operator_state: string | null;
  /** migration 0010: host:port of the node's router cluster listener (null: none reported). */
  cluster_endpoint: string | null;
}

/** Per-app placement constraints (migration 0007). */
export interface AppPlacementsTable {
  app_id: string;
  organization_id: string;
  /** JSON object */
  required_labels: string;
  /** JSON array */
  tolerations: string;
  updated_at: string;
}

/** A wrapped per-organization data key (migration 0002). */
export interface OrganizationKeysTable {
  organization_id: string;
  provider: string;
  key_id: string;
  wrapped_key: string;
  created_at: string;
}

/** An inbound GitHub/GitLab webhook (migration 0005). */
export interface WebhooksTable {
  id: string;
  organization_id: string;
  app_id: string;
  provider: string;
  /** The repository URL without credentials, for display. */
  repository_url: string;
  /** Sealed full repository URL (it may carry credentials). */
  repository_sealed: string;
  branch: string;
  secret_sealed: string;
  created_by: string | null;
  created_at: string;
}

/** One received delivery per (hook, delivery id): replay protection (migration 0005). */
export interface WebhookDeliveriesTable {
  hook_id: string;
  delivery_id: string;
  organization_id: string;
  app_id: string;
  event: string;
  status: string;
  message: string;
  build_id: string | null;
  created_at: string;
  updated_at: string;
}

/** A custom domain routed to an app (migration 0003). */
export interface DomainsTable {
  id: string;
  organization_id: string;
  app_id: string;
  hostname: string;
  redirect_https: number;
  hsts_max_age: number;
  created_at: string;
  updated_at: string;
}

/** A certificate or platform TLS key (migration 0003); private keys only sealed. */
export interface CertificatesTable {
  id: string;
  organization_id: string;
  domain_id: string | null;
  name: string;
  kind: string;
  /** JSON array of DNS names */
  hostnames: string;
  issuer: string;
  challenge_type: string | null;
  status: string;
  cert_pem: string | null;
  key_sealed: string | null;
  not_before: string | null;
  not_after: string | null;
  renew_after: string | null;
  error: string | null;
  attempts: number;
  next_attempt_at: string | null;
  created_at: string;
  updated_at: string;
}

/** One release rollout (migration 0004). */
export interface DeploymentsTable {
  id: string;
  organization_id: string;
  app_id: string;
  from_release_id: string | null;
  from_version: number | null;
  to_release_id: string;
  to_version: number;
  strategy: string;
  /** JSON DeploySettings the deployment started with */
  settings: string;
  state: string;
  phase: string;
  reason: string | null;
  step: number;
  step_started_at: string | null;
  progress_at: string;
  /** JSON array of { at, message } */
  history: string;
  created_by: string | null;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

/** What an OCI image build pulls (migration 0006); credentials sealed. */
export interface ImageBuildsTable {
  build_id: string;
  organization_id: string;
  app_id: string;
  reference: string;
  credentials_sealed: string | null;
  created_at: string;
}

/** An app's deploy strategy and limits (migration 0004). */
export interface DeploySettingsTable {
  app_id: string;
  organization_id: string;
  settings: string;
  updated_at: string;
}

/** A join token for nodes (migration 0008): only the secret's sha256 is kept. */
export interface JoinTokensTable {
  id: string;
  token_hash: string;
  uses_left: number;
  expires_at: string;
  created_by: string;
  created_at: string;
}

/** A joined node's credential (migration 0008): the sha256 of its secret. */
export interface NodeCredentialsTable {
  node_id: string;
  secret_hash: string;
  join_token_id: string;
  created_at: string;
}

/** A NATS user issued to a node at join (migration 0011); revoked_at set when the node is removed. */
export interface NatsUsersTable {
  user_key: string;
  node_id: string;
  issued_at: string;
  revoked_at: string | null;
}

/** A persistent volume of an app (migration 0012); node_id is set once, at its first placement. */
export interface VolumesTable {
  id: string;
  organization_id: string;
  app_id: string;
  name: string;
  process_type: string;
  mount_path: string;
  size_mb: number;
  node_id: string | null;
  created_at: string;
}

/** Platform-wide secrets shared by the control planes (migration 0010). */
export interface ClusterSecretsTable {
  name: string;
  value: string;
  created_at: string;
}

export interface Database {
  users: UsersTable;
  organizations: OrganizationsTable;
  memberships: MembershipsTable;
  api_tokens: ApiTokensTable;
  apps: AppsTable;
  config_vars: ConfigVarsTable;
  formations: FormationsTable;
  builds: BuildsTable;
  releases: ReleasesTable;
  instances: InstancesTable;
  events: EventsTable;
  nodes: NodesTable;
  app_placements: AppPlacementsTable;
  organization_keys: OrganizationKeysTable;
  domains: DomainsTable;
  certificates: CertificatesTable;
  webhooks: WebhooksTable;
  webhook_deliveries: WebhookDeliveriesTable;
  deployments: DeploymentsTable;
  deploy_settings: DeploySettingsTable;
  image_builds: ImageBuildsTable;
  join_tokens: JoinTokensTable;
  node_credentials: NodeCredentialsTable;
  cluster_secrets: ClusterSecretsTable;
  nats_users: NatsUsersTable;
  volumes: VolumesTable;
}

/**
 * Unique constraints by a stable, dialect-independent identifier (`table(columns)`), which is
 * what `StoreConflictError.constraint` carries. Keys are the constraint names the migrations
 * give (PostgreSQL reports those); SQLite reports the columns, which map to the same value.
 */
export const UNIQUE_CONSTRAINTS = {
  users_pkey: 'users(id)',
  users_email_key: 'users(email)',
  organizations_pkey: 'organizations(id)',
  organizations_name_key: 'organizations(name)',
  memberships_pkey: 'memberships(id)',
  memberships_organization_id_user_id_key: 'memberships(organization_id,user_id)',
  api_tokens_pkey: 'api_tokens(id)',
  api_tokens_token_hash_key: 'api_tokens(token_hash)',
  apps_pkey: 'apps(id)',
  apps_name_key: 'apps(name)',
  apps_id_organization_id_key: 'apps(id,organization_id)',
  config_vars_pkey: 'config_vars(app_id,key)',
  formations_pkey: 'formations(app_id,type)',
  builds_pkey: 'builds(id)',
  releases_pkey: 'releases(id)',
  releases_app_id_version_key: 'releases(app_id,version)',
  instances_pkey: 'instances(id)',
  events_pkey: 'events(id)',
  nodes_pkey: 'nodes(id)',
  app_placements_pkey: 'app_placements(app_id)',
  organization_keys_pkey: 'organization_keys(organization_id)',
  domains_pkey: 'domains(id)',
  domains_hostname_key: 'domains(hostname)',
  certificates_pkey: 'certificates(id)',
  certificates_name_key: 'certificates(name)',
  webhooks_pkey: 'webhooks(id)',
  webhook_deliveries_pkey: 'webhook_deliveries(hook_id,delivery_id)',
  deployments_pkey: 'deployments(id)',
  deploy_settings_pkey: 'deploy_settings(app_id)',
  image_builds_pkey: 'image_builds(build_id)',
  join_tokens_pkey: 'join_tokens(id)',
  join_tokens_token_hash_key: 'join_tokens(token_hash)',
  node_credentials_pkey: 'node_credentials(node_id)',
  cluster_secrets_pkey: 'cluster_secrets(name)',
  nats_users_pkey: 'nats_users(user_key)',
  volumes_pkey: 'volumes(id)',
  volumes_app_id_name_key: 'volumes(app_id,name)',
  volumes_app_id_process_type_mount_path_key: 'volumes(app_id,process_type,mount_path)',
} as const;

/** The constraints callers are expected to meet; compare with `StoreConflictError.constraint`. */
export const CONSTRAINTS = {
  userEmail: UNIQUE_CONSTRAINTS.users_email_key,
  organizationName: UNIQUE_CONSTRAINTS.organizations_name_key,
  membership: UNIQUE_CONSTRAINTS.memberships_organization_id_user_id_key,
  tokenHash: UNIQUE_CONSTRAINTS.api_tokens_token_hash_key,
  appName: UNIQUE_CONSTRAINTS.apps_name_key,
  releaseVersion: UNIQUE_CONSTRAINTS.releases_app_id_version_key,
  domainHostname: UNIQUE_CONSTRAINTS.domains_hostname_key,
  certificateName: UNIQUE_CONSTRAINTS.certificates_name_key,
  webhookDelivery: UNIQUE_CONSTRAINTS.webhook_deliveries_pkey,
  volumeName: UNIQUE_CONSTRAINTS.volumes_app_id_name_key,
  volumeMountPath: UNIQUE_CONSTRAINTS.volumes_app_id_process_type_mount_path_key,
} as const;
