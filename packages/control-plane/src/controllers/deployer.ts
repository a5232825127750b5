import type { Logger } from 'pino';
import { DEFAULT_DEPLOY_SETTINGS, DEFAULT_PLAN, PLANS, instanceMachine, isStatusReport, newId, nodeState, routeTableDelta, splitAssignments, splitRouteTable, subjects } from '@shellwego/core';
import type { AppPlacement, AssignmentsMessage, DeploySettingsT, EventT, HeartbeatMessage, InstanceSpec, InstanceStatusMessage, InstanceStatusReport, Readiness, ReconcileRequestMessage, RouterStatsMessage, RouteTableMessage } from '@shellwego/core';
import type { Bus, Subscription } from '@shellwego/bus';
import { createHash } from 'node:crypto';
import type { AppRow, DeploymentRow, FormationRow, InstanceRow, NodeAllocation, NodeRow, ReleaseRow, Store, VolumeRow } from '@shellwego/store';
import type { SecretBox } from '../secrets.ts';
import type { EventRecorder } from '../events.ts';
import type { LogStore } from '../logs.ts';
import type { ControlPlaneSettings } from '../context.ts';
import { metrics } from '../metrics.ts';
import { agentGeneration, planApp, routeBackends } from './plan.ts';
import type { PlanDeployment } from './plan.ts';
import { DeploymentController } from './deployments.ts';
import { clusterEndpointOf, clusterNodes, withNodes } from './route-nodes.ts';
import { domainRoutes } from '../domains/routes.ts';
import { DEFAULT_SCHEDULING, leavingNodes, place } from './scheduler.ts';
import { NodeReports } from './node-reports.ts';
import type { NodeLoad } from './scheduler.ts';

const WEB_PORT = 5000;
/** A node whose last heartbeat is older than this is down (agents beat every 2 s). */
export const DEFAULT_NODE_DOWN_AFTER_MS = 10_000;

/**
 * The deployer is the control plane's reconcile loop: it turns desired state (current release,
 * formation) into instance rows placed on nodes, publishes each node's assignments and the
 * router's table, and folds the agents' status reports back into the store. Every pass is
 * idempotent and level-triggered; a periodic pass repairs anything a lost message left behind.
 */
export class Deployer {
  private subs: Subscription[] = [];
  private timer: NodeJS.Timeout | null = null;
  private lock: Promise<void> = Promise.resolve();
  private generation = Date.now() * 1000;
  private routeVersion = Date.now() * 1000;
  /** Hash of the last route table published (not the table: at 10,000 apps it is megabytes). */
  private lastRoutes = '';
  private lastRouteTable: RouteTableMessage | null = null;
  /** Heartbeats missed while this control plane was down do not make a node dead. */
  private readonly startedAt = Date.now();
  private nodeTimer: NodeJS.Timeout | null = null;
  private nodeCheck: Promise<void> | null = null;
  private soonTimer: NodeJS.Timeout | null = null;
  /** Per node, what was last published to it: the set's digest, its generation and when. */
  private published = new Map<string, { key: string; generation: number; at: number }>();
  /**
   * Nodes whose heartbeats say which generation they act on: a pass sends them a set only when
   * it changed, and a heartbeat that shows one missed gets it again (`resend`). Others get
   * every node's set on every pass, as before heartbeats carried it.
   */
  private reporting = new Set<string>();
  private resend = new Set<string>();
  /** When the route table last went out whole, and whether a node's router was seen behind it. */
  private routesSentAt = 0;
  private routesBehind: 'resend' | 'new version' | null = null;
  // ---------- scale (issue 4): caches and coalesced publishing ----------
  /** Per app, what specs and routes need besides instance rows; refreshed by every reconcile of the app and every full pass. */
  private appInfo = new Map<string, AppInfo>();
  /** Releases are immutable: process types and decrypted env by id (bounded; least recently used goes first). */
  private releaseInfo = new Map<string, ReleaseInfo>();
  /** The router's entry of each app on the base domain, rebuilt only for apps that changed. */
  private routeEntries = new Map<string, RouteEntry>();
  /** Moves with every change of an entry: stands for all of them in the table's key. */
  private entriesRevision = 0;
  /** What changed since the last publish: apps (routes) and nodes (assignments). */
  private dirtyApps = new Map<string, string>();
  private dirtyNodes = new Set<string>();
  private flushTimer: NodeJS.Timeout | null = null;
  private flushDone: Promise<void> | null = null;
  private flushResolve: (() => void) | null = null;
  private lastFlushMs = 0;
  /** Publishes one at a time, each from reads made inside it: an older read never overwrites a newer one. */
  private publishing: Promise<void> = Promise.resolve();
  /** Counts publishes, so a pass knows whether its reads are still the latest state published. */
  private publishSeq = 0;
  /** Nodes and what they hold, for placement: read once per pass (or second), kept up to date by this process's placements. */
  private cluster: { at: number; nodes: NodeRow[]; alloc: Map<string, NodeAllocation> } | null = null;
  private pass: Promise<void> | null = null;
  private lastPassMs = 0;
  private nextPass: Promise<void> | null = null;
  /** Timed passes per app (drain deadlines, canary steps, health deadlines): appId → [at, timer]. */
  private wakeups = new Map<string, [number, NodeJS.Timeout]>();
  private stopped = false;
  readonly deployments: DeploymentController;
  /**
   * Only the leading control plane (ADR 0012) runs passes and writes instance rows; another one
   * serving the API asks the leader over the bus instead.
   */
  private leading = false;
  private readonly reports: NodeReports;

  constructor(
    private readonly deps: { store: Store; bus: Bus; secrets: SecretBox; events: EventRecorder; logs: LogStore; settings: ControlPlaneSettings; logger: Logger },
    private readonly intervalMs = 5000,
    private readonly nodeDownAfterMs = DEFAULT_NODE_DOWN_AFTER_MS,
    private readonly catchUpGraceMs = CATCH_UP_GRACE_MS,
  ) {
    this.reports = new NodeReports({ store: deps.store, logger: deps.logger });
    this.deployments = new DeploymentController({
      store: deps.store, secrets: deps.secrets, events: deps.events, logs: deps.logs, logger: deps.logger.child({ part: 'deployments' }),
      wake: (organizationId, appId, atMs) => this.wake(organizationId, appId, atMs),
    });
  }

  /** Reconcile the app again at `atMs` (or soon): the earliest requested time wins. */
  wake(organizationId: string, appId: string, atMs = Date.now()): void {
    if (this.stopped) return;
    const existing = this.wakeups.get(appId);
    if (existing && existing[0] <= atMs) return;
    if (existing) clearTimeout(existing[1]);
    const timer = setTimeout(() => {
      this.wakeups.delete(appId);
      this.reconcileApp(organizationId, appId).catch((err) => this.deps.logger.error({ err, app: appId }, 'timed reconcile failed'));
    }, Math.max(0, atMs - Date.now()) + 5);
    timer.unref();
    this.wakeups.set(appId, [atMs, timer]);
  }

  start(): void {
    const { bus } = this.deps;
    this.stopped = false;
    this.leading = true;
    this.subs.push(
      bus.subscribe<ReconcileRequestMessage>(subjects.reconcileRequest, (m) =>
        m.organizationId && m.appId ? this.reconcileApp(m.organizationId, m.appId) : this.reconcileAll()),
      // Bound to the sender: a message is dropped unless its nodeId is the node of its subject.
      bus.subscribe<HeartbeatMessage>(subjects.allHeartbeats, (m, subject) => (this.reports.bound(subject, m?.nodeId, 'heartbeat') ? this.onHeartbeat(m) : undefined)),
      // A queue group: with several control planes (and a durable bus) one consumer is shared, so a
      // control plane that leads later does not replay statuses the leader before it handled.
      bus.subscribe<InstanceStatusMessage | InstanceStatusReport>(subjects.allInstanceStatus, (m, subject) => {
        if (!this.reports.bound(subject, m?.nodeId, 'status report')) return;
        return isStatusReport(m) ? this.onStatusReport(m) : this.onInstanceStatus(m);
      }, { queue: 'control-plane' }),
      bus.subscribe(subjects.routesRequest, () => this.publishRoutes(true)),
      bus.subscribe<RouterStatsMessage>(subjects.allRouterStats, (m, subject) => { const ok = this.reports.routerStats(subject, m, this.lastRouteTable); if (ok) this.deployments.onRouterStats(ok); }),
    );
    this.schedulePass();
    // Node failures are looked for every second, not every pass: failover time is the timeout plus this.
    this.nodeTimer = setInterval(() => void this.markDeadNodes().catch((err) => this.deps.logger.error({ err }, 'node check failed')), Math.min(1000, this.nodeDownAfterMs));
    this.nodeTimer.unref();
  }

  async stop(): Promise<void> {
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
    if (this.timer) clearTimeout(this.timer);
    if (this.nodeTimer) clearInterval(this.nodeTimer);
    if (this.soonTimer) clearTimeout(this.soonTimer);
    this.soonTimer = null;
    this.stopped = true;
    this.leading = false;
    for (const [, t] of this.wakeups.values()) clearTimeout(t);
    this.wakeups.clear();
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    this.flushResolve?.();
    await this.lock;
    await this.publishing;
  }

  /** Serialises reconcile passes: one writer of instance rows at a time in this process. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn);
    this.lock = run.then(() => undefined, () => undefined);
    return run;
  }

  /**
   * The periodic pass: every `intervalMs`, or ten times as long as the last pass took if that is
   * longer. It is the repair (changes go out as they happen), and at 10,000 apps a pass takes
   * seconds: run back to back, its reads would be most of the control plane's work and memory.
   */
  private schedulePass(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.reconcileAll().catch((err) => this.deps.logger.error({ err }, 'reconcile pass failed')).finally(() => this.schedulePass());
    }, Math.max(this.intervalMs, PASS_SHARE * this.lastPassMs));
    this.timer.unref();
  }

  /** A full pass; one at a time: asked for during one, one more runs after it (level-triggered, so one is enough). */
  reconcileAll(): Promise<void> {
    if (!this.leading) return this.requestReconcile(null, null);
    if (!this.pass) {
      this.pass = this.fullPass().finally(() => {
        this.pass = null;
      });
      return this.pass;
    }
    this.nextPass ??= this.pass.catch(() => undefined).then(() => {
      this.nextPass = null;
      return this.reconcileAll();
    });
    return this.nextPass;
  }

  private async fullPass(): Promise<void> {
    const t0 = performance.now();
    await this.fullPassOnce();
    this.lastPassMs = performance.now() - t0;
    metrics.fullPasses.observe(this.lastPassMs / 1000);
  }

  private async fullPassOnce(): Promise<void> {
    await this.markDeadNodes();
    const { store } = this.deps;
    // Apps a page at a time, then a full reconcile only for those not settled: at 10,000 apps a
    // pass is a few queries per page, not several per app, and never holds every row at once.
    const [nodes, alloc] = await Promise.all([store.nodes.list(), store.scheduling.allocations()]);
    // Nodes some instances may have to leave (draining, NoExecute taints): their apps get a full reconcile.
    const leavingAny = new Set(nodes.filter((n) => nodeState(n.state, n.operatorState) === 'draining' || n.taints.some((t) => t.effect === 'NoExecute')).map((n) => n.id));
    this.cluster = { at: Date.now(), nodes, alloc };
    const now = Date.now();
    const present = new Set<string>();
    for await (const { page, byApp, activeDeployments, seq } of this.passPages()) {
      // Level-triggered routes from these reads, unless a publish began meanwhile (it may carry
      // newer state; whatever changed is marked for the next publish anyway).
      if (seq === this.publishSeq) for (const app of page.apps) this.setRouteEntry(app.id, this.routeEntry(app, byApp.get(app.id) ?? [], activeDeployments.get(app.id)));
      const targetOf = (app: AppRow) => {
        const d = activeDeployments.get(app.id);
        return d?.state === 'pending' ? d.fromReleaseId : app.currentReleaseId;
      };
      // Process types of releases already opened for assignments come from memory (releases never change).
      const fetched = await store.scheduling.processTypes([...new Set(page.apps.map(targetOf))].filter((id): id is string => id !== null && !this.releaseInfo.has(id)));
      const types = { get: (id: string) => this.releaseInfo.get(id)?.processTypes ?? fetched.get(id) };
      for (const app of page.apps) {
        present.add(app.id);
        const formation = page.formations.get(app.id) ?? [];
        const settings = page.settings.get(app.id) ?? DEFAULT_DEPLOY_SETTINGS;
        const instances = byApp.get(app.id) ?? [];
        const target = targetOf(app);
        const settled = !activeDeployments.has(app.id) && !page.withStoppedRows.has(app.id) &&
          instances.every((i) => i.desired === 'running' && i.stopAfter === null && i.nodeId !== null && !leavingAny.has(i.nodeId) && !i.placement?.startsWith('leaving ') && !i.placement?.startsWith('kept on ')) &&
          noChanges(planApp({
            now, targetReleaseId: target, processTypes: withoutReleasePhase((target && types.get(target)) || {}), formation, instances, deployment: null, settings,
          }));
        if (!settled) await this.reconcileApp(app.organizationId, app.id, { publish: false });
      }
    }
    for (const id of this.appInfo.keys()) if (!present.has(id)) this.appInfo.delete(id);
    await this.dropGoneEntries(present);
    // Level-triggered: every node's set where it changed (or to nodes that do not report what
    // they hold), and the route table where it changed (else now and then whole, as a keepalive).
    await this.publishAll({ routes: 'pass', assignments: 'pass' }, { entriesFresh: true });
  }

  /**
   * Every app, `PASS_PAGE` at a time (a page's rows are garbage young, before V8 moves them to its
   * old space), with its instances grouped and its active deployment; each app's cached rows are
   * refreshed on the way. `seq`: the publish count before the page was read.
   */
  private async *passPages() {
    for (let after: string | null = null; ;) {
      const seq = this.publishSeq;
      const page = await this.deps.store.scheduling.passPage(after, PASS_PAGE);
      if (page.apps.length === 0) return;
      after = page.apps[page.apps.length - 1].id;
      for (const app of page.apps) this.rememberApp(app, page.formations.get(app.id) ?? [], page.settings.get(app.id) ?? DEFAULT_DEPLOY_SETTINGS);
      yield { page, seq, byApp: groupBy(page.instances, (i) => i.appId), activeDeployments: new Map(page.deployments.map((d) => [d.appId, d])) };
    }
  }

  /** Entries of apps a page-by-page read did not see: the app is gone, or was created after its page was read. */
  private async dropGoneEntries(seen: Set<string>): Promise<void> {
    for (const [id, e] of this.routeEntries) {
      if (seen.has(id)) continue;
      if (!await this.deps.store.apps.get(e.organizationId, id)) this.setRouteEntry(id, null);
    }
  }

  /**
   * Bring one app's instances in line with its target release, formation and active deployment.
   * `publish`: true (default) publishes what changed in the next coalesced tick and waits for it;
   * 'soon' does not wait (status reports, which arrive one after another); false leaves it to the caller.
   */
  async reconcileApp(organizationId: string, appId: string, opts: { publish?: boolean | 'soon' } = {}): Promise<void> {
    if (!this.leading) return this.requestReconcile(organizationId, appId);
    await this.exclusive(async () => {
      metrics.reconciles.inc();
      const { store } = this.deps;
      const app = await store.apps.get(organizationId, appId);
      if (!app) {
        // Deleted: its route goes with the next publish.
        this.appInfo.delete(appId);
        this.markDirty(organizationId, appId, []);
        return;
      }
      const [deployment, settings, formation, instances, placement, cluster, volumes] = await Promise.all([
        store.deployments.active(organizationId, appId), this.settingsOf(app), store.formation.list(organizationId, appId), store.instances.listByApp(organizationId, appId),
        store.placements.get(organizationId, appId), this.clusterState(), store.volumes.list(organizationId, appId),
      ]);
      this.rememberApp(app, formation, settings);
      const nodes = cluster.nodes;
      // Instances on draining nodes (or nodes whose NoExecute taint the app does not tolerate) are replaced elsewhere first.
      const leaving = leavingNodes(nodes.map((n) => ({ id: n.id, state: nodeState(n.state, n.operatorState), taints: n.taints })), placement);
      // Process types whose volumes live on a node: their instances stay there (a note says why when the node is left).
      const pinned = pinnedTypes(volumes);
      const held = instances.filter((i) => i.desired === 'running' && i.stopAfter === null && i.nodeId !== null &&
        (leaving.has(i.nodeId) ? pinned.get(i.processType) === i.nodeId && !i.placement?.startsWith('kept on ') : i.placement?.startsWith('kept on '))).length;
      // During the release phase the old release stays the target: no traffic moves until it succeeds.
      const targetId = deployment?.state === 'pending' ? deployment.fromReleaseId : app.currentReleaseId;
      const release = targetId ? await store.releases.byId(organizationId, targetId) : undefined;
      const now = Date.now();
      const plan = planApp({
        now, targetReleaseId: release?.id ?? null, processTypes: withoutReleasePhase(release?.processTypes ?? {}),
        formation, instances, deployment: deployment ? planDeployment(deployment) : null, settings, leavingNodes: new Set(leaving.keys()), pinned,
      });
      const unplaced = instances.filter((i) => i.desired === 'running' && i.nodeId === null && i.releaseId === release?.id);
      const changes = plan.create.length + plan.drain.length + plan.stop.length + plan.forget.length + unplaced.length + held;
      // Assignments change only where instances were placed, stopped or forgotten (or a deployment moves them).
      const touched = new Set<string>();
      if (changes > 0) for (const n of await this.apply(app, release, instances, plan, unplaced, (deployment?.settings ?? settings).drainSeconds, placement, leaving, volumes)) touched.add(n);
      if (changes > 0 || deployment) for (const i of instances) if (i.nodeId) touched.add(i.nodeId);
      this.markDirty(organizationId, appId, touched);
      if (deployment) {
        const after = changes > 0 ? await store.instances.listByApp(organizationId, appId) : instances;
        const webWanted = formation.find((f) => f.type === 'web')?.quantity ?? 0;
        await this.deployments.observe(app, deployment, plan, after, webWanted);
      }
      // A draining instance is stopped when its time is up.
      const nextStop = Math.min(...instances.filter((i) => i.desired === 'running' && i.stopAfter !== null).map((i) => Date.parse(i.stopAfter!)), ...plan.drain.map(() => now + settings.drainSeconds * 1000));
      if (Number.isFinite(nextStop)) this.wake(organizationId, appId, nextStop);
    });
    // Routes first (in the same tick): a stopping instance leaves the router before the agent signals it.
    if (opts.publish === 'soon') void this.publishSoon();
    else if (opts.publish !== false) await this.publishSoon();
  }

  /** Writes the plan in one transaction; returns the nodes whose assignments changed. */
  private async apply(app: AppRow, release: ReleaseRow | undefined, instances: InstanceRow[], plan: ReturnType<typeof planApp>, unplaced: InstanceRow[], drainSeconds: number,
    placement: AppPlacement | undefined, leaving: Map<string, string>, volumes: VolumeRow[]): Promise<Set<string>> {
    const { store } = this.deps;
    const organizationId = app.organizationId;
    const cluster = await this.clusterState();
    const loads = this.nodeLoads(cluster, instances);
    const plan_ = PLANS[app.plan] ?? PLANS[DEFAULT_PLAN];
    const scheduling = this.deps.settings.scheduling ?? DEFAULT_SCHEDULING;
    const touched = new Set<string>();
    const hold = (nodeId: string, sign: 1 | -1) => {
      const a = cluster.alloc.get(nodeId) ?? { nodeId, memoryMb: 0, cpus: 0, instances: 0 };
      cluster.alloc.set(nodeId, { nodeId, memoryMb: a.memoryMb + sign * plan_.memoryMb, cpus: a.cpus + sign * plan_.cpus, instances: a.instances + sign });
    };
    /**
     * Chooses a node from this process's view, then claims it in the store (a compare-and-set on
     * the node's free capacity, inside this transaction): if another control plane took the room
     * meanwhile, the store's figures replace the view and the next best node is tried.
     */
    // Volume locality: this view of the app's volumes follows the pins its own claims make (and those it loses to).
    const vols = volumes.map((v) => ({ ...v }));
    const placeOne = async (tx: Store, instanceId: string, type: string): Promise<{ nodeId: string | null; reason: string } | null> => {
      const mine = vols.filter((v) => v.processType === type);
      for (let attempt = 0; attempt <= loads.length + mine.length; attempt++) {
        const p = place(loads, { memoryMb: plan_.memoryMb, cpus: plan_.cpus, placement, settings: scheduling, volumes: mine });
        if (!p.nodeId) return p;
        const n = loads.find((l) => l.id === p.nodeId)!;
        const r = await tx.scheduling.claim({
          instanceId, nodeId: n.id, memoryMb: plan_.memoryMb, cpus: plan_.cpus, cpuOvercommit: scheduling.cpuOvercommit, placement: p.reason, volumeIds: mine.map((v) => v.id),
        });
        if (r.placed) {
          for (const v of mine) v.nodeId ??= n.id;
          n.allocatedMb += plan_.memoryMb;
          n.allocatedCpus += plan_.cpus;
          n.sameApp += 1;
          hold(n.id, 1);
          touched.add(n.id);
          return p;
        }
        this.deps.logger.info({ instance: instanceId, node: n.id, reason: r.reason }, 'placement lost a race for a node: choosing again');
        if (r.pinned) {
          for (const v of mine) v.nodeId = r.pinned[v.id] ?? v.nodeId;
          continue;
        }
        if (r.allocation) {
          n.allocatedMb = r.allocation.memoryMb;
          n.allocatedCpus = r.allocation.cpus;
          cluster.alloc.set(n.id, r.allocation);
          continue;
        }
        const row = await tx.nodes.byId(n.id);
        if (!row) loads.splice(loads.indexOf(n), 1);
        else if (nodeState(row.state, row.operatorState) !== 'ready') n.state = nodeState(row.state, row.operatorState);
        else return null; // the instance itself is no longer waiting: nothing to place
      }
      return null;
    };
    const nameOf = (id: string) => loads.find((l) => l.id === id)?.name ?? id;
    const created: { row: InstanceRow; pending: string | null }[] = [];
    const stopAfter = new Date(Date.now() + drainSeconds * 1000).toISOString();
    await store.transaction(async (tx) => {
      for (const c of plan.create) {
        const row = await tx.instances.create({
          id: newId('ins'), appId: app.id, organizationId, releaseId: release!.id, releaseVersion: release!.version, processType: c.type, index: c.index,
          nodeId: null, desired: 'running', state: 'pending', exitCode: null, signal: null, oomKilled: false, restarts: 0, address: null,
          startedAt: null, restartGeneration: 0, lastLog: [], placement: null,
        });
        const p = await placeOne(tx, row.id, c.type);
        if (p && !p.nodeId) await tx.instances.update(row.id, { lastLog: [`pending: ${p.reason}`], placement: p.reason });
        created.push({ row, pending: p && !p.nodeId ? `pending: ${p.reason}` : null });
      }
      for (const i of unplaced) {
        const p = await placeOne(tx, i.id, i.processType);
        if (p && !p.nodeId && i.placement !== p.reason) await tx.instances.update(i.id, { lastLog: [`pending: ${p.reason}`], placement: p.reason });
      }
      // Instances on a node they must leave say so until their replacement is ready elsewhere.
      for (const i of instances) {
        if (i.desired !== 'running' || i.stopAfter !== null || i.nodeId === null) continue;
        const held = leaving.has(i.nodeId) ? vols.find((v) => v.processType === i.processType && v.nodeId === i.nodeId) : undefined;
        const note = held
          ? `kept on ${nameOf(i.nodeId)} (${leaving.get(i.nodeId)}): volume "${held.name}" lives there, so it cannot move`
          : leaving.has(i.nodeId)
          ? `leaving ${nameOf(i.nodeId)} (${leaving.get(i.nodeId)}): keeps running until a replacement is ready elsewhere`
          : i.placement?.startsWith('leaving ') || i.placement?.startsWith('kept on ') ? `stays on ${nameOf(i.nodeId)}: the node is back in service` : i.placement;
        if (i.placement !== note) await tx.instances.update(i.id, { placement: note });
      }
      for (const id of plan.drain) await tx.instances.update(id, { stopAfter });
      for (const id of plan.stop) await tx.instances.update(id, { desired: 'stopped' });
      for (const id of plan.forget) await tx.instances.delete(id);
    });
    const byId = new Map(instances.map((i) => [i.id, i]));
    for (const id of [...plan.drain, ...plan.stop, ...plan.forget]) {
      const i = byId.get(id);
      if (i?.nodeId) touched.add(i.nodeId);
    }
    // What stopped no longer holds room on its node (in this process's view; the store counts it anyway).
    for (const id of plan.stop) {
      const i = byId.get(id);
      if (i?.nodeId && i.desired === 'running') hold(i.nodeId, -1);
    }
    for (const { row: i, pending } of created) this.deps.logs.platform(app.id, `Starting ${i.processType}.${i.index} (v${i.releaseVersion})${pending ? ` — ${pending}` : ''}`);
    for (const id of plan.drain) {
      const i = byId.get(id);
      if (i) this.deps.logs.platform(app.id, `Draining ${i.processType}.${i.index} (v${i.releaseVersion}): out of the router, stopping in ${drainSeconds}s`);
    }
    for (const id of plan.stop) {
      const i = byId.get(id);
      if (i) this.deps.logs.platform(app.id, `Stopping ${i.processType}.${i.index} (v${i.releaseVersion})`);
    }
    return touched;
  }

  private async settingsOf(app: AppRow): Promise<DeploySettingsT> {
    return (await this.deps.store.deployments.getSettings(app.organizationId, app.id)) ?? DEFAULT_DEPLOY_SETTINGS;
  }

  /** Nodes and what they hold: read at most once a second (and at every pass), then kept up to date by this process's placements. */
  private async clusterState(): Promise<{ at: number; nodes: NodeRow[]; alloc: Map<string, NodeAllocation> }> {
    if (this.cluster && Date.now() - this.cluster.at < 1000) return this.cluster;
    const [nodes, alloc] = await Promise.all([this.deps.store.nodes.list(), this.deps.store.scheduling.allocations()]);
    this.cluster = { at: Date.now(), nodes, alloc };
    return this.cluster;
  }

  /** The scheduler's view of every node for one app (`instances`: the app's rows). */
  private nodeLoads(cluster: { nodes: NodeRow[]; alloc: Map<string, NodeAllocation> }, instances: InstanceRow[]): NodeLoad[] {
    const sameApp = new Map<string, number>();
    for (const i of instances) if (i.nodeId && i.desired === 'running') sameApp.set(i.nodeId, (sameApp.get(i.nodeId) ?? 0) + 1);
    return cluster.nodes.map((n) => ({
      id: n.id,
      name: n.name,
      state: nodeState(n.state, n.operatorState),
      cpus: n.cpus,
      memoryMb: n.memoryMb,
      allocatedMb: cluster.alloc.get(n.id)?.memoryMb ?? 0,
      allocatedCpus: cluster.alloc.get(n.id)?.cpus ?? 0,
      labels: { ...n.agentLabels, ...n.labels },
      taints: n.taints,
      sameApp: sameApp.get(n.id) ?? 0,
    }));
  }

  // ---------- agents ----------

  private async onHeartbeat(m: HeartbeatMessage): Promise<void> {
    const { store } = this.deps;
    const existing = await store.nodes.byId(m.nodeId);
    if (!existing && (await store.natsUsers.byNode(m.nodeId)).some((u) => u.revokedAt !== null)) {
      // A removed node (its NATS users revoked) that got a heartbeat through before nats-server
      // applied the revocation, e.g. in the moment after nats-server restarts: it stays removed.
      this.reports.once(`removed ${m.nodeId}`, { node: m.nodeId }, 'heartbeat of a removed node (NATS user revoked): ignored');
      return;
    }
    const endpoint = clusterEndpointOf(m);
    this.catchUp(m);
    await store.nodes.upsert({
      id: m.nodeId, name: m.name, state: 'ready', isolation: m.isolation, cpus: m.capacity.cpus, memoryMb: m.capacity.memoryMb, lastHeartbeatAt: new Date().toISOString(),
      diskMb: m.capacity.diskMb ?? null, agentLabels: m.labels ?? {}, clusterEndpoint: endpoint,
    });
    if (existing && existing.state === 'ready' && existing.clusterEndpoint !== endpoint) {
      // A node restarted quicker than the down timeout on another cluster port: routers dial it,
      // and take its hops (ADR 0022), only once the table names the new endpoint.
      this.deps.logger.info({ node: m.nodeId, endpoint }, 'node cluster endpoint changed');
      this.soon();
    } else if (!existing || existing.state !== 'ready') {
      this.deps.logger.info({ node: m.nodeId, name: m.name }, existing ? 'node is back' : 'node joined');
      // A (re)appearing node gets its assignments, and pending instances a place — in a pass of
      // its own: run inline, a long pass would hold up the heartbeats queued behind this one, and
      // live nodes would be marked down for silence that was ours (bench/scale.ts found it).
      this.soon();
    }
  }

  /**
   * A node behind what was published to it (a message lost on the bus, an agent restarted
   * quicker than the down timeout) gets its set, or the route table, again at once: settled
   * state is not resent on every pass (at 10,000 apps that was megabytes every 5 s).
   */
  private catchUp(m: HeartbeatMessage): void {
    if (!this.leading) return;
    const now = Date.now();
    const got = reportedNumber(m.assignmentsGeneration);
    if (got !== undefined) {
      this.reporting.add(m.nodeId);
      const sent = this.published.get(m.nodeId);
      // Newer than ours (another control plane led meanwhile, its clock ahead): ours must pass it or the agent ignores them.
      if (got !== null && got > this.generation) this.generation = got;
      if (sent && got !== sent.generation && now - sent.at > this.catchUpGraceMs) {
        this.resend.add(m.nodeId);
        void this.publishSoon();
      }
    }
    const held = reportedNumber(m.routesVersion);
    const table = this.lastRouteTable;
    if (held !== undefined && table && held !== table.version && now - this.routesSentAt > this.catchUpGraceMs) {
      // A router holding a newer version than ours refuses ours: the next version passes it.
      const ahead = held !== null && held > table.version;
      if (ahead && held > this.routeVersion) this.routeVersion = held;
      this.routesBehind = ahead || this.routesBehind === 'new version' ? 'new version' : 'resend';
      void this.publishSoon();
    }
  }

  /** One full pass shortly, however many nodes asked for it meanwhile. */
  private soon(): void {
    if (this.soonTimer || this.stopped) return;
    this.soonTimer = setTimeout(() => {
      this.soonTimer = null;
      this.reconcileAll().catch((err) => this.deps.logger.error({ err }, 'reconcile pass failed'));
    }, 50);
    this.soonTimer.unref();
  }

  /**
   * A node silent for longer than the timeout is down: its instances are written off (stopped in
   * the store) and replaced on other nodes at once. If it comes back, its assignments no longer
   * list them, so its agent stops them: a singleton never runs twice for long.
   */
  private markDeadNodes(): Promise<void> {
    // The periodic check and a reconcile pass may ask at once: one check at a time.
    this.nodeCheck ??= this.checkNodes().finally(() => {
      this.nodeCheck = null;
    });
    return this.nodeCheck;
  }

  private async checkNodes(): Promise<void> {
    const { store } = this.deps;
    const now = Date.now();
    // A control plane that just started heard no heartbeat yet: give nodes one timeout first.
    if (now - this.startedAt < this.nodeDownAfterMs) return;
    for (const n of await store.nodes.list()) {
      if (n.state !== 'ready' || !n.lastHeartbeatAt || now - Date.parse(n.lastHeartbeatAt) <= this.nodeDownAfterMs) continue;
      // The list was read before the nodes ahead of this one were handled (seconds, at scale):
      // a heartbeat that came meanwhile keeps the node up.
      if (!await store.scheduling.markDown(n.id, n.lastHeartbeatAt)) continue;
      const silent = ((now - Date.parse(n.lastHeartbeatAt)) / 1000).toFixed(1);
      this.deps.logger.warn({ node: n.id, silentSeconds: silent }, 'node missed heartbeats: marked down, replacing its instances');
      const lost = (await store.instances.listByNode(n.id)).filter((i) => i.desired === 'running');
      const apps = new Map<string, InstanceRow[]>();
      for (const i of lost) {
        await store.instances.update(i.id, { desired: 'stopped', state: 'stopped', address: null, lastLog: [`node ${n.name} stopped answering (${silent}s without a heartbeat): replaced on another node`] });
        apps.set(i.appId, [...(apps.get(i.appId) ?? []), i]);
      }
      for (const [appId, list] of apps) {
        const first = list[0];
        const names = list.map((i) => `${i.processType}.${i.index}`).join(', ');
        this.deps.logs.platform(appId, `Node ${n.name} is down: replacing ${names} on other nodes`);
        await this.deps.events.record({
          organizationId: first.organizationId, appId, type: 'node.down', message: `Node ${n.name} stopped answering: ${names} replaced on other nodes`,
          data: { nodeId: n.id, instances: list.map((i) => i.id) },
        });
        await this.reconcileApp(first.organizationId, appId, { publish: false });
      }
      this.cluster = null;
      this.dirtyNodes.add(n.id);
      await this.publishSoon();
    }
  }

  /**
   * An agent's periodic report of every instance: one read of the node's rows, and only the
   * statuses that differ from them go on (each reads its row afresh, as a single status does).
   */
  private async onStatusReport(m: InstanceStatusReport): Promise<void> {
    const rows = new Map((await this.deps.store.instances.listByNode(m.nodeId)).map((r) => [r.id, r]));
    for (const s of m.statuses) {
      // Each status is the node's own, as on the single subject.
      if (!this.reports.bound(subjects.instanceStatus(m.nodeId), s?.nodeId, 'status report')) continue;
      const row = rows.get(s.instanceId);
      if (row && unchanged(row, s)) continue;
      await this.onInstanceStatus(s);
    }
  }

  private async onInstanceStatus(m: InstanceStatusMessage): Promise<void> {
    const { store, logs } = this.deps;
    const row = await store.instances.byId(m.instanceId);
    // Unknown, or not this node's: nothing changes (the agent stops what it is not assigned).
    if (!row || row.nodeId !== m.nodeId) {
      this.reports.once(`status ${m.nodeId} ${m.instanceId}`, { instance: m.instanceId, reported: m.nodeId, assigned: row ? row.nodeId : 'no such instance' },
        row ? 'status report from a node the instance is not assigned to: ignored' : 'status report for an instance that does not exist: ignored', row ? 'warn' : 'info');
      return;
    }
    const stateChanged = row.state !== m.state;
    if (stateChanged && !instanceMachine.can(row.state, m.state)) {
      // The agent observed a real process; record the fact, but make the anomaly visible.
      this.deps.logger.warn({ instance: row.id, from: row.state, to: m.state }, 'instance reported an unexpected transition');
    }
    const crashedAgain = m.state === 'crashed' && m.restarts !== row.restarts;
    if (unchanged(row, m)) return;
    await store.instances.update(row.id, {
      state: m.state, exitCode: m.exitCode, signal: m.signal, oomKilled: m.oomKilled, restarts: m.restarts, address: m.address,
      startedAt: m.startedAt, ...(m.lastLog ? { lastLog: m.lastLog } : {}),
    });
    const name = `${row.processType}.${row.index}`;
    if (stateChanged || crashedAgain) {
      const what = describeState(m);
      logs.platform(row.appId, `${name} (v${row.releaseVersion}) ${what}`, { instanceId: row.id, type: name });
      if (m.state === 'running' || m.state === 'crashed' || m.state === 'stopped') {
        await this.deps.events.record({
          organizationId: row.organizationId, appId: row.appId, type: `instance.${m.state}`, message: `${name} ${what}`,
          data: { instanceId: row.id, processType: row.processType, index: row.index, releaseVersion: row.releaseVersion, exitCode: m.exitCode, signal: m.signal, oomKilled: m.oomKilled, restarts: m.restarts },
        });
      }
    }
    // Not waiting for the publish: reports are handled one after another, and the tick gathers them.
    if (stateChanged || row.address !== m.address) await this.reconcileApp(row.organizationId, row.appId, { publish: 'soon' });
  }

  /** Not the leader: the leader reconciles (the write that asked for it is already in the store). */
  private async requestReconcile(organizationId: string | null, appId: string | null): Promise<void> {
    await this.deps.bus.publish(subjects.reconcileRequest, { organizationId, appId } satisfies ReconcileRequestMessage);
  }

  /** Every node's assignments, rebuilt from the store (API changes that touch specs: deploy settings, health checks, deleted apps). */
  async publishAssignments(): Promise<void> {
    if (!this.leading) return this.requestReconcile(null, null);
    await this.publishAll({ routes: null, assignments: 'changed' });
  }

  /** The whole route table, rebuilt from the store; `force` publishes it with a new version even if unchanged. */
  async publishRoutes(force: boolean): Promise<void> {
    if (!this.leading) return this.requestReconcile(null, null);
    await this.publishAll({ routes: force ? 'force' : 'changed', assignments: null });
  }

  /** Publishes one at a time (see `publishing`). */
  private serial(fn: () => Promise<void>): Promise<void> {
    const run = this.publishing.then(fn);
    this.publishing = run.catch(() => undefined);
    return run;
  }

  private markDirty(organizationId: string, appId: string, nodes: Iterable<string>): void {
    this.dirtyApps.set(appId, organizationId);
    for (const n of nodes) this.dirtyNodes.add(n);
  }

  /**
   * What changed, published soon: many changes (a burst of status reports), one publish. The tick
   * stretches to twice the last publish's duration, so publishing takes at most a third of the time.
   */
  private publishSoon(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    this.flushDone ??= new Promise<void>((resolve) => {
      this.flushResolve = resolve;
      this.flushTimer = setTimeout(() => {
        this.flushTimer = null;
        this.flushDone = null;
        this.flushResolve = null;
        this.serial(() => this.flushDirty()).catch((err) => this.deps.logger.error({ err }, 'publishing changes failed')).finally(resolve);
      }, Math.max(PUBLISH_TICK_MS, 2 * this.lastFlushMs));
    });
    return this.flushDone;
  }

  private async flushDirty(): Promise<void> {
    const t0 = performance.now();
    this.publishSeq++;
    const apps = this.dirtyApps;
    const nodes = this.dirtyNodes;
    const resend = this.resend;
    const routesBehind = this.routesBehind;
    this.dirtyApps = new Map();
    this.dirtyNodes = new Set();
    this.resend = new Set();
    this.routesBehind = null;
    const { store } = this.deps;
    // Routes first: a stopping instance leaves the router before the agent signals it.
    let changed = false;
    for (const [appId, organizationId] of apps) changed = await this.refreshEntry(organizationId, appId) || changed;
    // A table the bus refuses (too large, bus away) must not hold back assignments: both are logged and retried by the pass.
    const mode = routesBehind === 'new version' ? 'force' : changed ? 'changed' : routesBehind ? 'resend' : null;
    const routesFailed = mode ? await this.publishTable(mode).then(() => null, (err: unknown) => err) : null;
    for (const nodeId of new Set([...nodes, ...resend])) {
      await this.publishNode(nodeId, (await store.instances.listByNode(nodeId)).filter((i) => i.desired === 'running'), resend.has(nodeId));
    }
    this.lastFlushMs = performance.now() - t0;
    if (routesFailed) throw routesFailed;
  }

  /**
   * Rebuilds routes and/or assignments from the store, inside the publish lock.
   * routes: 'pass' (periodic: publish if changed, else the whole table again now and then for
   * routers that report no version), 'force' (new version), 'changed' (only if different), null
   * (leave); `entriesFresh`: the caller (a pass) just refreshed the entries. assignments: 'pass' =
   * every node's set, published where it changed (and to nodes that do not report what they
   * hold); 'changed' = the same, only where changed; null = leave.
   */
  private async publishAll(what: { routes: 'pass' | 'force' | 'changed' | null; assignments: 'pass' | 'changed' | null }, opts: { entriesFresh?: boolean } = {}): Promise<void> {
    await this.serial(async () => {
      const { store } = this.deps;
      this.publishSeq++;
      let routesFailed: unknown = null;
      if (what.routes) {
        if (!opts.entriesFresh) {
          // What was marked before these reads is covered by them.
          this.dirtyApps.clear();
          await this.rebuildRouteEntries();
        } else {
          // Apps the pass itself changed (read before it did): their entries afresh, before any
          // node's set moves — a stopping instance leaves the router before its agent stops it.
          const dirty = this.dirtyApps;
          this.dirtyApps = new Map();
          for (const [appId, organizationId] of dirty) await this.refreshEntry(organizationId, appId);
        }
        routesFailed = await this.publishTable(what.routes).then(() => null, (err: unknown) => err);
      }
      if (what.assignments !== null) {
        this.dirtyNodes.clear();
        const volumes = groupBy(await store.volumes.listPinned(), (v) => v.nodeId!);
        const nodes = await store.nodes.list();
        for (const node of nodes) {
          // Node by node: one node's rows at a time, not the whole cluster's.
          const rows = (await store.instances.listByNode(node.id)).filter((i) => i.desired === 'running');
          // A pass resends unchanged sets only to nodes that do not say what they hold (the rest catch up by heartbeat).
          await this.publishNode(node.id, rows, what.assignments === 'pass' && !this.reporting.has(node.id), volumes.get(node.id) ?? []);
        }
        const known = new Set(nodes.map((n) => n.id));
        for (const id of this.published.keys()) if (!known.has(id)) this.published.delete(id);
        for (const id of this.reporting) if (!known.has(id)) this.reporting.delete(id);
      }
      if (routesFailed) throw routesFailed;
    });
  }

  /** One app's route entry from the store (gone with the app); true when it changed. */
  private async refreshEntry(organizationId: string, appId: string): Promise<boolean> {
    const { store } = this.deps;
    const [app, deployment, instances] = await Promise.all([
      store.apps.get(organizationId, appId), store.deployments.active(organizationId, appId), store.instances.listByApp(organizationId, appId),
    ]);
    return this.setRouteEntry(appId, app ? this.routeEntry(app, instances, deployment) : null);
  }

  /** Every app's route entry from the store, a page of apps at a time. */
  private async rebuildRouteEntries(): Promise<void> {
    const present = new Set<string>();
    for await (const { page, byApp, activeDeployments } of this.passPages()) {
      for (const app of page.apps) {
        present.add(app.id);
        this.setRouteEntry(app.id, this.routeEntry(app, byApp.get(app.id) ?? [], activeDeployments.get(app.id)));
      }
    }
    await this.dropGoneEntries(present);
  }

  private routeEntry(app: AppRow, instances: InstanceRow[], d: DeploymentRow | undefined): RouteEntry {
    const targetReleaseId = d?.state === 'pending' ? d.fromReleaseId : app.currentReleaseId;
    const web = instances.filter((i) => i.processType === 'web');
    const backends = withNodes(routeBackends({ targetReleaseId, instances: web, deployment: d ? planDeployment(d) : null }), web);
    return { host: `${app.name}.${this.deps.settings.baseDomain}`, organizationId: app.organizationId, route: { appId: app.id, appName: app.name, backends } };
  }

  /**
   * An app's entry (null: the app is gone). One equal to the held entry leaves it in place: the
   * held one stays the only copy (it is also in the last table), and the table's revision moves
   * only on a real change, which is what tells a pass to publish.
   */
  private setRouteEntry(appId: string, entry: RouteEntry | null): boolean {
    const before = this.routeEntries.get(appId);
    if (entry === null) {
      if (!before) return false;
      this.routeEntries.delete(appId);
    } else {
      if (before && before.host === entry.host && JSON.stringify(before.route) === JSON.stringify(entry.route)) return false;
      this.routeEntries.set(appId, entry);
    }
    this.entriesRevision++;
    return true;
  }

  /**
   * The table from the per-app entries plus custom domains, published as `mode` says ('resend':
   * the held table again, whole, for a router seen behind it).
   */
  private async publishTable(mode: 'pass' | 'force' | 'changed' | 'resend'): Promise<void> {
    const { store } = this.deps;
    const domains = await domainRoutes(store, (appId) => this.routeEntries.get(appId)?.route, (appId) => this.appInfo.get(appId)?.app);
    const cluster = await clusterNodes(store, this.routeEntries.values());
    // The entries' revision stands for them (at 10,000 apps their JSON is megabytes); custom domains and nodes are small.
    const key = `${this.entriesRevision} ${digest(JSON.stringify(domains) + JSON.stringify(cluster))}`;
    const held = this.lastRouteTable;
    if (held && key === this.lastRoutes && mode !== 'force') {
      // Unchanged. Routers that report their version catch up through heartbeats (`catchUp`);
      // for any that do not (a router in a process of its own), the whole table goes again well
      // within their stale timeout, so they neither go stale nor miss a change for long.
      if (mode === 'resend' || (mode === 'pass' && Date.now() - this.routesSentAt >= ROUTES_KEEPALIVE_MS)) await this.sendRoutes(held, null);
      return;
    }
    const routes: RouteTableMessage['routes'] = {};
    for (const e of this.routeEntries.values()) routes[e.host] = e.route;
    Object.assign(routes, domains);
    this.lastRoutes = key;
    this.lastRouteTable = { version: ++this.routeVersion, routes, ...cluster };
    // Changes go as a delta against the version before; a router's request and a resend get the whole table.
    await this.sendRoutes(this.lastRouteTable, mode === 'changed' || mode === 'pass' ? held : null);
  }

  /** `table` on the bus: as a delta from `previous` when given and small, else whole or in chunks (NATS max_payload). */
  private async sendRoutes(table: RouteTableMessage, previous: RouteTableMessage | null): Promise<void> {
    const delta = previous ? routeTableDelta(previous, table) : null;
    this.routesSentAt = Date.now();
    for (const msg of delta ? [delta] : splitRouteTable(table)) await this.deps.bus.publish(subjects.routes, msg);
  }

  /** One node's assignment set (`instances`: its rows desired running, oldest first); published if it changed or `force`. */
  private async publishNode(nodeId: string, instances: InstanceRow[], force: boolean, volumes?: VolumeRow[]): Promise<void> {
    const specs: InstanceSpec[] = [];
    // The volumes that live on this node (one read per node unless the caller read them all).
    const here = volumes ?? (instances.length > 0 ? await this.deps.store.volumes.byNode(nodeId) : []);
    // Digested spec by spec: one JSON string of a node's whole set is hundreds of kilobytes, straight into V8's old space.
    const hash = createHash('sha256');
    for (const i of instances) {
      const spec = await this.specOf(i, here);
      if (!spec) continue;
      specs.push(spec);
      hash.update(JSON.stringify(spec));
    }
    const key = hash.digest('base64');
    if (!force && this.published.get(nodeId)?.key === key) return;
    const msg: AssignmentsMessage = { nodeId, generation: ++this.generation, instances: specs };
    for (const part of splitAssignments(msg)) await this.deps.bus.publish(subjects.assignments(nodeId), part);
    this.published.set(nodeId, { key, generation: msg.generation, at: Date.now() });
  }

  private async specOf(i: InstanceRow, volumesHere: VolumeRow[]): Promise<InstanceSpec | null> {
    const info = this.appInfo.get(i.appId) ?? await this.loadAppInfo(i.organizationId, i.appId);
    const rel = await this.release(i.organizationId, i.releaseId);
    if (!info || !rel) return null;
    const { app } = info;
    const command = rel.processTypes[i.processType];
    if (!command) return null;
    const plan = PLANS[app.plan] ?? PLANS[DEFAULT_PLAN];
    const readiness = toReadiness(info.formation.find((f) => f.type === i.processType));
    const mounts = volumesHere.filter((v) => v.appId === i.appId && v.processType === i.processType).map((v) => ({ id: v.id, name: v.name, path: v.mountPath }));
    return {
      instanceId: i.id, appId: app.id, appName: app.name, organizationId: app.organizationId, releaseId: rel.id, releaseVersion: rel.version,
      processType: i.processType, index: i.index, command,
      env: { ...rel.env, SHELLWEGO_APP: app.name, SHELLWEGO_RELEASE: `v${rel.version}`, SHELLWEGO_INSTANCE: i.id },
      artifactDigest: rel.artifactDigest, limits: { memoryMb: plan.memoryMb, cpus: plan.cpus, pids: plan.pids },
      // A replacement marker (negative) is the control plane's business: the agent keeps the process.
      port: WEB_PORT, restartGeneration: agentGeneration(i.restartGeneration), stopTimeoutMs: info.settings.stopTimeoutSeconds * 1000,
      ...(readiness ? { readiness } : {}),
      ...(mounts.length > 0 ? { volumes: mounts } : {}),
    };
  }

  /** Held objects stay when the rows read again equal them: replacing 10,000 apps' on every pass made old-space garbage. */
  private rememberApp(app: AppRow, formation: FormationRow[], settings: DeploySettingsT): void {
    const held = this.appInfo.get(app.id);
    if (held && sameRow(held.app, app) && JSON.stringify(held.formation) === JSON.stringify(formation) && JSON.stringify(held.settings) === JSON.stringify(settings)) return;
    this.appInfo.set(app.id, { app, formation, settings });
  }

  private async loadAppInfo(organizationId: string, appId: string): Promise<AppInfo | undefined> {
    const app = await this.deps.store.apps.get(organizationId, appId);
    if (!app) return undefined;
    const [formation, settings] = await Promise.all([this.deps.store.formation.list(organizationId, appId), this.settingsOf(app)]);
    this.rememberApp(app, formation, settings);
    return this.appInfo.get(appId);
  }

  /** A release's process types and decrypted env: read and opened once, then from memory (releases never change). */
  private async release(organizationId: string, releaseId: string): Promise<ReleaseInfo | undefined> {
    const hit = this.releaseInfo.get(releaseId);
    if (hit) {
      this.releaseInfo.delete(releaseId);
      this.releaseInfo.set(releaseId, hit);
      return hit;
    }
    const row = await this.deps.store.releases.byId(organizationId, releaseId);
    if (!row) return undefined;
    const env = await this.deps.secrets.openJson<Record<string, string>>({ id: row.appId, organizationId: row.organizationId }, row.configSealed);
    const info: ReleaseInfo = { id: row.id, version: row.version, processTypes: row.processTypes, artifactDigest: row.artifactDigest, env };
    this.releaseInfo.set(releaseId, info);
    if (this.releaseInfo.size > RELEASE_CACHE) this.releaseInfo.delete(this.releaseInfo.keys().next().value!);
    return info;
  }
}

/** How long status reports gather before one publish (at least; see `publishSoon`). */
const PUBLISH_TICK_MS = 50;
/** A heartbeat showing a node behind what was sent to it this long ago gets it again (agents beat every 2 s). */
const CATCH_UP_GRACE_MS = 3000;
/** An unchanged route table goes out whole this often, for routers that report no version (their stale timeout is 60 s). */
const ROUTES_KEEPALIVE_MS = 20_000;
/** The periodic pass takes at most about a tenth of the time (see `schedulePass`). */
const PASS_SHARE = 10;
/** Apps per page of a pass (see `passPages`). */
const PASS_PAGE = 500;
/** Releases kept decrypted in memory: every app's current release and then some at 10,000 apps. */
const RELEASE_CACHE = 20_000;

interface AppInfo { app: AppRow; formation: FormationRow[]; settings: DeploySettingsT }
interface ReleaseInfo { id: string; version: number; processTypes: Record<string, string>; artifactDigest: string; env: Record<string, string> }
interface RouteEntry { host: string; organizationId: string; route: RouteTableMessage['routes'][string] }

const digest = (s: string) => createHash('sha256').update(s).digest('base64');

const sameRow = (a: AppRow, b: AppRow) => a.updatedAt === b.updatedAt && a.name === b.name && a.plan === b.plan && a.currentReleaseId === b.currentReleaseId &&
  a.restartGeneration === b.restartGeneration && a.organizationId === b.organizationId;

/**
 * A generation or route version a node reports: null (it holds none), a number this platform
 * could have issued (counters start at the clock in microseconds), or undefined — absent, or
 * implausible and ignored: a node reporting 1e300 must not push every later number past the
 * point where adding one changes nothing.
 */
function reportedNumber(v: unknown): number | null | undefined {
  if (v === null) return null;
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0 && v <= (Date.now() + 86_400_000) * 1000 ? v : undefined;
}

/** A status that tells nothing new about its row (same state, address, restarts and, when sent, last lines). */
function unchanged(row: InstanceRow, m: InstanceStatusMessage): boolean {
  return row.state === m.state && row.address === m.address && row.restarts === m.restarts &&
    (m.lastLog === undefined || JSON.stringify(m.lastLog) === JSON.stringify(row.lastLog));
}

const noChanges = (p: ReturnType<typeof planApp>) => p.create.length + p.drain.length + p.stop.length + p.forget.length === 0;

/** Rows grouped by a key, each group in the order read. */
function groupBy<T>(rows: T[], key: (row: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const r of rows) {
    const k = key(r);
    const list = out.get(k);
    if (list) list.push(r);
    else out.set(k, [r]);
  }
  return out;
}

export function describeState(m: Pick<InstanceStatusMessage, 'state' | 'exitCode' | 'signal' | 'oomKilled' | 'restarts' | 'address'>): string {
  switch (m.state) {
    case 'crashed': {
      const why = m.oomKilled ? 'out of memory (killed by the memory limit)' : m.signal ? `killed by ${m.signal}` : `exit code ${m.exitCode}`;
      return `crashed: ${why}${m.restarts ? `, restart #${m.restarts} pending` : ''}`;
    }
    case 'running':
      return m.address ? `is up at ${m.address}` : 'is up';
    case 'unhealthy':
      return 'failed its health check: out of the router until it passes again';
    default:
      return `is ${m.state}`;
  }
}

export type { EventT };

/** Process type → the node its volumes live on (the first pinned one: the store never pins one type's volumes apart). */
function pinnedTypes(volumes: VolumeRow[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const v of volumes) if (v.nodeId !== null && !out.has(v.processType)) out.set(v.processType, v.nodeId);
  return out;
}

function planDeployment(d: DeploymentRow): PlanDeployment {
  return { strategy: d.strategy, state: d.state, step: d.step, settings: d.settings };
}

/** The Procfile's `release:` command runs once per deploy (the release phase), never as a process. */
function withoutReleasePhase(types: Record<string, string>): Record<string, string> {
  if (!('release' in types)) return types;
  const { release: _release, ...rest } = types;
  return rest;
}

function toReadiness(f: FormationRow | undefined): Readiness | undefined {
  const h = f?.healthcheck;
  if (!h) return undefined;
  return {
    type: 'http', path: h.path, intervalMs: Math.round(h.intervalSeconds * 1000), timeoutMs: Math.round(h.timeoutSeconds * 1000),
    healthyThreshold: h.healthyThreshold, unhealthyThreshold: h.unhealthyThreshold,
  };
}
