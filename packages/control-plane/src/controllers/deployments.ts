import type { Logger } from 'pino';
import { DEFAULT_DEPLOY_SETTINGS, newId } from '@shellwego/core';
import type { DeploymentT, RouterStatsMessage } from '@shellwego/core';
import type { AppRow, DeploymentRow, InstanceRow, ReleaseRow, Store } from '@shellwego/store';
import type { EventRecorder } from '../events.ts';
import type { LogStore } from '../logs.ts';
import type { SecretBox } from '../secrets.ts';
import { canaryCount, isLive, isReady } from './plan.ts';
import type { AppPlan } from './plan.ts';

/** Runs a release's `release:` command to completion; output lines go to `onLine`. */
export type ReleasePhaseRunner = (
  req: { organizationId: string; appId: string; releaseId: string; command: string; by: string },
  onLine: (line: string) => void,
) => Promise<{ exitCode: number | null; signal: string | null }>;

/** A crash-looping new instance fails the deployment without waiting for the deadline. */
const CRASHES_BEFORE_FAILING = 2;

export function toDeployment(d: DeploymentRow): DeploymentT {
  return {
    id: d.id, appId: d.appId, fromVersion: d.fromVersion, toVersion: d.toVersion, strategy: d.strategy, state: d.state, phase: d.phase,
    reason: d.reason, settings: d.settings as unknown as Record<string, unknown>, createdBy: d.createdBy, createdAt: d.createdAt,
    updatedAt: d.updatedAt, finishedAt: d.finishedAt, history: d.history,
  };
}

/**
 * Starts the deployment of a new release, inside the transaction that creates it: the newest
 * release always wins (an unfinished deployment is superseded), and it rolls back to the last
 * release that was known good, not to a half-deployed one.
 */
export async function beginDeployment(tx: Store, app: AppRow, release: ReleaseRow, createdBy: string | null): Promise<DeploymentRow> {
  const settings = (await tx.deployments.getSettings(app.organizationId, app.id)) ?? DEFAULT_DEPLOY_SETTINGS;
  const active = await tx.deployments.active(app.organizationId, app.id);
  let fromId = app.currentReleaseId;
  if (active) {
    // Still rolling (or rolling back): the release it came from is the last good one.
    fromId = active.fromReleaseId;
    await tx.deployments.transition(active.id, active.state, { state: 'superseded', phase: `superseded by v${release.version}`, finishedAt: new Date().toISOString() }, `superseded by v${release.version}`);
  }
  const from = fromId ? await tx.releases.byId(app.organizationId, fromId) : undefined;
  const hasReleasePhase = Boolean(release.processTypes.release);
  const at = new Date().toISOString();
  const strategy = from ? settings.strategy : 'rolling'; // a first release has nothing to protect
  return tx.deployments.create({
    id: newId('dep'), organizationId: app.organizationId, appId: app.id, fromReleaseId: from?.id ?? null, fromVersion: from?.version ?? null,
    toReleaseId: release.id, toVersion: release.version, strategy, settings, state: hasReleasePhase ? 'pending' : 'in_progress',
    phase: hasReleasePhase ? 'release phase' : 'starting', reason: null, step: 0, stepStartedAt: null, progressAt: at, createdBy,
    history: [{ at, message: `v${release.version} (${release.description}) by ${createdBy ?? 'the platform'}: ${strategy}${from ? ` from v${from.version}` : ''}${hasReleasePhase ? ', release phase first' : ''}` }],
  });
}

/**
 * Watches active deployments on every reconcile pass: runs the release phase, tracks progress,
 * moves canary steps, and decides success, failure and rollback. Every decision is a
 * compare-and-set on the deployment row, so a restarted control plane (or a second one) picks
 * up exactly where the database says it is.
 */
export class DeploymentController {
  /** Release phases running in this process, by deployment id. */
  private releasePhases = new Set<string>();
  /** Ready count last seen per deployment (progress resets the health deadline). */
  private lastReady = new Map<string, number>();
  private lastPhase = new Map<string, string>();
  /** Router counts per instance since the current canary step began. */
  private stats = new Map<string, { requests: number; failed: number }>();
  private runner: ReleasePhaseRunner | null = null;

  constructor(private readonly deps: { store: Store; secrets: SecretBox; events: EventRecorder; logs: LogStore; logger: Logger; wake: (organizationId: string, appId: string, atMs?: number) => void }) {}

  /**
   * Makes the release `releaseId` current again and the app's config vars match its snapshot:
   * otherwise the next `config set` would quietly redeploy the value that just failed.
   */
  private async restore(tx: Store, app: AppRow, releaseId: string | null): Promise<void> {
    await tx.apps.update(app.organizationId, app.id, { currentReleaseId: releaseId });
    if (!releaseId) return;
    const release = await tx.releases.byId(app.organizationId, releaseId);
    if (!release) return;
    const config = await this.deps.secrets.openJson<Record<string, string>>(app, release.configSealed, tx);
    const existing = await tx.config.get(app.organizationId, app.id);
    const changes: Record<string, string | null> = {};
    for (const k of Object.keys(existing)) if (!(k in config)) changes[k] = null;
    for (const [k, v] of Object.entries(config)) changes[k] = await this.deps.secrets.seal(app, v, tx);
    if (Object.keys(changes).length) await tx.config.apply(app.organizationId, app.id, changes);
  }

  setReleasePhaseRunner(runner: ReleasePhaseRunner): void {
    this.runner = runner;
  }

  onRouterStats(m: RouterStatsMessage): void {
    for (const [id, c] of Object.entries(m.instances ?? {})) {
      if (!Number.isFinite(c?.requests) || !Number.isFinite(c?.failed)) continue;
      const s = this.stats.get(id) ?? { requests: 0, failed: 0 };
      s.requests += c.requests;
      s.failed += c.failed;
      this.stats.set(id, s);
    }
  }

  /** Called by the deployer after applying `plan` for the app (under its reconcile lock). */
  async observe(app: AppRow, d: DeploymentRow, plan: AppPlan, instances: InstanceRow[], webWanted: number): Promise<void> {
    if (d.state === 'pending') return this.releasePhase(app, d);
    const now = Date.now();
    const rollingBack = d.state === 'rolling_back';
    const target = rollingBack ? d.fromReleaseId : d.toReleaseId;
    const fresh = instances.filter((i) => isLive(i) && i.releaseId === target);

    if (plan.progress.complete && !(d.strategy === 'canary' && !rollingBack && d.step < d.settings.canarySteps.length)) {
      const state = rollingBack ? 'rolled_back' : 'succeeded';
      const message = rollingBack
        ? `Rolled back to v${d.fromVersion}: ${d.reason ?? 'aborted'}`
        : `Deployed v${d.toVersion}: ${plan.progress.ready} instance${plan.progress.ready === 1 ? '' : 's'} ready`;
      const done = await this.deps.store.deployments.transition(d.id, d.state, { state, phase: 'done', finishedAt: new Date(now).toISOString() }, message);
      if (done) await this.announce(app, done, `deployment.${state}`, message);
      this.forget(d.id);
      return;
    }
    if (rollingBack) return this.setPhase(d, `rolling back to v${d.fromVersion}: ${plan.progress.ready}/${plan.progress.wanted} ready`);

    // Failure: a new instance that keeps crashing or ran out of memory fails the deploy now.
    const crashing = fresh.find((i) => i.restarts >= CRASHES_BEFORE_FAILING || (i.state === 'crashed' && i.oomKilled));
    if (crashing) return void (await this.fail(app, d, `${crashing.processType}.${crashing.index} (v${crashing.releaseVersion}) ${crashDescription(crashing)}`));

    // Progress resets the health deadline (a slow but moving rollout of many instances is fine).
    const seen = this.lastReady.get(d.id);
    let progressAt = Date.parse(d.progressAt);
    if (seen === undefined || plan.progress.ready > seen) {
      this.lastReady.set(d.id, plan.progress.ready);
      if (seen !== undefined) {
        progressAt = now;
        await this.deps.store.deployments.transition(d.id, d.state, { progressAt: new Date(now).toISOString() });
      }
    }
    const deadline = progressAt + d.settings.healthTimeoutSeconds * 1000;
    // A canary step that is watching its traffic is progress by design: no deadline while it runs.
    const watching = d.strategy === 'canary' && d.step < d.settings.canarySteps.length && d.stepStartedAt !== null;
    if (now >= deadline && !watching) {
      const stuck = fresh.filter((i) => !isReady(i)).map((i) => `${i.processType}.${i.index} is ${i.state}${i.lastLog.length ? ` (${i.lastLog[i.lastLog.length - 1]})` : ''}`);
      await this.fail(app, d, `new instances not ready within ${d.settings.healthTimeoutSeconds}s${stuck.length ? `: ${stuck.join('; ')}` : ''}`);
      return;
    }
    this.deps.wake(app.organizationId, app.id, deadline);

    if (d.strategy === 'canary' && d.step < d.settings.canarySteps.length) return this.canary(app, d, fresh, webWanted, now);
    const phase = `${d.strategy}: ${plan.progress.ready}/${plan.progress.wanted} new ready, ${plan.progress.old} old left`;
    await this.setPhase(d, phase);
  }

  private async canary(app: AppRow, d: DeploymentRow, fresh: InstanceRow[], webWanted: number, now: number): Promise<void> {
    const pct = d.settings.canarySteps[d.step];
    const web = fresh.filter((i) => i.processType === 'web');
    const wantedWeb = webWanted > 0 ? canaryCount(webWanted, pct) : 0;
    const unhealthy = web.find((i) => i.state === 'unhealthy' || i.state === 'crashed');
    if (unhealthy) return void (await this.fail(app, d, `canary ${unhealthy.processType}.${unhealthy.index} ${unhealthy.state === 'crashed' ? crashDescription(unhealthy) : 'failed its health check'}`));
    const ready = web.filter(isReady);
    if (ready.length === 0 || ready.length < wantedWeb) return this.setPhase(d, `canary ${pct}%: starting ${web.length} instance${web.length === 1 ? '' : 's'}`);
    if (d.stepStartedAt === null) {
      // The step's clock starts when its canaries take traffic; counts from before don't belong to it.
      for (const i of web) this.stats.delete(i.id);
      const moved = await this.deps.store.deployments.transition(d.id, d.state, { stepStartedAt: new Date(now).toISOString(), progressAt: new Date(now).toISOString(), phase: `canary ${pct}%` }, `canary step ${d.step + 1}/${d.settings.canarySteps.length}: ${pct}% of traffic to v${d.toVersion}`);
      if (moved) this.deps.logs.platform(app.id, `Canary: ${pct}% of traffic to v${d.toVersion} for ${d.settings.canaryStepSeconds}s`);
      this.deps.wake(app.organizationId, app.id, now + d.settings.canaryStepSeconds * 1000);
      return;
    }
    const totals = web.reduce((s, i) => {
      const c = this.stats.get(i.id);
      return { requests: s.requests + (c?.requests ?? 0), failed: s.failed + (c?.failed ?? 0) };
    }, { requests: 0, failed: 0 });
    const rate = totals.requests ? totals.failed / totals.requests : 0;
    if (totals.requests >= d.settings.canaryMinRequests && totals.requests > 0 && rate > d.settings.canaryMaxErrorRate) {
      return void (await this.fail(app, d, `canary error rate ${(rate * 100).toFixed(1)}% (${totals.failed}/${totals.requests} requests failed) is above ${(d.settings.canaryMaxErrorRate * 100).toFixed(1)}%`));
    }
    const endsAt = Date.parse(d.stepStartedAt) + d.settings.canaryStepSeconds * 1000;
    if (now < endsAt) {
      this.deps.wake(app.organizationId, app.id, endsAt);
      return this.setPhase(d, `canary ${pct}%: ${totals.requests} requests, ${(rate * 100).toFixed(1)}% failed, ${Math.ceil((endsAt - now) / 1000)}s left`);
    }
    const next = d.step + 1;
    const last = next >= d.settings.canarySteps.length;
    const note = `canary ${pct}% passed (${totals.requests} requests, ${(rate * 100).toFixed(1)}% failed)${last ? `: promoting v${d.toVersion} to all instances` : ''}`;
    const moved = await this.deps.store.deployments.transition(d.id, d.state, { step: next, stepStartedAt: null, progressAt: new Date(now).toISOString(), phase: last ? 'promoting' : `canary ${d.settings.canarySteps[next]}%` }, note);
    if (moved) {
      this.deps.logs.platform(app.id, `Canary: ${note}`);
      for (const i of web) this.stats.delete(i.id);
      this.deps.wake(app.organizationId, app.id);
    }
  }

  /** The new release failed: roll back to the previous one (or stop here when there is none / it is off). */
  async fail(app: AppRow, d: DeploymentRow, reason: string, opts: { by?: string } = {}): Promise<DeploymentRow | undefined> {
    const { store } = this.deps;
    const rollback = d.fromReleaseId !== null && (d.settings.autoRollback || opts.by !== undefined);
    const why = opts.by ? `aborted by ${opts.by}` : reason;
    const moved = await store.transaction(async (tx) => {
      const m = rollback
        ? await tx.deployments.transition(d.id, d.state, { state: 'rolling_back', reason: why, phase: `rolling back to v${d.fromVersion}` }, `failed: ${why}; rolling back to v${d.fromVersion}`)
        : await tx.deployments.transition(d.id, d.state, { state: 'failed', reason: why, phase: 'failed', finishedAt: new Date().toISOString() }, `failed: ${why}`);
      // The previous release is current again: `releases` shows it, and every controller targets it.
      if (m && rollback) await this.restore(tx, app, d.fromReleaseId);
      return m;
    });
    if (!moved) return undefined;
    const message = rollback ? `Deploy of v${d.toVersion} failed: ${why}. Rolling back to v${d.fromVersion}` : `Deploy of v${d.toVersion} failed: ${why}`;
    await this.announce(app, moved, rollback ? 'deployment.rolling_back' : 'deployment.failed', message);
    this.forget(d.id);
    this.deps.wake(app.organizationId, app.id);
    return moved;
  }

  private async releasePhase(app: AppRow, d: DeploymentRow): Promise<void> {
    if (this.releasePhases.has(d.id)) return;
    const release = await this.deps.store.releases.byId(app.organizationId, d.toReleaseId);
    const command = release?.processTypes.release;
    const runner = this.runner;
    if (!release || !command || !runner) {
      // Nothing to run (or nothing to run it with): the phase is trivially done.
      await this.deps.store.deployments.transition(d.id, 'pending', { state: 'in_progress', phase: 'starting' }, runner ? 'no release command' : 'release phase skipped: one-off processes are not available');
      this.deps.wake(app.organizationId, app.id);
      return;
    }
    this.releasePhases.add(d.id);
    this.deps.logs.platform(app.id, `Release phase of v${d.toVersion}: ${command}`);
    const tail: string[] = [];
    void (async () => {
      let ok = false;
      let why = '';
      try {
        const exit = await runner({ organizationId: app.organizationId, appId: app.id, releaseId: d.toReleaseId, command, by: d.createdBy ?? 'the platform' }, (line) => {
          tail.push(line);
          if (tail.length > 10) tail.shift();
          this.deps.logs.platform(app.id, `release: ${line}`);
        });
        ok = exit.exitCode === 0;
        why = exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.exitCode}`;
      } catch (err) {
        why = (err as Error).message;
      }
      try {
        const current = await this.deps.store.deployments.get(app.organizationId, app.id, d.id);
        if (current?.state !== 'pending') return; // superseded meanwhile
        if (ok) {
          await this.deps.store.deployments.transition(d.id, 'pending', { state: 'in_progress', phase: 'starting', progressAt: new Date().toISOString() }, 'release phase succeeded');
          this.deps.logs.platform(app.id, `Release phase of v${d.toVersion} succeeded`);
        } else {
          const reason = `release command failed (${why})${tail.length ? `: ${tail.slice(-3).join(' | ')}` : ''}`;
          const failed = await this.deps.store.transaction(async (tx) => {
            const m = await tx.deployments.transition(d.id, 'pending', { state: 'failed', reason, phase: 'failed', finishedAt: new Date().toISOString() }, reason);
            // Traffic never moved: the release before stays (or becomes again) the current one.
            if (m) await this.restore(tx, app, d.fromReleaseId);
            return m;
          });
          if (failed) await this.announce(app, failed, 'deployment.failed', `Deploy of v${d.toVersion} failed: ${reason}`);
        }
      } catch (err) {
        this.deps.logger.error({ err, deployment: d.id }, 'recording the release phase result failed');
      } finally {
        this.releasePhases.delete(d.id);
        this.deps.wake(app.organizationId, app.id);
      }
    })();
  }

  private async setPhase(d: DeploymentRow, phase: string): Promise<void> {
    if (this.lastPhase.get(d.id) === phase || d.phase === phase) return;
    this.lastPhase.set(d.id, phase);
    await this.deps.store.deployments.transition(d.id, d.state, { phase });
  }

  private forget(id: string): void {
    this.lastReady.delete(id);
    this.lastPhase.delete(id);
  }

  private async announce(app: AppRow, d: DeploymentRow, type: string, message: string): Promise<void> {
    this.deps.logs.platform(app.id, message);
    await this.deps.events.record({
      organizationId: app.organizationId, appId: app.id, type, message,
      data: { deploymentId: d.id, fromVersion: d.fromVersion, toVersion: d.toVersion, strategy: d.strategy, state: d.state, reason: d.reason },
    });
  }
}

function crashDescription(i: InstanceRow): string {
  const why = i.oomKilled ? 'ran out of memory' : i.signal ? `was killed by ${i.signal}` : `exited with code ${i.exitCode}`;
  const times = i.restarts > 1 ? ` (${i.restarts} times)` : '';
  const last = i.lastLog.length ? ` — last output: ${i.lastLog.slice(-2).join(' | ')}` : '';
  return `crashed: ${why}${times}${last}`;
}
