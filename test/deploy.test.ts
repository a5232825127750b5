/**
 * The newcomer's path end to end, on the real platform with sandboxed instances: CLI deploys
 * from source, the router serves the app, then logs, scale, config, releases, rollback, restart.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ROOT, platformSuite, waitFor } from './helpers/platform.ts';
import { appDir, bootStampApp } from './helpers/apps.ts';

const suite = platformSuite({ isolation: 'sandbox' });
const { ok } = suite;

async function json<T = any>(args: string[]): Promise<T> {
  return JSON.parse((await ok([...args, '--json'])).stdout) as T;
}

async function get(app: string, path = '/') {
  const r = await suite.p.viaRouter(app, path);
  return { status: r.status, text: await r.text() };
}

describe('node example: deploy, serve, operate', () => {
  test('deploy examples/node-express and reach it through the router', async () => {
    await ok(['apps', 'create', 'hello']);
    const d = await ok(['deploy', join(ROOT, 'examples/node-express'), '--app', 'hello']);
    assert.match(d.stdout + d.stderr, /hello\.localhost/);
    const r = await waitFor('200 from hello', async () => { const g = await get('hello'); return g.status === 200 && g; }, 30_000);
    assert.match(r.text, /Hello from ShellWeGo/);
  });

  test('ps shows a running sandboxed web instance', async () => {
    const ps = await json<any[]>(['ps', '--app', 'hello']);
    const web = ps.filter((i) => i.type === 'web' && i.state === 'running');
    assert.equal(web.length, 1, JSON.stringify(ps));
    assert.match(web[0].address, /^10\.\d+\.\d+\.\d+:\d+$/, 'each instance has its own IP on the platform bridge');
  });

  test('logs include the app output and platform lines', async () => {
    await get('hello', '/logged-path');
    await waitFor('app log line', async () => {
      const lines = await json<any[]>(['logs', '--app', 'hello', '-n', '200']);
      return lines.some((l) => l.source === 'app' && /logged-path/.test(l.line)) && lines.some((l) => l.source === 'platform');
    }, 15_000);
  });

  test('scale web=2: two instances serve, on different addresses', async () => {
    await ok(['scale', 'web=2', '--app', 'hello']);
    const ps = await waitFor('two running', async () => {
      const list = await json<any[]>(['ps', '--app', 'hello']);
      const running = list.filter((i) => i.type === 'web' && i.state === 'running');
      return running.length === 2 && running;
    }, 30_000);
    assert.notEqual(ps[0].address, ps[1].address);
    for (let i = 0; i < 6; i++) assert.equal((await get('hello')).status, 200);
  });

  test('config set creates a release and rolls instances; rollback restores', async () => {
    await ok(['config', 'set', 'GREETING=hi there', 'OTHER=x=y', '--app', 'hello']);
    const cfg = await json<Record<string, string>>(['config', '--app', 'hello']);
    assert.deepEqual(cfg, { GREETING: 'hi there', OTHER: 'x=y' });
    const releases = await json<any[]>(['releases', '--app', 'hello']);
    assert.equal(releases[0].version, 2);
    assert.match(releases[0].description, /Set GREETING, OTHER/);
    // The app list reads the current releases' versions in one bulk query.
    assert.equal((await json<any[]>(['apps', 'list'])).find((a) => a.name === 'hello')?.currentRelease, 2);
    await waitFor('instances on v2', async () => {
      const list = await json<any[]>(['ps', '--app', 'hello']);
      const running = list.filter((i) => i.state === 'running');
      return running.length === 2 && running.every((i) => i.releaseVersion === 2);
    }, 30_000);
    await ok(['config', 'unset', 'OTHER', '--app', 'hello']);
    assert.deepEqual(await json(['config', '--app', 'hello']), { GREETING: 'hi there' });

    await ok(['rollback', 'v1', '--app', 'hello']);
    const after = await json<any[]>(['releases', '--app', 'hello']);
    assert.equal(after[0].version, 4);
    assert.match(after[0].description, /Rollback to v1/);
    assert.equal(after[0].current, true);
    assert.deepEqual(await json(['config', '--app', 'hello']), {}, 'rollback restores the config of the target release');
    await waitFor('instances on v4', async () => {
      const list = await json<any[]>(['ps', '--app', 'hello']);
      const running = list.filter((i) => i.state === 'running');
      return running.length === 2 && running.every((i) => i.releaseVersion === 4);
    }, 30_000);
    assert.equal((await get('hello')).status, 200);
  });

  test('an unchanged redeploy reuses the dependency cache', async () => {
    await ok(['deploy', join(ROOT, 'examples/node-express'), '--app', 'hello']);
    const builds = await json<any[]>(['builds', '--app', 'hello']).catch(async () => {
      const c = await suite.p.client(suite.token);
      return c.call('listBuilds', { params: { app: 'hello' } });
    });
    assert.equal(builds[0].state, 'succeeded');
    assert.equal(builds[0].cacheHit, true);
  });
});

describe('apps of every kind', () => {
  for (const [name, dir, expect] of [
    ['py', 'examples/python-stdlib', /python/i],
    ['site', 'examples/static-site', /<html/i],
  ] as const) {
    test(`${dir} deploys and serves`, async () => {
      await ok(['apps', 'create', name]);
      await ok(['deploy', join(ROOT, dir), '--app', name]);
      const r = await waitFor(`200 from ${name}`, async () => { const g = await get(name); return g.status === 200 && g; }, 30_000);
      assert.match(r.text, expect);
    });
  }

  test('Procfile web + worker: the worker runs when scaled, and logs', async () => {
    await ok(['apps', 'create', 'duo']);
    await ok(['deploy', join(ROOT, 'examples/procfile-worker'), '--app', 'duo']);
    await waitFor('web 200', async () => (await get('duo')).status === 200, 30_000);
    await ok(['scale', 'worker=1', '--app', 'duo']);
    await waitFor('worker running and logging', async () => {
      const ps = await json<any[]>(['ps', '--app', 'duo']);
      const lines = await json<any[]>(['logs', '--app', 'duo', '-n', '300']);
      return ps.some((i) => i.type === 'worker' && i.state === 'running') && lines.some((l) => l.type === 'worker.1' && l.source === 'app');
    }, 30_000);
  });

  test('restart replaces the process', async () => {
    const dir = await appDir(bootStampApp);
    await ok(['apps', 'create', 'stamp']);
    await ok(['deploy', dir, '--app', 'stamp']);
    const first = JSON.parse((await waitFor('stamp', async () => { const g = await get('stamp'); return g.status === 200 && g; }, 30_000)).text);
    assert.notEqual(first.uid, 0, 'apps run as an unprivileged user');
    assert.equal(first.dyno, 'web.1');
    await ok(['restart', '--app', 'stamp']);
    await waitFor('new boot stamp', async () => {
      const g = await get('stamp');
      return g.status === 200 && JSON.parse(g.text).started !== first.started;
    }, 30_000);
  });
});
