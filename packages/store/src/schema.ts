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
}

/** A wrapped per-organization data key (migration 0002). */
export interface OrganizationKeysTable {
  organization_id: string;
  provider: string;
  key_id: string;
  wrapped_key: string;
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
  organization_keys: OrganizationKeysTable;
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
  organization_keys_pkey: 'organization_keys(organization_id)',
} as const;

/** The constraints callers are expected to meet; compare with `StoreConflictError.constraint`. */
export const CONSTRAINTS = {
  userEmail: UNIQUE_CONSTRAINTS.users_email_key,
  organizationName: UNIQUE_CONSTRAINTS.organizations_name_key,
  membership: UNIQUE_CONSTRAINTS.memberships_organization_id_user_id_key,
  tokenHash: UNIQUE_CONSTRAINTS.api_tokens_token_hash_key,
  appName: UNIQUE_CONSTRAINTS.apps_name_key,
  releaseVersion: UNIQUE_CONSTRAINTS.releases_app_id_version_key,
} as const;
