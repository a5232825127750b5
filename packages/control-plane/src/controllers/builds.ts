import type { Logger } from 'pino';
import { DEFAULT_PLAN, PLANS, buildMachine, subjects } from '@shellwego/core';
import type { BuildLogMessage, BuildRequest, BuildResultMessage, EventT } from '@shellwego/core';
import type { Bus, Subscription } from '@shellwego/bus';
import type { BuildRow, Store } from '@shellwego/store';
import type { SecretBox } from '../secrets.ts';
import type { EventRecorder } from '../events.ts';
import type { LogStore } from '../logs.ts';
import type { BuildLogs } from '../build-logs.ts';
import { createRelease, readConfig } from '../releases.ts';
import { imageForBuild } from '../image-builds.ts';
import { metrics } from '../metrics.ts';
import type { Deployer } from './deployer.ts';

/**
 * Follows builds from request to release: forwards build output to followers, and on a
 * successful result creates the release and asks the deployer to roll it out. A failed build
 * changes nothing that runs. Builds left unfinished by a crash are requested again at start.
 */
export class BuildController {
  private subs: Subscription[] = [];
  private logSub: Subscription | null = null;

  constructor(private readonly deps: { store: Store; bus: Bus; secrets: SecretBox; events: EventRecorder; logs: LogStore; buildLogs: BuildLogs; deployer: Deployer; logger: Logger }) {}

  /** Every control plane keeps build logs (a `git push` or `deploy` it serves follows them). */
  listen(): void {
    this.logSub ??= this.deps.bus.subscribe<BuildLogMessage>('build.*.log', (m) => this.onLog(m));
  }

  /** The leader also records results (releases) and resumes builds a crash interrupted. */
  async start(): Promise<void> {
    const { bus, store } = this.deps;
    this.listen();
    // Shared by the control planes (queue group): whichever leads records each result once.
    this.subs.push(bus.subscribe<BuildResultMessage>(subjects.allBuildResults, (m) => this.onResult(m), { queue: 'control-plane' }));
    for (const b of await store.builds.listUnfinished()) {
      this.deps.logger.info({ build: b.id }, 'resuming a build interrupted by a restart');
      this.deps.buildLogs.append(b.id, { ts: new Date().toISOString(), source: 'build', instanceId: null, type: null, line: '-----> The platform restarted during this build: building again' });
      await this.request(b);
    }
  }

  /** Stops leading (results); `close` also stops keeping logs. */
  stop(): void {
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
  }

  close(): void {
    this.stop();
    this.logSub?.unsubscribe();
    this.logSub = null;
  }

  /** Publishes the build request: the build's source and the app's config at this moment. */
  async request(build: BuildRow): Promise<void> {
    const { store, secrets, bus } = this.deps;
    const app = await store.apps.get(build.organizationId, build.appId);
    if (!app) return;
    this.deps.buildLogs.begin(build.id);
    const plan = PLANS[app.plan] ?? PLANS[DEFAULT_PLAN];
    const req: BuildRequest = {
      buildId: build.id, appId: app.id, appName: app.name, organizationId: app.organizationId, sourceDigest: build.sourceDigest,
      env: await readConfig(store, secrets, app), limits: { memoryMb: plan.memoryMb, cpus: plan.cpus, pids: plan.pids },
    };
    const image = await imageForBuild(store, secrets, app, build);
    if (image) req.image = image;
    await bus.publish(subjects.buildRequested, req);
  }

  private async onLog(m: BuildLogMessage): Promise<void> {
    this.deps.buildLogs.append(m.buildId, { ts: m.ts, source: 'build', instanceId: null, type: null, line: m.line });
    const b = await this.deps.store.builds.byId(m.buildId);
    if (b?.state === 'pending') await this.deps.store.builds.update(b.id, { state: 'building' });
  }

  /**
   * Gives up a build that is not finished: it is failed with `reason` now, so its result (when the
   * builder sends it) creates no release. Returns false when it had already finished.
   */
  async abandon(buildId: string, reason: string): Promise<boolean> {
    const { store, events, logs } = this.deps;
    // Read and fail in one transaction: a result being recorded at the same time wins or loses whole.
    const build = await store.transaction(async (tx) => {
      const b = await tx.builds.byId(buildId);
      if (!b || b.state === 'succeeded' || b.state === 'failed') return undefined;
      await tx.builds.update(b.id, { state: 'failed', error: reason, finishedAt: new Date().toISOString() });
      return b;
    });
    if (!build) return false;
    logs.platform(build.appId, `Build ${build.id} failed: ${reason}`);
    await events.record({ organizationId: build.organizationId, appId: build.appId, type: 'build.failed', message: `Build failed: ${reason}`, data: { buildId: build.id } });
    await this.deps.buildLogs.end(build.id);
    return true;
  }

  private async onResult(m: BuildResultMessage): Promise<void> {
    const { store, secrets, events, logs, deployer } = this.deps;
    const build = await store.builds.byId(m.buildId);
    if (!build) return;
    if (build.state === 'succeeded' || build.state === 'failed') return; // a duplicate result (redelivery, or two builders)
    const app = await store.apps.get(build.organizationId, build.appId);
    const finishedAt = new Date().toISOString();
    metrics.builds.inc({ result: m.ok ? 'succeeded' : 'failed' });
    const recorded: EventT[] = [];
    if (!m.ok || !m.artifactDigest || !app) {
      const error = m.error ?? (app ? 'build failed' : 'the app was deleted during the build');
      if (build.state === 'pending') buildMachine.assert('pending', 'failed');
      await store.builds.update(build.id, { state: 'failed', stack: m.stack, error, finishedAt, cacheHit: m.cacheHit });
      if (app) {
        logs.platform(app.id, `Build ${build.id} failed: ${error}`);
        await events.record({ organizationId: build.organizationId, appId: build.appId, type: 'build.failed', message: `Build failed: ${error}`, data: { buildId: build.id } });
      }
    } else {
      await secrets.ensureKey(app.organizationId); // the release's config snapshot is sealed inside the transaction
      const released = await store.transaction(async (tx) => {
        // Abandoned (e.g. the pusher disconnected) while the result was on its way: no release.
        if ((await tx.builds.byId(build.id))?.state === 'failed') return false;
        const config = await readConfig(tx, secrets, app);
        const release = await createRelease(tx, secrets, app, {
          buildId: build.id, processTypes: m.processTypes, artifactDigest: m.artifactDigest!, config,
          description: `Deploy ${build.id.slice(-8)}${m.stack ? ` (${m.stack})` : ''}`, createdBy: build.createdBy,
        });
        await tx.builds.update(build.id, { state: 'succeeded', stack: m.stack, artifactDigest: m.artifactDigest, processTypes: m.processTypes, cacheHit: m.cacheHit, releaseId: release.id, finishedAt });
        recorded.push(
          await events.record({ organizationId: app.organizationId, appId: app.id, type: 'build.succeeded', message: `Build succeeded in ${(m.durationMs / 1000).toFixed(1)}s`, data: { buildId: build.id, durationMs: m.durationMs, cacheHit: m.cacheHit } }, tx),
          await events.record({ organizationId: app.organizationId, appId: app.id, type: 'release.created', message: `Release v${release.version}: ${release.description}`, data: { releaseId: release.id, version: release.version } }, tx),
        );
        logs.platform(app.id, `Release v${release.version} created from build ${build.id}`);
        return true;
      });
      for (const e of recorded) await events.publish(e);
      if (released) await deployer.reconcileApp(app.organizationId, app.id);
    }
    await this.deps.buildLogs.end(build.id);
  }
}
