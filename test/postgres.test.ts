/**
 * The control plane on PostgreSQL (split mode: `server --database postgres://…` and a node over
 * NATS). Deploys work as on SQLite; while PostgreSQL is down the API answers 503 with a clear
 * message and apps keep serving; when it is back the API recovers by itself. Two control planes
 * on one database: one leads the controllers, either serves the API, and when the leader is
 * killed the other takes over.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres } from '../packages/store/src/testing/postgres-server.ts';
import type { PostgresServer } from '../packages/store/src/testing/postgres-server.ts';
import { cliOk, waitFor } from './helpers/platform.ts';
import { SplitPlatform } from './helpers/split.ts';
import { appDir, knobApp } from './helpers/apps.ts';
import { createClient } from '@shellwego/sdk';

let pg: PostgresServer;
let p: SplitPlatform;
let token = '';
let cwd = '';
const ok = (args: string[]) => cliOk(p, args, token, cwd);

before(async () => {
  pg = await startPostgres();
  const url = await pg.createDatabase();
  p = await SplitPlatform.start({ isolation: 'sandbox', env: { SHELLWEGO_DATABASE_URL: url } });
  token = await p.token();
  cwd = await mkdtemp(join(tmpdir(), 'swg-cwd-'));
});

after(async () => {
  await p?.destroy();
  await pg?.close();
  if (cwd) await rm(cwd, { recursive: true, force: true });
});

describe('control plane on PostgreSQL', () => {
  test('deploy, scale and config work with the state in PostgreSQL', async () => {
    assert.match(p.server.output, /database: PostgreSQL 127\.0\.0\.1:\d+/);
    await ok(['apps', 'create', 'pgapp']);
    await ok(['config', 'set', 'VERSION=v1', '--app', 'pgapp']);
    await ok(['deploy', await appDir(knobApp), '--app', 'pgapp']);
    await ok(['scale', 'web=2', '--app', 'pgapp']);
    await waitFor('2 running', async () => JSON.parse((await ok(['ps', '--app', 'pgapp', '--json'])).stdout).filter((i: any) => i.state === 'running').length === 2, 90_000, 300);
    const r = await p.fetchViaRouter('pgapp');
    assert.deepEqual(r, { status: 200, body: 'v1' });
  });

  test('PostgreSQL down: the API answers 503 with a clear message, apps keep serving; back: it recovers by itself', async () => {
    const load = p.load('pgapp', { concurrency: 2 }).start();
    await load.succeeded(20);
    await pg.stop();
    const down = await waitFor('503 from the API', async () => {
      const r = await fetch(`${p.apiUrl}/v1/apps`, { headers: { authorization: `Bearer ${token}` } });
      return r.status === 503 && ((await r.json()) as { error: { code: string; message: string } });
    }, 30_000, 300);
    assert.equal(down.error.code, 'store_unavailable');
    assert.match(down.error.message, /database/i);
    await load.succeeded(50); // the node serves from its last route table
    await pg.start();
    await waitFor('the API works again', async () => (await fetch(`${p.apiUrl}/v1/apps`, { headers: { authorization: `Bearer ${token}` } })).status === 200, 60_000, 300);
    await ok(['config', 'set', 'VERSION=v2', '--app', 'pgapp']);
    await waitFor('v2 serves', async () => (await p.fetchViaRouter('pgapp')).body === 'v2', 90_000, 300);
    const res = await load.stop();
    assert.equal(res.failed, 0, res.errors.join('\n'));
  });

  test('two control planes on one database: either serves the API, one leads; kill the leader and the other takes over', async () => {
    const second = await p.addServer();
    const follower = createClient({ baseUrl: second.apiUrl, token });
    const running = async () => (await follower.call('listInstances', { params: { app: 'pgapp' } })).filter((i) => i.state === 'running' && i.type === 'web').length;
    const load = p.load('pgapp', { concurrency: 2 }).start();
    // A write through the server that does not lead: the leader reconciles it.
    await follower.call('scale', { params: { app: 'pgapp' }, body: { quantities: { web: 3 } } });
    await waitFor('3 running, scaled through the follower', async () => (await running()) === 3, 60_000, 300);

    await p.killServer(); // the leader (it started first) dies
    await follower.call('scale', { params: { app: 'pgapp' }, body: { quantities: { web: 1 } } });
    await waitFor('the second control plane leads and scales down', async () => {
      const list = await follower.call('listInstances', { params: { app: 'pgapp' } });
      return list.length === 1 && list[0].state === 'running';
    }, 60_000, 300);
    await load.succeeded(20);
    const res = await load.stop();
    assert.equal(res.failed, 0, res.errors.join('\n'));
  });
});
