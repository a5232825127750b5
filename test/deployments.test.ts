/**
 * Deployments on the real platform (sandboxed instances, real router): rolling under load with
 * zero failed requests, HTTP readiness gating, automatic rollback (crash, failed health, canary
 * error rate), blue-green, canary promotion, recreate, the release phase, graceful shutdown, and
 * bad settings that change nothing. Config changes make the releases: no rebuild per case.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { platformSuite, waitFor } from './helpers/platform.ts';
import { appDir, knobApp } from './helpers/apps.ts';
import { LoadGenerator } from './helpers/load.ts';

const suite = platformSuite({ isolation: 'sandbox' });
const { ok, run } = suite;

async function json<T = any>(args: string[]): Promise<T> {
  return JSON.parse((await ok([...args, '--json'])).stdout) as T;
}

/** Waits for the app's newest deployment to reach a final state and returns it. */
async function settled(app: string, toVersion?: number, timeoutMs = 90_000): Promise<any> {
  let last: unknown;
  try {
    return await waitFor(`deployment of ${app} settles`, async () => {
      const [d] = await json<any[]>(['deployments', '--app', app, '-n', '1']);
      last = d;
      if (!d || (toVersion !== undefined && d.toVersion !== toVersion)) return false;
      return ['succeeded', 'rolled_back', 'failed'].includes(d.state) && d;
    }, timeoutMs, 300);
  } catch (err) {
    const ps = await json<any[]>(['ps', '--app', app]).catch(() => []);
    const logs = await json<any[]>(['logs', '--app', app, '-n', '60']).catch(() => []);
    throw new Error(`${(err as Error).message}\nlast deployment: ${JSON.stringify(last, null, 1)}\nps: ${JSON.stringify(ps.map((i) => [i.type, i.index, i.releaseVersion, i.state, i.restarts, i.lastLog]))}\nlogs:\n${logs.map((l) => l.line).join('\n')}`);
  }
}

/** `config set …`: makes a release; returns its version (versions of failed releases are not reused). */
async function release(app: string, ...pairs: string[]): Promise<number> {
  const r = await json<any>(['config', 'set', ...pairs, '--app', app]);
  return r.release.version;
}

async function currentVersion(app: string): Promise<number> {
  const rels = await json<any[]>(['releases', '--app', app]);
  return rels.find((r) => r.current).version;
}

async function setup(app: string, web: number, config: Record<string, string> = {}) {
  await ok(['apps', 'create', app]);
  await ok(['config', 'set', 'VERSION=v1', ...Object.entries(config).map(([k, v]) => `${k}=${v}`), '--app', app]);
  await ok(['deploy', await appDir(knobApp), '--app', app]);
  if (web !== 1) await ok(['scale', `web=${web}`, '--app', app]);
  await waitFor(`${web} ready`, async () => (await json<any[]>(['ps', '--app', app])).filter((i) => i.state === 'running').length === web, 60_000);
  await settled(app);
}

const load = (app: string, extra: { concurrency?: number } = {}) =>
  new LoadGenerator({ port: suite.p.routerPort, host: `${app}.localhost`, concurrency: 4, keepSequence: true, ...extra }).start();

describe('deployments', () => {
  test('rolling deploy of 3 instances under constant load: zero failed requests', async () => {
    await setup('roll', 3);
    const l = load('roll');
    await l.succeeded(50);
    const before = await currentVersion('roll');
    const v_d = await release('roll', 'VERSION=v2');
    const d = await settled('roll', v_d);
    await l.succeeded(100);
    const r = await l.stop();
    assert.equal(d.state, 'succeeded', JSON.stringify(d));
    assert.equal(d.strategy, 'rolling');
    assert.equal(d.fromVersion, before);
    assert.equal(r.failed, 0, r.errors.join('\n'));
    assert.ok(r.sequence.includes('v1') && r.sequence.includes('v2'));
    assert.deepEqual(new Set(r.sequence.slice(-20)), new Set(['v2']));
    // Drained old instances are stopped a little after the deployment is done.
    await waitFor('only the new release runs', async () => {
      const ps = await json<any[]>(['ps', '--app', 'roll']);
      return ps.length === 3 && ps.every((i) => i.state === 'running' && i.releaseVersion === v_d);
    }, 30_000);
  });

  test('restart under load: instances are replaced one by one, zero failed requests', async () => {
    const before = (await json<any[]>(['ps', '--app', 'roll'])).map((i) => i.id).sort();
    const l = load('roll');
    await l.succeeded(20);
    await ok(['restart', '--app', 'roll']);
    await waitFor('every instance replaced', async () => {
      const ps = await json<any[]>(['ps', '--app', 'roll']);
      return ps.length === 3 && ps.every((i) => i.state === 'running' && !before.includes(i.id));
    }, 60_000);
    await l.succeeded(20);
    const r = await l.stop();
    assert.equal(r.failed, 0, r.errors.join('\n'));
  });

  test('a release whose instances crash rolls back by itself; the old one serves throughout', async () => {
    const l = load('roll');
    const before = await currentVersion('roll');
    const v_d = await release('roll', 'CRASH_ON_BOOT=1');
    const d = await settled('roll', v_d);
    const r = await l.stop();
    assert.equal(d.state, 'rolled_back', JSON.stringify(d));
    assert.match(d.reason, /web\.\d \(v\d+\) crashed: exited with code 3/);
    assert.match(d.reason, /boom: CRASH_ON_BOOT is set/);
    assert.equal(r.failed, 0, r.errors.join('\n'));
    assert.equal(await currentVersion('roll'), before, 'the previous release is current again');
    const cfg = await json<Record<string, string>>(['config', '--app', 'roll']);
    assert.equal(cfg.CRASH_ON_BOOT, undefined, 'config is back to what runs: the next change does not redeploy the crash');
    const info = await ok(['deployments', 'info', d.id, '--app', 'roll']);
    assert.match(info.stdout, /rolling back to v\d+/);
    assert.match(info.stdout, /Rolled back to v\d+/);
    const events = await json<any[]>(['events', '--app', 'roll']);
    assert.ok(events.some((e) => e.type === 'deployment.rolling_back'), 'the rollback is an event');
  });

  test('an HTTP health check keeps traffic off instances until they pass; a release that never passes is rolled back', async () => {
    await ok(['healthcheck', 'set', 'web', '--path', '/health', '--interval', '0.2', '--timeout', '1', '--app', 'roll']);
    await ok(['deploy-settings', '--health-timeout', '5', '--app', 'roll']);
    const l = load('roll');
    // New instances answer 503 for 1.5 s after boot: a TCP check would send them traffic at once.
    let before = await currentVersion('roll');
    const v_good = await release('roll', 'VERSION=v3', 'HEALTH_DELAY_MS=1500');
    const good = await settled('roll', v_good);
    assert.equal(good.state, 'succeeded', JSON.stringify(good));
    before = await currentVersion('roll');
    const v_bad = await release('roll', 'HEALTH=fail');
    const bad = await settled('roll', v_bad);
    const r = await l.stop();
    assert.equal(r.failed, 0, r.errors.join('\n'));
    assert.equal(bad.state, 'rolled_back');
    assert.match(bad.reason, /not ready within 5s/);
    assert.match(bad.reason, /503/);
    const formation = await json<any[]>(['ps', '--app', 'roll']);
    assert.ok(formation.every((i) => i.releaseVersion === before));
  });

  test('blue-green: all traffic moves to the new release at once, with zero failures', async () => {
    await ok(['deploy-settings', '--strategy', 'blue-green', '--app', 'roll']);
    const l = load('roll', { concurrency: 1 });
    const v_d = await release('roll', 'VERSION=v4');
    const d = await settled('roll', v_d);
    await l.succeeded(20);
    const r = await l.stop();
    assert.equal(d.state, 'succeeded', JSON.stringify(d));
    assert.equal(r.failed, 0, r.errors.join('\n'));
    // One request at a time: the sequence is old…old new…new, exactly one switch.
    const switches = r.sequence.filter((b, i) => i > 0 && b !== r.sequence[i - 1]).length;
    assert.equal(switches, 1, r.sequence.join(' '));
    assert.equal(r.sequence.at(-1), 'v4');
  });

  test('canary: a release with errors is aborted on its error rate; a good one is promoted', async () => {
    await ok(['deploy-settings', '--strategy', 'canary', '--canary-steps', '50', '--canary-step-seconds', '4', '--canary-min-requests', '20', '--canary-max-error-rate', '0.2', '--app', 'roll']);
    let before = await currentVersion('roll');
    const bad = load('roll');
    const v_aborted = await release('roll', 'VERSION=v5', 'ERROR_RATE=0.7');
    const aborted = await settled('roll', v_aborted);
    await bad.stop();
    assert.equal(aborted.state, 'rolled_back', JSON.stringify(aborted));
    assert.match(aborted.reason, /canary error rate \d+(\.\d)?% \(\d+\/\d+ requests failed\) is above 20\.0%/);
    assert.equal(await currentVersion('roll'), before);

    before = await currentVersion('roll');
    const l = load('roll');
    const v_d = await release('roll', 'VERSION=v6');
    const d = await settled('roll', v_d);
    const r = await l.stop();
    assert.equal(d.state, 'succeeded', JSON.stringify(d));
    assert.equal(r.failed, 0, r.errors.join('\n'));
    assert.ok(d.history.some((h: any) => /canary 50% passed/.test(h.message)), JSON.stringify(d.history));
    // During the step both releases answered.
    const during = r.sequence.slice(0, r.sequence.lastIndexOf('v4') + 1);
    assert.ok(during.includes('v6') && during.includes('v4'), 'traffic was split during the canary step');
  });

  test('recreate: every old instance is stopped before a new one starts', async () => {
    await ok(['deploy-settings', '--strategy', 'recreate', '--app', 'roll']);
    const before = await currentVersion('roll');
    const v_d = await release('roll', 'VERSION=v7');
    const d = await settled('roll', v_d);
    assert.equal(d.state, 'succeeded');
    const all = (await json<any[]>(['logs', '--app', 'roll', '-n', '500'])).filter((x) => x.source === 'platform').map((x) => x.line as string);
    const lines = all.slice(all.map((x) => x.startsWith(`Release v${v_d}:`)).lastIndexOf(true));
    const lastOldGone = Math.max(...lines.map((x, i) => (new RegExp(`^(Draining|Stopping) web\\.\\d \\(v${before}\\)`).test(x) ? i : -1)));
    const firstNew = lines.findIndex((x) => new RegExp(`^Starting web\\.\\d \\(v${v_d}\\)`).test(x));
    assert.ok(lastOldGone >= 0 && firstNew > lastOldGone, `old gone at ${lastOldGone}, first new at ${firstNew}:\n${lines.join('\n')}`);
  });

  test('graceful shutdown: an in-flight request finishes; an app ignoring SIGTERM is killed after the stop timeout', async () => {
    await ok(['deploy-settings', '--strategy', 'rolling', '--drain', '1', '--stop-timeout', '2', '--app', 'roll']);
    // One instance, so the slow request is surely on the one that is replaced.
    await ok(['scale', 'web=1', '--app', 'roll']);
    await waitFor('one instance', async () => (await json<any[]>(['ps', '--app', 'roll'])).length === 1, 30_000);
    // A 4 s request is in flight when its instance is drained (1 s) and sent SIGTERM: it still completes.
    const slow = suite.p.viaRouter('roll', '/slow?ms=4000');
    await new Promise((r) => setTimeout(r, 300));
    const v1 = await release('roll', 'VERSION=v8');
    const res = await slow;
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'v7 slow');
    await settled('roll', v1);
    await waitFor('old instance stopped', async () => (await json<any[]>(['ps', '--app', 'roll'])).every((i) => i.releaseVersion === v1), 30_000);
    const sigterm = (await json<any[]>(['logs', '--app', 'roll', '-n', '500'])).map((x) => x.line as string);
    assert.ok(sigterm.some((x) => x === 'v7 got SIGTERM: finishing in-flight requests'), 'the old instance was asked to stop while the request ran');

    await settled('roll', await release('roll', 'IGNORE_SIGTERM=1'));
    const v3 = await release('roll', 'VERSION=v9');
    await settled('roll', v3);
    // The instance before ignores SIGTERM: it is SIGKILLed 2 s later, not left running.
    await waitFor('SIGTERM-ignoring instance gone', async () => (await json<any[]>(['ps', '--app', 'roll'])).every((i) => i.releaseVersion === v3), 30_000);
    const logs = (await json<any[]>(['logs', '--app', 'roll', '-n', '500'])).map((x) => x.line as string);
    assert.ok(logs.some((x) => /ignoring SIGTERM/.test(x)), 'the app saw SIGTERM first');
  });

  test('release phase: runs before traffic moves; a failing release command keeps the old release', async () => {
    await ok(['apps', 'create', 'rel']);
    await ok(['config', 'set', 'VERSION=v1', '--app', 'rel']);
    const dir = await appDir({
      ...knobApp,
      'Procfile': 'web: node server.js\nrelease: node release.js\n',
      'release.js': `console.log('migrating to ' + process.env.VERSION); process.exit(Number(process.env.RELEASE_EXIT || 0));`,
    });
    await ok(['deploy', dir, '--app', 'rel']);
    const first = await settled('rel');
    assert.equal(first.state, 'succeeded', JSON.stringify(first));
    assert.ok(first.history.some((h: any) => h.message === 'release phase succeeded'));
    const logs = (await json<any[]>(['logs', '--app', 'rel', '-n', '200'])).map((x) => x.line as string);
    assert.ok(logs.some((x) => x === 'release: migrating to v1'), logs.join('\n'));

    const before = await currentVersion('rel');
    const v_failed = await release('rel', 'VERSION=v2', 'RELEASE_EXIT=1');
    const failed = await settled('rel', v_failed);
    assert.equal(failed.state, 'failed');
    assert.match(failed.reason, /release command failed \(exit code 1\): migrating to v2/);
    assert.equal(await currentVersion('rel'), before);
    const res = await suite.p.viaRouter('rel', '/');
    assert.equal(await res.text(), 'v1');
    const ps = await json<any[]>(['ps', '--app', 'rel']);
    assert.ok(ps.every((i) => i.type === 'web' && i.releaseVersion === before), 'the release command never runs as a process');
  });

  test('bad settings and checks are refused with a clear error and change nothing', async () => {
    const before = await json<any>(['deploy-settings', '--app', 'roll']);
    let r = await run(['deploy-settings', '--max-surge', '0', '--max-unavailable', '0', '--app', 'roll']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /maxSurge and maxUnavailable cannot both be 0/);
    r = await run(['deploy-settings', '--strategy', 'sideways', '--app', 'roll']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--strategy must be one of rolling, blue-green, canary, recreate/);
    r = await run(['healthcheck', 'set', 'web', '--path', 'no-slash', '--app', 'roll']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /path must start with \//);
    r = await run(['healthcheck', 'set', 'worker', '--path', '/h', '--app', 'roll']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no process type worker/);
    assert.deepEqual(await json<any>(['deploy-settings', '--app', 'roll']), before);
    const [last] = await json<any[]>(['deployments', '--app', 'roll', '-n', '1']);
    r = await run(['deployments', 'abort', last.id, '--app', 'roll']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /only a pending or in-progress deployment can be aborted/);
    r = await run(['deployments', 'info', 'dep_nope', '--app', 'roll']);
    assert.equal(r.code, 1);
  });
});
