/**
 * A control plane killed (-9) in the middle of a rolling deploy, in split mode (server and node
 * over NATS): while it is down the node keeps serving; after it restarts, the deployment resumes
 * from the database and finishes (or rolls back) — never half-and-half — and a load generator
 * against the app sees zero failed requests the whole time.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from './helpers/platform.ts';
import { appDir, knobApp } from './helpers/apps.ts';
import { splitSuite } from './helpers/split.ts';

// JetStream on: statuses the agent reports while the control plane is down reach it after the restart.
const suite = splitSuite({ isolation: 'sandbox', jetstream: true });
const { ok } = suite;

async function json<T = any>(args: string[]): Promise<T> {
  return JSON.parse((await ok([...args, '--json'])).stdout) as T;
}

async function latest(app: string): Promise<any> {
  return (await json<any[]>(['deployments', '--app', app, '-n', '1']))[0];
}

describe('control plane killed during a rolling deploy', () => {
  test('3 instances under load: kill -9 mid-rollout, restart, the deployment finishes, zero failed requests', async () => {
    await ok(['apps', 'create', 'crashy']);
    await ok(['config', 'set', 'VERSION=v1', '--app', 'crashy']);
    await ok(['deploy', await appDir(knobApp), '--app', 'crashy']);
    await ok(['scale', 'web=3', '--app', 'crashy']);
    await waitFor('3 running', async () => (await json<any[]>(['ps', '--app', 'crashy'])).filter((i) => i.state === 'running').length === 3, 90_000, 300);
    await waitFor('first deployment done', async () => (await latest('crashy'))?.state === 'succeeded', 60_000, 300);

    const load = suite.p.load('crashy', { concurrency: 4 }).start();
    await load.succeeded(50);
    // Each new instance takes ~2 s to listen, so the rollout of 3 is surely under way when the kill lands.
    const r = await json<any>(['config', 'set', 'VERSION=v2', 'BOOT_DELAY_MS=2000', '--app', 'crashy']);
    const to = r.release.version as number;
    await waitFor('one new instance ready, the rollout not finished', async () => {
      const ps = await json<any[]>(['ps', '--app', 'crashy']);
      const fresh = ps.filter((i) => i.releaseVersion === to && i.state === 'running');
      const d = await latest('crashy');
      return d.toVersion === to && d.state === 'in_progress' && fresh.length >= 1 && fresh.length < 3;
    }, 60_000, 100);

    await suite.p.killServer();
    // The node serves on with its last route table and assignments while the control plane is gone.
    await load.succeeded(100);
    await suite.p.restartServer();

    const d = await waitFor('the deployment settles after the restart', async () => {
      const x = await latest('crashy');
      return x.toVersion === to && ['succeeded', 'rolled_back', 'failed'].includes(x.state) && x;
    }, 120_000, 300);
    assert.equal(d.state, 'succeeded', JSON.stringify(d));
    // Never half-and-half: every instance runs the new release, and the old ones are gone.
    await waitFor('only the new release runs', async () => {
      const ps = await json<any[]>(['ps', '--app', 'crashy']);
      return ps.length === 3 && ps.every((i) => i.state === 'running' && i.releaseVersion === to);
    }, 60_000, 300);
    await load.succeeded(50);
    const res = await load.stop();
    assert.equal(res.failed, 0, res.errors.join('\n'));
    assert.ok(res.bodies.has('v1') && res.bodies.has('v2'), [...res.bodies.keys()].join(', '));
  });
});
