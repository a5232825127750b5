/**
 * The Store implemented once with Kysely queries; SQLite and PostgreSQL differ only in the
 * dialect the `Kysely` instance was built with. Every tenant query filters by organization_id,
 * and tenant-owned rows reference `apps(id, organization_id)`, so a write can't cross tenants
 * either.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Kysely, Selectable, Updateable } from 'kysely';
import type { Role, BuildState, HealthCheckT, InstanceState, NodeOperatorState, NodeState, NodeTaint, Stack } from '@shellwego/core';
import type {
  AppRow, AppsRepo, BuildRow, BuildsRepo, ConfigRepo, EventRow, EventsRepo, FormationRepo, FormationRow, InstanceRow,
  InstancesRepo, MembershipRow, MembershipsRepo, NodeRow, NodesRepo, OrganizationRow, OrganizationsRepo, ReleaseRow,
  ReleasesRepo, Store, TokenRow, OrganizationKeyRow, OrganizationKeysRepo, TokensRepo, UserRow, UsersRepo,
} from './types.ts';
import type { DeploymentsRepo, WebhooksRepo } from './types.ts';
import type { CertificatesRepo, DomainsRepo } from './types.ts';
import type {
  ApiTokensTable, AppsTable, BuildsTable, Database, EventsTable, FormationsTable, InstancesTable, NodesTable,
  OrganizationKeysTable, OrganizationsTable, ReleasesTable, UsersTable,
} from './schema.ts';
import { StoreMisuseError, StoreReferenceError, translateError } from './errors.ts';
import { appliedMigrations } from './migrations/index.ts';
import { Webhooks } from './repos/webhooks.ts';
import { ImageBuilds } from './repos/image-builds.ts';
import type { ImageBuildsRepo } from './types.ts';
import { Deployments } from './repos/deployments.ts';
import { Certificates, Domains } from './repos/domains.ts';
import { Placements } from './repos/placements.ts';
import { NodeJoin } from './repos/node-join.ts';
import type { NodeJoinRepo } from './types.ts';
import type { NodeHeartbeatRow, PlacementsRepo } from './types.ts';
import { Scheduling } from './repos/scheduling.ts';
import { ClusterSecrets } from './repos/cluster.ts';
import type { ClusterSecretsRepo } from './types.ts';
import { NatsUsers } from './repos/nats-users.ts';
import type { NatsUsersRepo } from './types.ts';
import type { SchedulingRepo } from './types.ts';
import { Volumes } from './repos/volumes.ts';
import type { VolumesRepo } from './types.ts';

type Db = Kysely<Database>;
export type Dialect = Store['dialect'];

/** What repositories get from their store: the executor to use and a way to be atomic. */
export interface Ctx {
  /** This store's executor (the transaction when bound to one). */
  q(): Db;
  /** Runs fn in the current transaction, or in a new one. */
  atomic<T>(fn: (db: Db) => Promise<T>): Promise<T>;
}

/** Marks the async context of a running `transaction(fn)` callback, per root store. */
interface TxScope { root: object; open: boolean }
const txScope = new AsyncLocalStorage<TxScope>();

const now = () => new Date().toISOString();
const int = (b: boolean) => (b ? 1 : 0);
const bool = (n: number) => n !== 0;
const count = (v: unknown) => Number(v ?? 0);

export class KyselyStore implements Store {
  readonly dialect: Dialect;
  readonly users: UsersRepo;
  readonly organizations: OrganizationsRepo;
  readonly memberships: MembershipsRepo;
  readonly tokens: TokensRepo;
  readonly apps: AppsRepo;
  readonly config: ConfigRepo;
  readonly formation: FormationRepo;
  readonly builds: BuildsRepo;
  readonly releases: ReleasesRepo;
  readonly instances: InstancesRepo;
  readonly events: EventsRepo;
  readonly nodes: NodesRepo;
  readonly placements: PlacementsRepo;
  readonly organizationKeys: OrganizationKeysRepo;
  readonly domains: DomainsRepo;
  readonly certificates: CertificatesRepo;
  readonly webhooks: WebhooksRepo;
  readonly deployments: DeploymentsRepo;
  readonly imageBuilds: ImageBuildsRepo;
  readonly nodeJoin: NodeJoinRepo;
  readonly scheduling: SchedulingRepo;
  readonly clusterSecrets: ClusterSecretsRepo;
  readonly natsUsers: NatsUsersRepo;
  readonly volumes: VolumesRepo;

  readonly #db: Db;
  /** Identity shared by a store and the stores bound to its transactions. */
  #root: object = {};

  /**
   * `db` may be a `Kysely` instance (the store opens transactions on it) or a Kysely
   * `Transaction` (the store is bound to it; `transaction()` then reuses it).
   */
  constructor(db: Db, dialect: Dialect) {
    this.#db = db;
    this.dialect = dialect;
    const ctx: Ctx = {
      q: () => this.#executor(),
      atomic: (fn) => {
        const db = this.#executor();
        return db.isTransaction ? fn(db) : db.transaction().execute(fn);
      },
    };
    this.users = translated(new Users(ctx));
    this.organizations = translated(new Organizations(ctx));
    this.memberships = translated(new Memberships(ctx));
    this.tokens = translated(new Tokens(ctx));
    this.apps = translated(new Apps(ctx));
    this.config = translated(new Config(ctx));
    this.formation = translated(new Formation(ctx));
    this.builds = translated(new Builds(ctx));
    this.releases = translated(new Releases(ctx));
    this.instances = translated(new Instances(ctx));
    this.events = translated(new Events(ctx));
    this.nodes = translated(new Nodes(ctx));
    this.placements = translated(new Placements(ctx));
    this.organizationKeys = translated(new OrganizationKeys(ctx));
    this.domains = translated(new Domains(ctx));
    this.certificates = translated(new Certificates(ctx));
    this.webhooks = translated(new Webhooks(ctx));
    this.deployments = translated(new Deployments(ctx));
    this.imageBuilds = translated(new ImageBuilds(ctx));
    this.nodeJoin = translated(new NodeJoin(ctx));
    this.scheduling = translated(new Scheduling(ctx, dialect));
    this.clusterSecrets = translated(new ClusterSecrets(ctx));
    this.natsUsers = translated(new NatsUsers(ctx));
    this.volumes = translated(new Volumes(ctx));
  }

  async transaction<T>(fn: (tx: Store) => Promise<T>): Promise<T> {
    const db = this.#executor();
    // Nested: a helper that opens a transaction joins the caller's. No savepoint: an error
    // anywhere rolls the whole outer transaction back, which is what callers expect.
    if (db.isTransaction) return fn(this);
    const scope: TxScope = { root: this.#root, open: true };
    try {
      return await db.transaction().execute((trx) =>
        txScope.run(scope, async () => {
          try {
            return await fn(KyselyStore.#bound(trx, this));
          } finally {
            scope.open = false;
          }
        }),
      );
    } catch (err) {
      throw translateError(err);
    }
  }

  async migrations(): Promise<string[]> {
    return appliedMigrations(this.#executor());
  }

  async close(): Promise<void> {
    if (this.#db.isTransaction) throw new StoreMisuseError('close() called on a Store bound to a transaction');
    await this.#db.destroy();
  }

  static #bound(trx: Db, parent: KyselyStore): KyselyStore {
    const store = new KyselyStore(trx, parent.dialect);
    store.#root = parent.#root;
    return store;
  }

  /**
   * The outer store used inside its own transaction callback would wait for that transaction
   * to finish — forever (SQLite has one connection; PostgreSQL would block on the row locks).
   * Fail loudly instead of hanging.
   */
  #executor(): Db {
    if (!this.#db.isTransaction) {
      const scope = txScope.getStore();
      if (scope?.open && scope.root === this.#root) {
        throw new StoreMisuseError('the Store was used inside its own transaction(fn) callback: use the Store passed to fn');
      }
    }
    return this.#db;
  }
}

/** Wraps every method of a repository so driver errors surface as the store's error types. */
function translated<T extends object>(repo: T): T {
  const proto = Object.getPrototypeOf(repo) as Record<string, unknown>;
  for (const key of Object.getOwnPropertyNames(proto)) {
    const fn = proto[key];
    if (key === 'constructor' || typeof fn !== 'function') continue;
    Object.defineProperty(repo, key, {
      value: async (...args: unknown[]) => {
        try {
          return await (fn as (...a: unknown[]) => Promise<unknown>).apply(repo, args);
        } catch (err) {
          throw translateError(err);
        }
      },
    });
  }
  return repo;
}

/** Maps a camelCase patch to columns; keys without a mapping are ignored (never written). */
type ColumnSpec<R, T> = { [K in keyof R]?: [keyof T & string, ((v: NonNullable<R[K]> | R[K]) => unknown)?] };
function columns<R, T>(patch: Partial<R>, spec: ColumnSpec<R, T>): Updateable<T> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(patch)) {
    const s = spec[k as keyof R];
    if (v === undefined || !s) continue;
    out[s[0]] = s[1] ? s[1](v as never) : v;
  }
  return out as Updateable<T>;
}

async function appInOrg(db: Db, organizationId: string, appId: string): Promise<void> {
  const app = await db.selectFrom('apps').select('id').where('id', '=', appId).where('organization_id', '=', organizationId).executeTakeFirst();
  if (!app) throw new StoreReferenceError(`app '${appId}' not found`);
}

// ---------------------------------------------------------------------------------------------
// Row mappers

const toUser = (r: Selectable<UsersTable>): UserRow => ({
  id: r.id, email: r.email, passwordHash: r.password_hash, platformAdmin: bool(r.platform_admin), createdAt: r.created_at,
});
const toOrg = (r: Selectable<OrganizationsTable>): OrganizationRow => ({ id: r.id, name: r.name, createdAt: r.created_at });
const toToken = (r: Selectable<ApiTokensTable>): TokenRow => ({
  id: r.id, userId: r.user_id, organizationId: r.organization_id, name: r.name, tokenHash: r.token_hash,
  scopes: JSON.parse(r.scopes) as string[], kind: r.kind as TokenRow['kind'], createdAt: r.created_at, expiresAt: r.expires_at,
  lastUsedAt: r.last_used_at,
});
export const toApp = (r: Selectable<AppsTable>): AppRow => ({
  id: r.id, organizationId: r.organization_id, name: r.name, plan: r.plan, currentReleaseId: r.current_release_id,
  restartGeneration: r.restart_generation, createdAt: r.created_at, updatedAt: r.updated_at,
});
export const toFormation = (r: Selectable<FormationsTable>): FormationRow => ({
  appId: r.app_id, type: r.type, quantity: r.quantity, command: r.command, updatedAt: r.updated_at,
  healthcheck: r.healthcheck === null ? null : JSON.parse(r.healthcheck) as HealthCheckT,
});
const toBuild = (r: Selectable<BuildsTable>): BuildRow => ({
  id: r.id, appId: r.app_id, organizationId: r.organization_id, state: r.state as BuildState, stack: r.stack as Stack | null,
  sourceDigest: r.source_digest, artifactDigest: r.artifact_digest, processTypes: JSON.parse(r.process_types) as Record<string, string>,
  cacheHit: r.cache_hit === null ? null : bool(r.cache_hit), error: r.error, releaseId: r.release_id, createdBy: r.created_by,
  createdAt: r.created_at, finishedAt: r.finished_at,
});
const toRelease = (r: Selectable<ReleasesTable>): ReleaseRow => ({
  id: r.id, appId: r.app_id, organizationId: r.organization_id, version: Number(r.version), buildId: r.build_id,
  description: r.description, processTypes: JSON.parse(r.process_types) as Record<string, string>, artifactDigest: r.artifact_digest,
  configSealed: r.config_sealed, configKeys: JSON.parse(r.config_keys) as string[], createdBy: r.created_by, createdAt: r.created_at,
});
const toInstance = (r: Selectable<InstancesTable>): InstanceRow => ({
  id: r.id, appId: r.app_id, organizationId: r.organization_id, releaseId: r.release_id, releaseVersion: r.release_version,
  processType: r.process_type, index: r.process_index, nodeId: r.node_id, desired: r.desired as InstanceRow['desired'],
  state: r.state as InstanceState, exitCode: r.exit_code, signal: r.signal, oomKilled: bool(r.oom_killed), restarts: r.restarts,
  address: r.address, startedAt: r.started_at, restartGeneration: r.restart_generation, lastLog: JSON.parse(r.last_log) as string[],
  createdAt: r.created_at, updatedAt: r.updated_at, stopAfter: r.stop_after, placement: r.placement ?? null,
});
const toEvent = (r: Selectable<EventsTable>): EventRow => ({
  id: r.id, organizationId: r.organization_id, appId: r.app_id, type: r.type, message: r.message,
  data: JSON.parse(r.data) as Record<string, unknown>, createdAt: r.created_at,
});
const toNode = (r: Selectable<NodesTable>): NodeRow => ({
  id: r.id, name: r.name, state: r.state as NodeState, isolation: r.isolation, cpus: Number(r.cpus), memoryMb: r.memory_mb,
  lastHeartbeatAt: r.last_heartbeat_at, createdAt: r.created_at,
  diskMb: r.disk_mb === null ? null : Number(r.disk_mb), agentLabels: JSON.parse(r.agent_labels) as Record<string, string>,
  labels: JSON.parse(r.labels) as Record<string, string>, taints: JSON.parse(r.taints) as NodeTaint[], operatorState: (r.operator_state ?? null) as NodeOperatorState,
  clusterEndpoint: r.cluster_endpoint ?? null,
});

const toOrgKey = (r: Selectable<OrganizationKeysTable>): OrganizationKeyRow => ({
  organizationId: r.organization_id, provider: r.provider, keyId: r.key_id, wrappedKey: r.wrapped_key, createdAt: r.created_at,
});

// ---------------------------------------------------------------------------------------------
// Repositories

class Users implements UsersRepo {
  constructor(private readonly c: Ctx) {}

  async create(row: Omit<UserRow, 'createdAt'>): Promise<UserRow> {
    const r = await this.c.q().insertInto('users')
      .values({ id: row.id, email: row.email, password_hash: row.passwordHash, platform_admin: int(row.platformAdmin), created_at: now() })
      .returningAll().executeTakeFirstOrThrow();
    return toUser(r);
  }

  async byId(id: string): Promise<UserRow | undefined> {
    const r = await this.c.q().selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toUser(r);
  }

  async byEmail(email: string): Promise<UserRow | undefined> {
    const r = await this.c.q().selectFrom('users').selectAll().where('email', '=', email).executeTakeFirst();
    return r && toUser(r);
  }

  async count(): Promise<number> {
    const r = await this.c.q().selectFrom('users').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
    return count(r.n);
  }

  async setPassword(id: string, passwordHash: string): Promise<void> {
    await this.c.q().updateTable('users').set({ password_hash: passwordHash }).where('id', '=', id).execute();
  }
}

class Organizations implements OrganizationsRepo {
  constructor(private readonly c: Ctx) {}

  async create(row: Omit<OrganizationRow, 'createdAt'>): Promise<OrganizationRow> {
    const r = await this.c.q().insertInto('organizations').values({ id: row.id, name: row.name, created_at: now() }).returningAll().executeTakeFirstOrThrow();
    return toOrg(r);
  }

  async byId(id: string): Promise<OrganizationRow | undefined> {
    const r = await this.c.q().selectFrom('organizations').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toOrg(r);
  }

  async byName(name: string): Promise<OrganizationRow | undefined> {
    const r = await this.c.q().selectFrom('organizations').selectAll().where('name', '=', name).executeTakeFirst();
    return r && toOrg(r);
  }

  async listForUser(userId: string): Promise<(OrganizationRow & { role: Role })[]> {
    const rows = await this.c.q().selectFrom('organizations')
      .innerJoin('memberships', 'memberships.organization_id', 'organizations.id')
      .selectAll('organizations').select('memberships.role')
      .where('memberships.user_id', '=', userId)
      .orderBy('organizations.created_at').orderBy('organizations.id')
      .execute();
    return rows.map((r) => ({ ...toOrg(r), role: r.role as Role }));
  }
}

class Memberships implements MembershipsRepo {
  constructor(private readonly c: Ctx) {}

  #select(db: Db) {
    return db.selectFrom('memberships').innerJoin('users', 'users.id', 'memberships.user_id').selectAll('memberships').select('users.email');
  }

  async add(row: { id: string; organizationId: string; userId: string; role: Role }): Promise<MembershipRow> {
    return this.c.atomic(async (db) => {
      await db.insertInto('memberships')
        .values({ id: row.id, organization_id: row.organizationId, user_id: row.userId, role: row.role, created_at: now() })
        .execute();
      const r = await this.#select(db).where('memberships.id', '=', row.id).executeTakeFirstOrThrow();
      return toMembership(r);
    });
  }

  async get(organizationId: string, userId: string): Promise<MembershipRow | undefined> {
    const r = await this.#select(this.c.q())
      .where('memberships.organization_id', '=', organizationId).where('memberships.user_id', '=', userId)
      .executeTakeFirst();
    return r && toMembership(r);
  }

  async list(organizationId: string): Promise<MembershipRow[]> {
    const rows = await this.#select(this.c.q())
      .where('memberships.organization_id', '=', organizationId)
      .orderBy('memberships.created_at').orderBy('memberships.id')
      .execute();
    return rows.map(toMembership);
  }

  async updateRole(organizationId: string, userId: string, role: Role): Promise<MembershipRow | undefined> {
    return this.c.atomic(async (db) => {
      const res = await db.updateTable('memberships').set({ role })
        .where('organization_id', '=', organizationId).where('user_id', '=', userId)
        .executeTakeFirst();
      if (!res.numUpdatedRows) return undefined;
      const r = await this.#select(db).where('memberships.organization_id', '=', organizationId).where('memberships.user_id', '=', userId).executeTakeFirstOrThrow();
      return toMembership(r);
    });
  }

  async remove(organizationId: string, userId: string): Promise<boolean> {
    const res = await this.c.q().deleteFrom('memberships')
      .where('organization_id', '=', organizationId).where('user_id', '=', userId)
      .executeTakeFirst();
    return res.numDeletedRows > 0n;
  }

  async countOwners(organizationId: string): Promise<number> {
    const r = await this.c.q().selectFrom('memberships').select((eb) => eb.fn.countAll().as('n'))
      .where('organization_id', '=', organizationId).where('role', '=', 'owner')
      .executeTakeFirstOrThrow();
    return count(r.n);
  }
}

function toMembership(r: { id: string; organization_id: string; user_id: string; role: string; created_at: string; email: string }): MembershipRow {
  return { id: r.id, organizationId: r.organization_id, userId: r.user_id, email: r.email, role: r.role as Role, createdAt: r.created_at };
}

class Tokens implements TokensRepo {
  constructor(private readonly c: Ctx) {}

  async create(row: Omit<TokenRow, 'createdAt' | 'lastUsedAt'>): Promise<TokenRow> {
    const r = await this.c.q().insertInto('api_tokens')
      .values({
        id: row.id, user_id: row.userId, organization_id: row.organizationId, name: row.name, token_hash: row.tokenHash,
        scopes: JSON.stringify(row.scopes), kind: row.kind, created_at: now(), expires_at: row.expiresAt, last_used_at: null,
      })
      .returningAll().executeTakeFirstOrThrow();
    return toToken(r);
  }

  async byHash(tokenHash: string): Promise<TokenRow | undefined> {
    const r = await this.c.q().selectFrom('api_tokens').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
    return r && toToken(r);
  }

  async listForUser(organizationId: string, userId: string): Promise<TokenRow[]> {
    const rows = await this.c.q().selectFrom('api_tokens').selectAll()
      .where('organization_id', '=', organizationId).where('user_id', '=', userId).where('kind', '=', 'api')
      .orderBy('created_at').orderBy('id')
      .execute();
    return rows.map(toToken);
  }

  async delete(organizationId: string, userId: string, id: string): Promise<boolean> {
    const res = await this.c.q().deleteFrom('api_tokens')
      .where('organization_id', '=', organizationId).where('user_id', '=', userId).where('id', '=', id)
      .executeTakeFirst();
    return res.numDeletedRows > 0n;
  }

  async touch(id: string, at: string): Promise<void> {
    await this.c.q().updateTable('api_tokens').set({ last_used_at: at }).where('id', '=', id).execute();
  }
}

class Apps implements AppsRepo {
  constructor(private readonly c: Ctx) {}

  async create(row: Omit<AppRow, 'createdAt' | 'updatedAt' | 'currentReleaseId' | 'restartGeneration'>): Promise<AppRow> {
    const at = now();
    const r = await this.c.q().insertInto('apps')
      .values({
        id: row.id, organization_id: row.organizationId, name: row.name, plan: row.plan, current_release_id: null,
        restart_generation: 0, created_at: at, updated_at: at,
      })
      .returningAll().executeTakeFirstOrThrow();
    return toApp(r);
  }

  async get(organizationId: string, nameOrId: string): Promise<AppRow | undefined> {
    const r = await this.c.q().selectFrom('apps').selectAll()
      .where('organization_id', '=', organizationId)
      .where((eb) => eb.or([eb('name', '=', nameOrId), eb('id', '=', nameOrId)]))
      .executeTakeFirst();
    return r && toApp(r);
  }

  async nameTaken(name: string): Promise<boolean> {
    const r = await this.c.q().selectFrom('apps').select('id').where('name', '=', name).executeTakeFirst();
    return r !== undefined;
  }

  async list(organizationId: string, page: { after?: string; limit?: number } = {}): Promise<AppRow[]> {
    let q = this.c.q().selectFrom('apps').selectAll().where('organization_id', '=', organizationId);
    if (page.after !== undefined) q = q.where('name', '>', page.after);
    if (page.limit !== undefined) q = q.limit(page.limit);
    const rows = await q.orderBy('name').execute();
    return rows.map(toApp);
  }

  async listAll(): Promise<AppRow[]> {
    const rows = await this.c.q().selectFrom('apps').selectAll().orderBy('created_at').orderBy('id').execute();
    return rows.map(toApp);
  }

  async update(organizationId: string, id: string, patch: Partial<Pick<AppRow, 'plan' | 'currentReleaseId' | 'restartGeneration'>>): Promise<AppRow | undefined> {
    const set = columns<AppRow, AppsTable>(patch, {
      plan: ['plan'], currentReleaseId: ['current_release_id'], restartGeneration: ['restart_generation'],
    });
    const r = await this.c.q().updateTable('apps').set({ ...set, updated_at: now() })
      .where('id', '=', id).where('organization_id', '=', organizationId)
      .returningAll().executeTakeFirst();
    return r && toApp(r);
  }

  async delete(organizationId: string, id: string): Promise<boolean> {
    return this.c.atomic(async (db) => {
      const app = await db.selectFrom('apps').select('id').where('id', '=', id).where('organization_id', '=', organizationId).executeTakeFirst();
      if (!app) return false;
      // Children first, in foreign-key order (instances → releases → builds).
      for (const table of ['webhook_deliveries', 'webhooks', 'deployments', 'deploy_settings', 'app_placements', 'volumes', 'instances', 'releases', 'image_builds', 'builds', 'config_vars', 'formations', 'events'] as const) {
        await db.deleteFrom(table).where('app_id', '=', id).where('organization_id', '=', organizationId).execute();
      }
      await db.deleteFrom('apps').where('id', '=', id).where('organization_id', '=', organizationId).execute();
      return true;
    });
  }
}

class Config implements ConfigRepo {
  constructor(private readonly c: Ctx) {}

  async get(organizationId: string, appId: string): Promise<Record<string, string>> {
    const rows = await this.c.q().selectFrom('config_vars').select(['key', 'value'])
      .where('organization_id', '=', organizationId).where('app_id', '=', appId)
      .orderBy('key')
      .execute();
    return Object.fromEntries(rows.map((r) => [r.key, r.value]));
  }

  async apply(organizationId: string, appId: string, changes: Record<string, string | null>): Promise<void> {
    const entries = Object.entries(changes);
    if (!entries.length) return;
    const removed = entries.filter(([, v]) => v === null).map(([k]) => k);
    const set = entries.filter((e): e is [string, string] => e[1] !== null);
    await this.c.atomic(async (db) => {
      await appInOrg(db, organizationId, appId);
      if (removed.length) {
        await db.deleteFrom('config_vars')
          .where('organization_id', '=', organizationId).where('app_id', '=', appId).where('key', 'in', removed)
          .execute();
      }
      if (set.length) {
        const at = now();
        await db.insertInto('config_vars')
          .values(set.map(([key, value]) => ({ organization_id: organizationId, app_id: appId, key, value, updated_at: at })))
          .onConflict((oc) => oc.columns(['app_id', 'key']).doUpdateSet((eb) => ({
            value: eb.ref('excluded.value'), updated_at: eb.ref('excluded.updated_at'),
          })))
          .execute();
      }
    });
  }
}

class Formation implements FormationRepo {
  constructor(private readonly c: Ctx) {}

  async list(organizationId: string, appId: string): Promise<FormationRow[]> {
    const rows = await this.c.q().selectFrom('formations').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId)
      .orderBy('type')
      .execute();
    return rows.map(toFormation);
  }

  async upsert(organizationId: string, appId: string, type: string, patch: { quantity?: number; command?: string | null; healthcheck?: HealthCheckT | null }): Promise<FormationRow> {
    return this.c.atomic(async (db) => {
      await appInOrg(db, organizationId, appId);
      const at = now();
      const update: Updateable<FormationsTable> = { updated_at: at };
      if (patch.quantity !== undefined) update.quantity = patch.quantity;
      if (patch.command !== undefined) update.command = patch.command;
      const healthcheck = patch.healthcheck === undefined || patch.healthcheck === null ? null : JSON.stringify(patch.healthcheck);
      if (patch.healthcheck !== undefined) update.healthcheck = healthcheck;
      const r = await db.insertInto('formations')
        .values({ organization_id: organizationId, app_id: appId, type, quantity: patch.quantity ?? 0, command: patch.command ?? null, healthcheck, updated_at: at })
        .onConflict((oc) => oc.columns(['app_id', 'type']).doUpdateSet(update).where('formations.organization_id', '=', organizationId))
        .returningAll().executeTakeFirstOrThrow();
      return toFormation(r);
    });
  }

  async remove(organizationId: string, appId: string, type: string): Promise<void> {
    await this.c.q().deleteFrom('formations')
      .where('organization_id', '=', organizationId).where('app_id', '=', appId).where('type', '=', type)
      .execute();
  }
}

class Builds implements BuildsRepo {
  constructor(private readonly c: Ctx) {}

  async create(row: Omit<BuildRow, 'createdAt' | 'finishedAt' | 'artifactDigest' | 'processTypes' | 'cacheHit' | 'error' | 'releaseId' | 'stack' | 'state'>): Promise<BuildRow> {
    const r = await this.c.q().insertInto('builds')
      .values({
        id: row.id, organization_id: row.organizationId, app_id: row.appId, state: 'pending', stack: null,
        source_digest: row.sourceDigest, artifact_digest: null, process_types: '{}', cache_hit: null, error: null,
        release_id: null, created_by: row.createdBy, created_at: now(), finished_at: null,
      })
      .returningAll().executeTakeFirstOrThrow();
    return toBuild(r);
  }

  async get(organizationId: string, appId: string, id: string): Promise<BuildRow | undefined> {
    const r = await this.c.q().selectFrom('builds').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId).where('id', '=', id)
      .executeTakeFirst();
    return r && toBuild(r);
  }

  async byId(id: string): Promise<BuildRow | undefined> {
    const r = await this.c.q().selectFrom('builds').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toBuild(r);
  }

  async list(organizationId: string, appId: string, limit?: number): Promise<BuildRow[]> {
    let q = this.c.q().selectFrom('builds').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId)
      .orderBy('created_at', 'desc').orderBy('id', 'desc');
    if (limit !== undefined) q = q.limit(limit);
    return (await q.execute()).map(toBuild);
  }

  async listUnfinished(): Promise<BuildRow[]> {
    const rows = await this.c.q().selectFrom('builds').selectAll()
      .where('state', 'in', ['pending', 'building'])
      .orderBy('created_at').orderBy('id')
      .execute();
    return rows.map(toBuild);
  }

  async update(id: string, patch: Partial<Pick<BuildRow, 'state' | 'stack' | 'artifactDigest' | 'processTypes' | 'cacheHit' | 'error' | 'releaseId' | 'finishedAt'>>): Promise<BuildRow | undefined> {
    const set = columns<BuildRow, BuildsTable>(patch, {
      state: ['state'], stack: ['stack'], artifactDigest: ['artifact_digest'], processTypes: ['process_types', (v) => JSON.stringify(v)],
      cacheHit: ['cache_hit', (v) => (v === null ? null : int(v))], error: ['error'], releaseId: ['release_id'], finishedAt: ['finished_at'],
    });
    const db = this.c.q();
    if (!Object.keys(set).length) return this.byId(id);
    const r = await db.updateTable('builds').set(set).where('id', '=', id).returningAll().executeTakeFirst();
    return r && toBuild(r);
  }
}

class Releases implements ReleasesRepo {
  constructor(private readonly c: Ctx) {}

  async create(row: Omit<ReleaseRow, 'version' | 'createdAt'>): Promise<ReleaseRow> {
    return this.c.atomic(async (db) => {
      // Writing the app row takes its lock (PostgreSQL row lock; SQLite holds the database write
      // lock from BEGIN IMMEDIATE), so two releases of one app can't read the same max. The
      // unique (app_id, version) constraint backs this up. It also checks the tenant.
      const locked = await db.updateTable('apps').set((eb) => ({ updated_at: eb.ref('updated_at') }))
        .where('id', '=', row.appId).where('organization_id', '=', row.organizationId)
        .executeTakeFirst();
      if (!locked.numUpdatedRows) throw new StoreReferenceError(`app '${row.appId}' not found`);
      const max = await db.selectFrom('releases').select((eb) => eb.fn.max('version').as('v')).where('app_id', '=', row.appId).executeTakeFirst();
      const version = count(max?.v) + 1;
      const r = await db.insertInto('releases')
        .values({
          id: row.id, organization_id: row.organizationId, app_id: row.appId, version, build_id: row.buildId, description: row.description,
          process_types: JSON.stringify(row.processTypes), artifact_digest: row.artifactDigest, config_sealed: row.configSealed,
          config_keys: JSON.stringify(row.configKeys), created_by: row.createdBy, created_at: now(),
        })
        .returningAll().executeTakeFirstOrThrow();
      return toRelease(r);
    });
  }

  async byId(organizationId: string, id: string): Promise<ReleaseRow | undefined> {
    const r = await this.c.q().selectFrom('releases').selectAll().where('organization_id', '=', organizationId).where('id', '=', id).executeTakeFirst();
    return r && toRelease(r);
  }

  async byVersion(organizationId: string, appId: string, version: number): Promise<ReleaseRow | undefined> {
    const r = await this.c.q().selectFrom('releases').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId).where('version', '=', version)
      .executeTakeFirst();
    return r && toRelease(r);
  }

  async versionsByIds(organizationId: string, ids: string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    // Chunked: SQLite caps bound parameters per statement.
    for (let i = 0; i < ids.length; i += 500) {
      const rows = await this.c.q().selectFrom('releases').select(['id', 'version'])
        .where('organization_id', '=', organizationId).where('id', 'in', ids.slice(i, i + 500)).execute();
      for (const r of rows) out.set(r.id, r.version);
    }
    return out;
  }

  async list(organizationId: string, appId: string, limit?: number): Promise<ReleaseRow[]> {
    let q = this.c.q().selectFrom('releases').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId)
      .orderBy('version', 'desc');
    if (limit !== undefined) q = q.limit(limit);
    return (await q.execute()).map(toRelease);
  }
}

const instanceColumns: ColumnSpec<InstanceRow, InstancesTable> = {
  releaseId: ['release_id'], releaseVersion: ['release_version'], processType: ['process_type'], index: ['process_index'],
  nodeId: ['node_id'], desired: ['desired'], state: ['state'], exitCode: ['exit_code'], signal: ['signal'],
  oomKilled: ['oom_killed', (v) => int(v as boolean)], restarts: ['restarts'], address: ['address'], startedAt: ['started_at'],
  restartGeneration: ['restart_generation'], lastLog: ['last_log', (v) => JSON.stringify(v)], updatedAt: ['updated_at'], stopAfter: ['stop_after'],
  placement: ['placement'],
};

class Instances implements InstancesRepo {
  constructor(private readonly c: Ctx) {}

  async create(row: Omit<InstanceRow, 'createdAt' | 'updatedAt' | 'stopAfter' | 'placement'> & { placement?: string | null }): Promise<InstanceRow> {
    const at = now();
    const r = await this.c.q().insertInto('instances')
      .values({
        id: row.id, organization_id: row.organizationId, app_id: row.appId, release_id: row.releaseId, release_version: row.releaseVersion,
        process_type: row.processType, process_index: row.index, node_id: row.nodeId, desired: row.desired, state: row.state,
        exit_code: row.exitCode, signal: row.signal, oom_killed: int(row.oomKilled), restarts: row.restarts, address: row.address,
        started_at: row.startedAt, restart_generation: row.restartGeneration, last_log: JSON.stringify(row.lastLog),
        created_at: at, updated_at: at, placement: row.placement ?? null,
      })
      .returningAll().executeTakeFirstOrThrow();
    return toInstance(r);
  }

  async get(organizationId: string, id: string): Promise<InstanceRow | undefined> {
    const r = await this.c.q().selectFrom('instances').selectAll().where('organization_id', '=', organizationId).where('id', '=', id).executeTakeFirst();
    return r && toInstance(r);
  }

  async byId(id: string): Promise<InstanceRow | undefined> {
    const r = await this.c.q().selectFrom('instances').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toInstance(r);
  }

  async listByApp(organizationId: string, appId: string): Promise<InstanceRow[]> {
    const rows = await this.c.q().selectFrom('instances').selectAll()
      .where('organization_id', '=', organizationId).where('app_id', '=', appId)
      .orderBy('process_type').orderBy('process_index').orderBy('created_at').orderBy('id')
      .execute();
    return rows.map(toInstance);
  }

  async listByNode(nodeId: string): Promise<InstanceRow[]> {
    const rows = await this.c.q().selectFrom('instances').selectAll().where('node_id', '=', nodeId).orderBy('created_at').orderBy('id').execute();
    return rows.map(toInstance);
  }

  async listActive(): Promise<InstanceRow[]> {
    const rows = await this.c.q().selectFrom('instances').selectAll()
      .where((eb) => eb.or([eb('state', '!=', 'stopped'), eb('desired', '!=', 'stopped')]))
      .orderBy('created_at').orderBy('id')
      .execute();
    return rows.map(toInstance);
  }

  async update(id: string, patch: Partial<Omit<InstanceRow, 'id' | 'appId' | 'organizationId' | 'createdAt'>>): Promise<InstanceRow | undefined> {
    const set = columns<InstanceRow, InstancesTable>(patch, instanceColumns);
    const r = await this.c.q().updateTable('instances').set({ updated_at: now(), ...set }).where('id', '=', id).returningAll().executeTakeFirst();
    return r && toInstance(r);
  }

  async delete(id: string): Promise<void> {
    await this.c.q().deleteFrom('instances').where('id', '=', id).execute();
  }
}

class Events implements EventsRepo {
  constructor(private readonly c: Ctx) {}

  async append(row: Omit<EventRow, 'createdAt'> & { createdAt?: string }): Promise<EventRow> {
    const r = await this.c.q().insertInto('events')
      .values({
        id: row.id, organization_id: row.organizationId, app_id: row.appId, type: row.type, message: row.message,
        data: JSON.stringify(row.data ?? {}), created_at: row.createdAt ?? now(),
      })
      .returningAll().executeTakeFirstOrThrow();
    return toEvent(r);
  }

  /** Newest first; 100 unless `limit` says otherwise. */
  async list(organizationId: string, opts: { appId?: string; limit?: number } = {}): Promise<EventRow[]> {
    let q = this.c.q().selectFrom('events').selectAll().where('organization_id', '=', organizationId);
    if (opts.appId !== undefined) q = q.where('app_id', '=', opts.appId);
    const rows = await q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(opts.limit ?? 100).execute();
    return rows.map(toEvent);
  }
}

class Nodes implements NodesRepo {
  constructor(private readonly c: Ctx) {}

  async upsert(row: NodeHeartbeatRow): Promise<NodeRow> {
    const r = await this.c.q().insertInto('nodes')
      .values({
        id: row.id, name: row.name, state: row.state, isolation: row.isolation, cpus: row.cpus, memory_mb: row.memoryMb,
        last_heartbeat_at: row.lastHeartbeatAt, created_at: now(),
        disk_mb: row.diskMb ?? null, agent_labels: JSON.stringify(row.agentLabels ?? {}), labels: '{}', taints: '[]', operator_state: null,
        cluster_endpoint: row.clusterEndpoint ?? null,
      })
      .onConflict((oc) => oc.column('id').doUpdateSet((eb) => ({
        name: eb.ref('excluded.name'), state: eb.ref('excluded.state'), isolation: eb.ref('excluded.isolation'),
        cpus: eb.ref('excluded.cpus'), memory_mb: eb.ref('excluded.memory_mb'), last_heartbeat_at: eb.ref('excluded.last_heartbeat_at'),
        // The agent's own facts only: operator labels, taints and state survive heartbeats.
        disk_mb: eb.ref('excluded.disk_mb'), agent_labels: eb.ref('excluded.agent_labels'), cluster_endpoint: eb.ref('excluded.cluster_endpoint'),
      })))
      .returningAll().executeTakeFirstOrThrow();
    return toNode(r);
  }

  async byId(id: string): Promise<NodeRow | undefined> {
    const r = await this.c.q().selectFrom('nodes').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toNode(r);
  }

  async list(): Promise<NodeRow[]> {
    const rows = await this.c.q().selectFrom('nodes').selectAll().orderBy('name').orderBy('id').execute();
    return rows.map(toNode);
  }

  async setState(id: string, state: NodeState): Promise<void> {
    await this.c.q().updateTable('nodes').set({ state }).where('id', '=', id).execute();
  }

  async updateSpec(id: string, patch: Partial<Pick<NodeRow, 'labels' | 'taints' | 'operatorState'>>): Promise<NodeRow | undefined> {
    const set: Updateable<NodesTable> = {};
    if (patch.labels !== undefined) set.labels = JSON.stringify(patch.labels);
    if (patch.taints !== undefined) set.taints = JSON.stringify(patch.taints);
    if (patch.operatorState !== undefined) set.operator_state = patch.operatorState;
    if (Object.keys(set).length === 0) return this.byId(id);
    const r = await this.c.q().updateTable('nodes').set(set).where('id', '=', id).returningAll().executeTakeFirst();
    return r && toNode(r);
  }

  async delete(id: string): Promise<boolean> {
    const r = await this.c.q().deleteFrom('nodes').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }
}

class OrganizationKeys implements OrganizationKeysRepo {
  constructor(private readonly c: Ctx) {}

  async get(organizationId: string): Promise<OrganizationKeyRow | undefined> {
    const r = await this.c.q().selectFrom('organization_keys').selectAll().where('organization_id', '=', organizationId).executeTakeFirst();
    return r && toOrgKey(r);
  }

  async createIfAbsent(row: Omit<OrganizationKeyRow, 'createdAt'>): Promise<OrganizationKeyRow> {
    return this.c.atomic(async (db) => {
      await db.insertInto('organization_keys')
        .values({ organization_id: row.organizationId, provider: row.provider, key_id: row.keyId, wrapped_key: row.wrappedKey, created_at: now() })
        .onConflict((oc) => oc.column('organization_id').doNothing())
        .execute();
      const r = await db.selectFrom('organization_keys').selectAll().where('organization_id', '=', row.organizationId).executeTakeFirstOrThrow();
      return toOrgKey(r);
    });
  }
}
