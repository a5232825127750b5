import type { Logger } from 'pino';
import { DEFAULT_DEPLOY_SETTINGS, DEFAULT_PLAN, PLANS, instanceMachine, newId, nodeState, subjects } from '@shellwego/core';
import type { AppPlacement, AssignmentsMessage, DeploySettingsT, EventT, HeartbeatMessage, InstanceSpec, InstanceStatusMessage, Readiness, ReconcileRequestMessage, RouterStatsMessage, RouteTableMessage } from '@shellwego/core';
import type { Bus, Subscription } from '@shellwego/bus';
import type { AppRow, DeploymentRow, FormationRow, InstanceRow, ReleaseRow, Store } from '@shellwego/store';
import type { SecretBox } from '../secrets.ts';
import type { EventRecorder } from '../events.ts';
import type { LogStore } from '../logs.ts';
import type { ControlPlaneSettings } from '../context.ts';
import { metrics } from '../metrics.ts';
import { agentGeneration, planApp, routeBackends } from './plan.ts';
import type { PlanDeployment } from './plan.ts';
import { DeploymentController } from './deployments.ts';
import { DEFAULT_SCHEDULING, leavingNodes, place } from './scheduler.ts';
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
  private lastRoutes = '';
  private lastRouteTable: RouteTableMessage | null = null;
  /** Heartbeats missed while this control plane was down do not make a node dead. */
  private readonly startedAt = Date.now();
  private nodeTimer: NodeJS.Timeout | null = null;
  private nodeCheck: Promise<void> | null = null;
  private soonTimer: NodeJS.Timeout | null = null;
  private lastAssignments = new Map<string, string>();
  /** Timed passes per app (drain deadlines, canary steps, health deadlines): appId → [at, timer]. */
  private wakeups = new Map<string, [number, NodeJS.Timeout]>();
  private stopped = false;
  readonly deployments: DeploymentController;
  /**
   * Only the leading control plane (ADR 0012) runs passes and writes instance rows; another one
   * serving the API asks the leader over the bus instead.
   */
  private leading = false;

  constructor(
    private readonly deps: { store: Store; bus: Bus; secrets: SecretBox; events: EventRecorder; logs: LogStore; settings: ControlPlaneSettings; logger: Logger },
    private readonly intervalMs = 5000,
    private readonly nodeDownAfterMs = DEFAULT_NODE_DOWN_AFTER_MS,
  ) {
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
      bus.subscribe<HeartbeatMessage>(subjects.heartbeat, (m) => this.onHeartbeat(m)),
      // A queue group: with several control planes (and a durable bus) one consumer is shared, so a
      // control plane that leads later does not replay statuses the leader before it handled.
      bus.subscribe<InstanceStatusMessage>(subjects.instanceStatus, (m) => this.onInstanceStatus(m), { queue: 'control-plane' }),
      bus.subscribe(subjects.routesRequest, () => this.publishRoutes(true)),
      bus.subscribe<RouterStatsMessage>(subjects.routerStats, (m) => this.deployments.onRouterStats(m)),
    );
    this.timer = setInterval(() => void this.reconcileAll().catch((err) => this.deps.logger.error({ err }, 'reconcile pass failed')), this.intervalMs);
    this.timer.unref();
    // Node failures are looked for every second, not every pass: failover time is the timeout plus this.
    this.nodeTimer = setInterval(() => void this.markDeadNodes().catch((err) => this.deps.logger.error({ err }, 'node check failed')), Math.min(1000, this.nodeDownAfterMs));
    this.nodeTimer.unref();
  }

  async stop(): Promise<void> {
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
    if (this.timer) clearInterval(this.timer);
    if (this.nodeTimer) clearInterval(this.nodeTimer);
    if (this.soonTimer) clearTimeout(this.soonTimer);
    this.soonTimer = null;
    this.stopped = true;
    this.leading = false;
    for (const [, t] of this.wakeups.values()) clearTimeout(t);
    this.wakeups.clear();
    await this.lock;
  }

  /** Serialises reconcile passes: one writer of instance rows at a time in this process. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn);
    this.lock = run.then(() => undefined, () => undefined);
    return run;
  }

  async reconcileAll(): Promise<void> {
    await this.markDeadNodes();
    const apps = await this.deps.store.apps.listAll();
    for (const app of apps) await this.reconcileApp(app.organizationId, app.id, { publish: false });
    await this.forgetOrphans(new Set(apps.map((a) => a.id)));
    await this.publishAssignments(true);
    // Level-triggered like assignments: a router that missed a table (bus outage, separate
    // process) gets it again. An unchanged table keeps its version, so routers just ignore it.
    const held = this.lastRouteTable;
    await this.publishRoutes(false);
    if (held && this.lastRouteTable === held) await this.deps.bus.publish(subjects.routes, held);
  }

  /** Bring one app's instances in line with its target release, formation and active deployment. */
  async reconcileApp(organizationId: string, appId: string, opts: { publish?: boolean } = {}): Promise<void> {
    if (!this.leading) return this.requestReconcile(organizationId, appId);
    await this.exclusive(async () => {
      metrics.reconciles.inc();
      const { store } = this.deps;
      const app = await store.apps.get(organizationId, appId);
      if (!app) return;
      const [deployment, settings, formation, instances, placement, nodes] = await Promise.all([
        store.deployments.active(organizationId, appId), this.settingsOf(app), store.formation.list(organizationId, appId), store.instances.listByApp(organizationId, appId),
        store.placements.get(organizationId, appId), store.nodes.list(),
      ]);
      // Instances on draining nodes (or nodes whose NoExecute taint the app does not tolerate) are replaced elsewhere first.
      const leaving = leavingNodes(nodes.map((n) => ({ id: n.id, state: nodeState(n.state, n.operatorState), taints: n.taints })), placement);
      // During the release phase the old release stays the target: no traffic moves until it succeeds.
      const targetId = deployment?.state === 'pending' ? deployment.fromReleaseId : app.currentReleaseId;
      const release = targetId ? await store.releases.byId(organizationId, targetId) : undefined;
      const now = Date.now();
      const plan = planApp({
        now, targetReleaseId: release?.id ?? null, processTypes: withoutReleasePhase(release?.processTypes ?? {}),
        formation, instances, deployment: deployment ? planDeployment(deployment) : null, settings, leavingNodes: new Set(leaving.keys()),
      });
      const unplaced = instances.filter((i) => i.desired === 'running' && i.nodeId === null && i.releaseId === release?.id);
      const changes = plan.create.length + plan.drain.length + plan.stop.length + plan.forget.length + unplaced.length;
      if (changes > 0) await this.apply(app, release, instances, plan, unplaced, (deployment?.settings ?? settings).drainSeconds, placement, leaving);
      if (deployment) {
        const after = changes > 0 ? await store.instances.listByApp(organizationId, appId) : instances;
        const webWanted = formation.find((f) => f.type === 'web')?.quantity ?? 0;
        await this.deployments.observe(app, deployment, plan, after, webWanted);
      }
      // A draining instance is stopped when its time is up.
      const nextStop = Math.min(...instances.filter((i) => i.desired === 'running' && i.stopAfter !== null).map((i) => Date.parse(i.stopAfter!)), ...plan.drain.map(() => now + settings.drainSeconds * 1000));
      if (Number.isFinite(nextStop)) this.wake(organizationId, appId, nextStop);
    });
    if (opts.publish !== false) {
      // Routes first: a stopping instance leaves the router before the agent signals it.
      await this.publishRoutes(false);
      await this.publishAssignments(false);
    }
  }

  private async apply(app: AppRow, release: ReleaseRow | undefined, instances: InstanceRow[], plan: ReturnType<typeof planApp>, unplaced: InstanceRow[], drainSeconds: number,
    placement: AppPlacement | undefined, leaving: Map<string, string>): Promise<void> {
    const { store } = this.deps;
    const organizationId = app.organizationId;
    const loads = await this.nodeLoads(app.id);
    const plan_ = PLANS[app.plan] ?? PLANS[DEFAULT_PLAN];
    const scheduling = this.deps.settings.scheduling ?? DEFAULT_SCHEDULING;
    const placeOne = () => {
      const p = place(loads, { memoryMb: plan_.memoryMb, cpus: plan_.cpus, placement, settings: scheduling });
      if (p.nodeId) {
        const n = loads.find((l) => l.id === p.nodeId)!;
        n.allocatedMb += plan_.memoryMb;
        n.allocatedCpus += plan_.cpus;
        n.sameApp += 1;
      }
      return p;
    };
    const nameOf = (id: string) => loads.find((l) => l.id === id)?.name ?? id;
    const created: InstanceRow[] = [];
    const stopAfter = new Date(Date.now() + drainSeconds * 1000).toISOString();
    await store.transaction(async (tx) => {
      for (const c of plan.create) {
        const p = placeOne();
        created.push(await tx.instances.create({
          id: newId('ins'), appId: app.id, organizationId, releaseId: release!.id, releaseVersion: release!.version, processType: c.type, index: c.index,
          nodeId: p.nodeId, desired: 'running', state: 'pending', exitCode: null, signal: null, oomKilled: false, restarts: 0, address: null,
          startedAt: null, restartGeneration: 0, lastLog: p.nodeId ? [] : [`pending: ${p.reason}`], placement: p.reason,
        }));
      }
      for (const i of unplaced) {
        const p = placeOne();
        if (p.nodeId) await tx.instances.update(i.id, { nodeId: p.nodeId, lastLog: [], placement: p.reason });
        else if (i.placement !== p.reason) await tx.instances.update(i.id, { lastLog: [`pending: ${p.reason}`], placement: p.reason });
      }
      // Instances on a node they must leave say so until their replacement is ready elsewhere.
      for (const i of instances) {
        if (i.desired !== 'running' || i.stopAfter !== null || i.nodeId === null) continue;
        const note = leaving.has(i.nodeId)
          ? `leaving ${nameOf(i.nodeId)} (${leaving.get(i.nodeId)}): keeps running until a replacement is ready elsewhere`
          : i.placement?.startsWith('leaving ') ? `stays on ${nameOf(i.nodeId)}: the node is back in service` : i.placement;
        if (i.placement !== note) await tx.instances.update(i.id, { placement: note });
      }
      for (const id of plan.drain) await tx.instances.update(id, { stopAfter });
      for (const id of plan.stop) await tx.instances.update(id, { desired: 'stopped' });
      for (const id of plan.forget) await tx.instances.delete(id);
    });
    for (const i of created) this.deps.logs.platform(app.id, `Starting ${i.processType}.${i.index} (v${i.releaseVersion})${i.nodeId ? '' : ` — ${i.lastLog[0]}`}`);
    const byId = new Map(instances.map((i) => [i.id, i]));
    for (const id of plan.drain) {
      const i = byId.get(id);
      if (i) this.deps.logs.platform(app.id, `Draining ${i.processType}.${i.index} (v${i.releaseVersion}): out of the router, stopping in ${drainSeconds}s`);
    }
    for (const id of plan.stop) {
      const i = byId.get(id);
      if (i) this.deps.logs.platform(app.id, `Stopping ${i.processType}.${i.index} (v${i.releaseVersion})`);
    }
  }

  private async settingsOf(app: AppRow): Promise<DeploySettingsT> {
    return (await this.deps.store.deployments.getSettings(app.organizationId, app.id)) ?? DEFAULT_DEPLOY_SETTINGS;
  }

  private async nodeLoads(appId: string): Promise<NodeLoad[]> {
    const { store } = this.deps;
    const nodes = await store.nodes.list();
    const active = await store.instances.listActive();
    const apps = new Map((await store.apps.listAll()).map((a) => [a.id, a]));
    return nodes.map((n) => {
      const mine = active.filter((i) => i.nodeId === n.id && i.desired === 'running');
      const planOf = (i: InstanceRow) => PLANS[apps.get(i.appId)?.plan ?? DEFAULT_PLAN] ?? PLANS[DEFAULT_PLAN];
      return {
        id: n.id,
        name: n.name,
        state: nodeState(n.state, n.operatorState),
        cpus: n.cpus,
        memoryMb: n.memoryMb,
        allocatedMb: mine.reduce((s, i) => s + planOf(i).memoryMb, 0),
        allocatedCpus: mine.reduce((s, i) => s + planOf(i).cpus, 0),
        labels: { ...n.agentLabels, ...n.labels },
        taints: n.taints,
        sameApp: mine.filter((i) => i.appId === appId).length,
      };
    });
  }

  /** Instance rows whose app is gone (deleted mid-flight) are dropped. */
  private async forgetOrphans(appIds: Set<string>): Promise<void> {
    const active = await this.deps.store.instances.listActive();
    for (const i of active) if (!appIds.has(i.appId)) await this.deps.store.instances.delete(i.id);
  }

  // ---------- agents ----------

  private async onHeartbeat(m: HeartbeatMessage): Promise<void> {
    const { store } = this.deps;
    const existing = await store.nodes.byId(m.nodeId);
    await store.nodes.upsert({
      id: m.nodeId, name: m.name, state: 'ready', isolation: m.isolation, cpus: m.capacity.cpus, memoryMb: m.capacity.memoryMb, lastHeartbeatAt: new Date().toISOString(),
      diskMb: m.capacity.diskMb ?? null, agentLabels: m.labels ?? {},
    });
    if (!existing || existing.state !== 'ready') {
      this.deps.logger.info({ node: m.nodeId, name: m.name }, existing ? 'node is back' : 'node joined');
      // A (re)appearing node gets its assignments, and pending instances a place — in a pass of
      // its own: run inline, a long pass would hold up the heartbeats queued behind this one, and
      // live nodes would be marked down for silence that was ours (bench/scale.ts found it).
      this.soon();
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
      await store.nodes.setState(n.id, 'down');
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
        await this.reconcileApp(first.organizationId, appId);
      }
      if (apps.size === 0) await this.publishRoutes(false);
    }
  }

  private async onInstanceStatus(m: InstanceStatusMessage): Promise<void> {
    const { store, logs } = this.deps;
    const row = await store.instances.byId(m.instanceId);
    if (!row) return; // not ours (any more): the agent stops what it is not assigned
    if (row.nodeId !== m.nodeId) {
      this.deps.logger.warn({ instance: m.instanceId, reported: m.nodeId, assigned: row.nodeId }, 'status report from a node the instance is not assigned to: ignored');
      return;
    }
    const stateChanged = row.state !== m.state;
    if (stateChanged && !instanceMachine.can(row.state, m.state)) {
      // The agent observed a real process; record the fact, but make the anomaly visible.
      this.deps.logger.warn({ instance: row.id, from: row.state, to: m.state }, 'instance reported an unexpected transition');
    }
    const crashedAgain = m.state === 'crashed' && m.restarts !== row.restarts;
    const newLog = m.lastLog !== undefined && JSON.stringify(m.lastLog) !== JSON.stringify(row.lastLog);
    if (!stateChanged && !crashedAgain && !newLog && row.address === m.address && row.restarts === m.restarts) return;
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
    if (stateChanged || row.address !== m.address) await this.reconcileApp(row.organizationId, row.appId);
  }

  /** Not the leader: the leader reconciles (the write that asked for it is already in the store). */
  private async requestReconcile(organizationId: string | null, appId: string | null): Promise<void> {
    await this.deps.bus.publish(subjects.reconcileRequest, { organizationId, appId } satisfies ReconcileRequestMessage);
  }

  async publishAssignments(force: boolean): Promise<void> {
    if (!this.leading) return this.requestReconcile(null, null);
    const { store, bus, secrets } = this.deps;
    const nodes = await store.nodes.list();
    const appCache = new Map<string, AppRow | undefined>();
    const relCache = new Map<string, { row: ReleaseRow; env: Record<string, string> } | undefined>();
    const formationCache = new Map<string, FormationRow[]>();
    const settingsCache = new Map<string, DeploySettingsT>();
    for (const node of nodes) {
      const instances = (await store.instances.listByNode(node.id)).filter((i) => i.desired === 'running');
      const specs: InstanceSpec[] = [];
      for (const i of instances) {
        if (!appCache.has(i.appId)) appCache.set(i.appId, await store.apps.get(i.organizationId, i.appId));
        const app = appCache.get(i.appId);
        if (!relCache.has(i.releaseId)) {
          const row = await store.releases.byId(i.organizationId, i.releaseId);
          relCache.set(i.releaseId, row ? { row, env: await secrets.openJson<Record<string, string>>({ id: row.appId, organizationId: row.organizationId }, row.configSealed) } : undefined);
        }
        const rel = relCache.get(i.releaseId);
        if (!app || !rel) continue;
        const command = rel.row.processTypes[i.processType];
        if (!command) continue;
        const plan = PLANS[app.plan] ?? PLANS[DEFAULT_PLAN];
        if (!formationCache.has(app.id)) formationCache.set(app.id, await store.formation.list(app.organizationId, app.id));
        if (!settingsCache.has(app.id)) settingsCache.set(app.id, await this.settingsOf(app));
        const readiness = toReadiness(formationCache.get(app.id)!.find((f) => f.type === i.processType));
        specs.push({
          instanceId: i.id, appId: app.id, appName: app.name, organizationId: app.organizationId, releaseId: rel.row.id, releaseVersion: rel.row.version,
          processType: i.processType, index: i.index, command,
          env: { ...rel.env, SHELLWEGO_APP: app.name, SHELLWEGO_RELEASE: `v${rel.row.version}`, SHELLWEGO_INSTANCE: i.id },
          artifactDigest: rel.row.artifactDigest, limits: { memoryMb: plan.memoryMb, cpus: plan.cpus, pids: plan.pids },
          // A replacement marker (negative) is the control plane's business: the agent keeps the process.
          port: WEB_PORT, restartGeneration: agentGeneration(i.restartGeneration), stopTimeoutMs: settingsCache.get(app.id)!.stopTimeoutSeconds * 1000,
          ...(readiness ? { readiness } : {}),
        });
      }
      const key = JSON.stringify(specs);
      if (!force && this.lastAssignments.get(node.id) === key) continue;
      this.lastAssignments.set(node.id, key);
      const msg: AssignmentsMessage = { nodeId: node.id, generation: ++this.generation, instances: specs };
      await bus.publish(subjects.assignments(node.id), msg);
    }
  }

  async publishRoutes(force: boolean): Promise<void> {
    if (!this.leading) return this.requestReconcile(null, null);
    const { store, bus, settings } = this.deps;
    const apps = new Map((await store.apps.listAll()).map((a) => [a.id, a]));
    const routes: RouteTableMessage['routes'] = {};
    const byApp = new Map<string, InstanceRow[]>();
    for (const i of await store.instances.listActive()) {
      if (i.processType !== 'web') continue;
      const list = byApp.get(i.appId);
      if (list) list.push(i);
      else byApp.set(i.appId, [i]);
    }
    const active = new Map((await store.deployments.listActive()).map((d) => [d.appId, d]));
    for (const app of apps.values()) {
      const d = active.get(app.id);
      const targetReleaseId = d?.state === 'pending' ? d.fromReleaseId : app.currentReleaseId;
      const backends = routeBackends({ targetReleaseId, instances: byApp.get(app.id) ?? [], deployment: d ? planDeployment(d) : null });
      routes[`${app.name}.${settings.baseDomain}`] = { appId: app.id, appName: app.name, backends };
    }
    await (await import('../domains/routes.ts')).addDomainRoutes(store, routes, apps, settings.baseDomain);
    const key = JSON.stringify(routes);
    if (!force && key === this.lastRoutes) return;
    this.lastRoutes = key;
    this.lastRouteTable = { version: ++this.routeVersion, routes };
    await bus.publish(subjects.routes, this.lastRouteTable);
  }
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
