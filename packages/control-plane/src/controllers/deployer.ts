import type { Logger } from 'pino';
import { DEFAULT_PLAN, PLANS, instanceMachine, newId, subjects } from '@shellwego/core';
import type { AssignmentsMessage, EventT, HeartbeatMessage, InstanceSpec, InstanceStatusMessage, RouteTableMessage } from '@shellwego/core';
import type { Bus, Subscription } from '@shellwego/bus';
import type { AppRow, InstanceRow, ReleaseRow, Store } from '@shellwego/store';
import type { SecretBox } from '../secrets.ts';
import type { EventRecorder } from '../events.ts';
import type { LogStore } from '../logs.ts';
import type { ControlPlaneSettings } from '../context.ts';
import { metrics } from '../metrics.ts';
import { planApp } from './plan.ts';
import { place } from './scheduler.ts';
import type { NodeLoad } from './scheduler.ts';

const WEB_PORT = 5000;
const NODE_DOWN_AFTER_MS = 30_000;

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
  private lastAssignments = new Map<string, string>();

  constructor(
    private readonly deps: { store: Store; bus: Bus; secrets: SecretBox; events: EventRecorder; logs: LogStore; settings: ControlPlaneSettings; logger: Logger },
    private readonly intervalMs = 5000,
  ) {}

  start(): void {
    const { bus } = this.deps;
    this.subs.push(
      bus.subscribe<HeartbeatMessage>(subjects.heartbeat, (m) => this.onHeartbeat(m)),
      bus.subscribe<InstanceStatusMessage>(subjects.instanceStatus, (m) => this.onInstanceStatus(m)),
      bus.subscribe(subjects.routesRequest, () => this.publishRoutes(true)),
    );
    this.timer = setInterval(() => void this.reconcileAll().catch((err) => this.deps.logger.error({ err }, 'reconcile pass failed')), this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
    if (this.timer) clearInterval(this.timer);
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
    await this.publishRoutes(false);
  }

  /** Bring one app's instances in line with its current release and formation. */
  async reconcileApp(organizationId: string, appId: string, opts: { publish?: boolean } = {}): Promise<void> {
    await this.exclusive(async () => {
      metrics.reconciles.inc();
      const { store } = this.deps;
      const app = await store.apps.get(organizationId, appId);
      if (!app) return;
      const release = app.currentReleaseId ? await store.releases.byId(organizationId, app.currentReleaseId) : undefined;
      const [formation, instances] = await Promise.all([store.formation.list(organizationId, appId), store.instances.listByApp(organizationId, appId)]);
      const plan = planApp({ currentReleaseId: release?.id ?? null, processTypes: release?.processTypes ?? {}, formation, instances });
      const unplaced = instances.filter((i) => i.desired === 'running' && i.nodeId === null && i.releaseId === release?.id);
      if (plan.create.length + plan.stop.length + plan.forget.length + unplaced.length === 0) return;

      const loads = await this.nodeLoads(app.id);
      const plan_ = PLANS[app.plan] ?? PLANS[DEFAULT_PLAN];
      const placeOne = () => {
        const p = place(loads, { memoryMb: plan_.memoryMb });
        if (p.nodeId) {
          const n = loads.find((l) => l.id === p.nodeId)!;
          n.allocatedMb += plan_.memoryMb;
          n.sameApp += 1;
        }
        return p;
      };
      const created: InstanceRow[] = [];
      await store.transaction(async (tx) => {
        for (const c of plan.create) {
          const p = placeOne();
          created.push(await tx.instances.create({
            id: newId('ins'), appId: app.id, organizationId, releaseId: release!.id, releaseVersion: release!.version, processType: c.type, index: c.index,
            nodeId: p.nodeId, desired: 'running', state: 'pending', exitCode: null, signal: null, oomKilled: false, restarts: 0, address: null,
            startedAt: null, restartGeneration: 0, lastLog: p.nodeId ? [] : [`pending: ${p.reason}`],
          }));
        }
        for (const i of unplaced) {
          const p = placeOne();
          if (p.nodeId) await tx.instances.update(i.id, { nodeId: p.nodeId, lastLog: [] });
        }
        for (const id of plan.stop) await tx.instances.update(id, { desired: 'stopped' });
        for (const id of plan.forget) await tx.instances.delete(id);
      });
      for (const i of created) this.deps.logs.platform(app.id, `Starting ${i.processType}.${i.index} (v${i.releaseVersion})${i.nodeId ? '' : ` — ${i.lastLog[0]}`}`);
      for (const id of plan.stop) {
        const i = instances.find((x) => x.id === id);
        if (i) this.deps.logs.platform(app.id, `Stopping ${i.processType}.${i.index} (v${i.releaseVersion})`);
      }
    });
    if (opts.publish !== false) {
      // Routes first: a stopping instance leaves the router before the agent signals it.
      await this.publishRoutes(false);
      await this.publishAssignments(false);
    }
  }

  private async nodeLoads(appId: string): Promise<NodeLoad[]> {
    const { store } = this.deps;
    const nodes = await store.nodes.list();
    const active = await store.instances.listActive();
    const apps = new Map((await store.apps.listAll()).map((a) => [a.id, a]));
    return nodes.map((n) => {
      const mine = active.filter((i) => i.nodeId === n.id && i.desired === 'running');
      return {
        id: n.id,
        ready: n.state === 'ready',
        memoryMb: n.memoryMb,
        allocatedMb: mine.reduce((s, i) => s + (PLANS[apps.get(i.appId)?.plan ?? DEFAULT_PLAN] ?? PLANS[DEFAULT_PLAN]).memoryMb, 0),
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
    await store.nodes.upsert({ id: m.nodeId, name: m.name, state: 'ready', isolation: m.isolation, cpus: m.capacity.cpus, memoryMb: m.capacity.memoryMb, lastHeartbeatAt: new Date().toISOString() });
    if (!existing || existing.state !== 'ready') {
      this.deps.logger.info({ node: m.nodeId, name: m.name }, existing ? 'node is back' : 'node joined');
      // A (re)appearing node gets its assignments at once, and pending instances a place.
      await this.reconcileAll();
    }
  }

  private async markDeadNodes(): Promise<void> {
    const { store } = this.deps;
    const now = Date.now();
    for (const n of await store.nodes.list()) {
      if (n.state === 'ready' && n.lastHeartbeatAt && now - Date.parse(n.lastHeartbeatAt) > NODE_DOWN_AFTER_MS) {
        await store.nodes.setState(n.id, 'down');
        this.deps.logger.warn({ node: n.id }, 'node missed heartbeats: marked down');
      }
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
    if (!stateChanged && !crashedAgain && row.address === m.address && row.restarts === m.restarts) return;
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

  async publishAssignments(force: boolean): Promise<void> {
    const { store, bus, secrets } = this.deps;
    const nodes = await store.nodes.list();
    const appCache = new Map<string, AppRow | undefined>();
    const relCache = new Map<string, { row: ReleaseRow; env: Record<string, string> } | undefined>();
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
        specs.push({
          instanceId: i.id, appId: app.id, appName: app.name, organizationId: app.organizationId, releaseId: rel.row.id, releaseVersion: rel.row.version,
          processType: i.processType, index: i.index, command,
          env: { ...rel.env, SHELLWEGO_APP: app.name, SHELLWEGO_RELEASE: `v${rel.row.version}`, SHELLWEGO_INSTANCE: i.id },
          artifactDigest: rel.row.artifactDigest, limits: { memoryMb: plan.memoryMb, cpus: plan.cpus, pids: plan.pids },
          port: WEB_PORT, restartGeneration: i.restartGeneration,
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
    const { store, bus, settings } = this.deps;
    const apps = new Map((await store.apps.listAll()).map((a) => [a.id, a]));
    const routes: RouteTableMessage['routes'] = {};
    for (const app of apps.values()) routes[`${app.name}.${settings.baseDomain}`] = { appId: app.id, appName: app.name, backends: [] };
    for (const i of await store.instances.listActive()) {
      if (i.processType !== 'web' || i.desired !== 'running' || i.state !== 'running' || !i.address) continue;
      const app = apps.get(i.appId);
      if (app) routes[`${app.name}.${settings.baseDomain}`].backends.push({ instanceId: i.id, address: i.address });
    }
    const key = JSON.stringify(routes);
    if (!force && key === this.lastRoutes) return;
    this.lastRoutes = key;
    await bus.publish(subjects.routes, { version: ++this.routeVersion, routes } satisfies RouteTableMessage);
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
    default:
      return `is ${m.state}`;
  }
}

export type { EventT };
