/**
 * Persistent volumes on the real platform (sandboxed instances, real router): a volume created
 * before the first deploy is pinned to the node its first instance lands on, the app writes into
 * it, and the file survives a restart, a config release and a redeploy; another app's sandbox
 * does not see it; destroying is refused while the process type runs, and once scaled to 0 it
 * removes the directory on the node. Bad input, roles and app deletion are checked on the way.
 * (Multi-node locality — instances stay on the volume's node, drains and power loss leave them
 * with the reason — is covered by scheduler.test.ts, plan.test.ts and the store suite.)
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { stat, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createClient } from '@shellwego/sdk';
import { appUid } from '../packages/agent/src/identity.ts';
import { platformSuite, waitFor } from './helpers/platform.ts';
import { appDir } from './helpers/apps.ts';

const suite = platformSuite({ isolation: 'sandbox' });
const { ok, run } = suite;

/** Writes, reads and lists files by absolute path inside its sandbox; says which boot answered. */
const fileApp = {
  'Procfile': 'web: node server.js\n',
  'server.js': `
const http = require('http');
const fs = require('fs');
const boot = Date.now() + '-' + Math.random().toString(36).slice(2);
http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const p = url.searchParams.get('path') || '';
  const reply = (status, body) => { res.statusCode = status; res.setHeader('content-type', 'application/json'); res.end(JSON.stringify({ boot, ...body })); };
  try {
    if (url.pathname === '/write') { fs.writeFileSync(p, url.searchParams.get('value') || ''); return reply(200, { written: p }); }
    if (url.pathname === '/read') return reply(200, { content: fs.readFileSync(p, 'utf8') });
    if (url.pathname === '/ls') return reply(200, { entries: fs.readdirSync(p).sort() });
    return reply(200, { uid: process.getuid() });
  } catch (err) {
    return reply(404, { error: err.code || String(err) });
  }
}).listen(process.env.PORT, () => console.log('listening on ' + process.env.PORT));
process.on('SIGTERM', () => process.exit(0));
`,
};

async function json<T = any>(args: string[]): Promise<T> {
  return JSON.parse((await ok([...args, '--json'])).stdout) as T;
}

async function fails(args: string[], message: RegExp): Promise<string> {
  const r = await run(args);
  assert.notEqual(r.code, 0, `shellwego ${args.join(' ')} should fail:\n${r.stdout}`);
  assert.match(r.stderr, message);
  return r.stderr;
}

async function get(app: string, path: string): Promise<{ status: number; body: any }> {
  const r = await suite.p.viaRouter(app, path);
  return { status: r.status, body: await r.json().catch(() => null) };
}

/** Waits until exactly `n` web instances run and none other is still around, then returns the one answering's boot id. */
async function settledBoot(app: string, notBoot?: string): Promise<string> {
  return waitFor(`${app} serves from a settled instance${notBoot ? ' other than the previous one' : ''}`, async () => {
    const ps = await json<any[]>(['ps', '--app', app]);
    if (ps.length !== 1 || ps[0].state !== 'running') return false;
    const r = await get(app, '/');
    return r.status === 200 && r.body.boot !== notBoot && r.body.boot;
  }, 120_000, 300);
}

const APP = 'vol-app';
const OTHER = 'vol-other';

describe('volumes', () => {
  let volumeId = '';
  let hostDir = '';

  test('create before the first deploy: bad input is refused with a clear message and changes nothing', async () => {
    await ok(['apps', 'create', APP]);
    await fails(['volumes', 'create', 'Data!', '--process', 'web', '--mount', '/data', '--app', APP], /volume names are lowercase letters/);
    await fails(['volumes', 'create', 'data', '--process', 'web', '--mount', '/app/data', '--app', APP], /\/app belongs to the platform inside the sandbox/);
    await fails(['volumes', 'create', 'data', '--process', 'web', '--mount', '/', '--app', APP], /cannot be mounted at \//);
    await fails(['volumes', 'create', 'data', '--process', 'web', '--mount', 'data', '--app', APP], /must be absolute/);
    await fails(['volumes', 'create', 'data', '--process', 'web', '--mount', '/data/../etc', '--app', APP], /normalised/);
    await fails(['volumes', 'create', 'data', '--process', 'Web', '--mount', '/data', '--app', APP], /process types are lowercase words/);
    await fails(['volumes', 'create', 'data', '--mount', '/data', '--app', APP], /--process is required/);
    assert.deepEqual(await json(['volumes', 'list', '--app', APP]), []);

    // A process type the app has no release for yet is fine: the volume waits for it.
    const v = await json<any>(['volumes', 'create', 'data', '--process', 'web', '--mount', '/data', '--size', '64', '--app', APP]);
    assert.equal(v.name, 'data');
    assert.equal(v.sizeMb, 64);
    assert.equal(v.nodeId, null, 'not pinned before an instance is placed');
    volumeId = v.id;
    hostDir = join(suite.p.dataDir, 'agent', 'volumes', volumeId);
    await fails(['volumes', 'create', 'data', '--process', 'worker', '--mount', '/other', '--app', APP], /already has a volume named 'data'/);
    await fails(['volumes', 'create', 'more', '--process', 'web', '--mount', '/data/sub', '--app', APP], /web already mounts volume 'data' at \/data, which overlaps \/data\/sub/);
    const list = await json<any[]>(['volumes', '--app', APP]);
    assert.deepEqual(list.map((x) => [x.name, x.processType, x.mountPath]), [['data', 'web', '/data']]);
    assert.match((await ok(['volumes', '--app', APP])).stdout, /data\s+web\s+\/data\s+64 MB\s+not placed yet/);
  });

  test('roles: a viewer lists volumes but cannot create or destroy them', async () => {
    const admin = await suite.p.client(suite.token);
    const added = await admin.call('addMember', { body: { email: 'vol-viewer@example.com', role: 'viewer' } });
    const viewer = createClient({ baseUrl: suite.p.apiUrl, token: await suite.p.token('vol-viewer@example.com', added.initialPassword!) });
    assert.deepEqual((await viewer.call('listVolumes', { params: { app: APP } })).map((v) => v.name), ['data']);
    assert.equal((await viewer.call('getVolume', { params: { app: APP, volume: 'data' } })).id, volumeId);
    for (const attempt of [
      viewer.call('createVolume', { params: { app: APP }, body: { name: 'sneaky', processType: 'web', mountPath: '/sneaky' } }),
      viewer.call('deleteVolume', { params: { app: APP, volume: 'data' } }),
    ]) await assert.rejects(attempt, (e: { status?: number }) => e.status === 403);
    assert.deepEqual((await admin.call('listVolumes', { params: { app: APP } })).map((v) => v.name), ['data']);
  });

  test('deploy: the first instance pins the volume to its node; the app writes into it as its own user', async () => {
    await ok(['deploy', await appDir(fileApp), '--app', APP]);
    await settledBoot(APP);
    const v = await json<any>(['volumes', 'info', 'data', '--app', APP]);
    const [node] = await json<any[]>(['nodes', 'list']);
    assert.equal(v.nodeId, node.id);
    assert.equal(v.nodeName, node.name);
    assert.match((await ok(['volumes', 'info', 'data', '--app', APP])).stdout, new RegExp(`Node:\\s+${node.name} \\(${node.id}\\)`));

    const w = await get(APP, '/write?path=/data/hello.txt&value=kept');
    assert.equal(w.status, 200, JSON.stringify(w.body));
    // On the node: <dataDir>/volumes/<id>, 0700, owned by the app's uid; the file is there.
    const st = await stat(hostDir);
    assert.equal(st.mode & 0o777, 0o700);
    const appId = (await json<any>(['apps', 'info', '--app', APP])).id;
    assert.equal(st.uid, appUid(appId));
    assert.equal(await readFile(join(hostDir, 'hello.txt'), 'utf8'), 'kept');
  });

  test('the data survives a restart, a config release and a redeploy', async () => {
    let boot = (await get(APP, '/')).body.boot as string;
    await ok(['restart', '--app', APP]);
    boot = await settledBoot(APP, boot);
    assert.deepEqual((await get(APP, '/read?path=/data/hello.txt')).body.content, 'kept');

    await ok(['config', 'set', 'COLOUR=blue', '--app', APP]);
    boot = await settledBoot(APP, boot);
    assert.deepEqual((await get(APP, '/read?path=/data/hello.txt')).body.content, 'kept');

    await ok(['deploy', await appDir({ ...fileApp, 'README': 'v2' }), '--app', APP]);
    await settledBoot(APP, boot);
    assert.equal((await get(APP, '/read?path=/app/README')).body.content, 'v2', 'the new release runs');
    assert.deepEqual((await get(APP, '/read?path=/data/hello.txt')).body.content, 'kept');
    assert.deepEqual((await get(APP, '/ls?path=/data')).body.entries, ['hello.txt']);
  });

  test("another app's sandbox does not see the volume", async () => {
    await ok(['apps', 'create', OTHER]);
    await ok(['deploy', await appDir(fileApp), '--app', OTHER]);
    await settledBoot(OTHER);
    assert.equal((await get(OTHER, '/ls?path=/data')).body.error, 'ENOENT');
    // Nor the node's directory by its host path: the sandbox's file system has none of the data dir.
    const byHostPath = await get(OTHER, `/read?path=${encodeURIComponent(join(hostDir, 'hello.txt'))}`);
    assert.equal(byHostPath.status, 404);
    assert.match(byHostPath.body.error, /^(ENOENT|EACCES)$/);
    assert.equal((await get(OTHER, '/write?path=/data/x&value=y')).status, 404);
    assert.deepEqual(await json(['volumes', '--app', OTHER]), []);
    await ok(['apps', 'delete', OTHER, '--confirm', OTHER]);
  });

  test('destroy: refused while web runs (and the app cannot be deleted with it); scaled to 0, it removes the directory on the node', async () => {
    await fails(['volumes', 'destroy', 'data', '--app', APP], /re-run with --confirm data/);
    await fails(['volumes', 'destroy', 'data', '--confirm', 'date', '--app', APP], /does not match the volume name/);
    await fails(['volumes', 'destroy', 'data', '--confirm', 'data', '--app', APP], /volume data is mounted by web \(scaled to 1\): scale it to 0 first/);
    await fails(['apps', 'delete', APP, '--confirm', APP], /has 1 volume\(s\) \(data\): destroy them first/);
    assert.equal(await readFile(join(hostDir, 'hello.txt'), 'utf8'), 'kept', 'nothing was removed');

    await ok(['scale', 'web=0', '--app', APP]);
    await waitFor('no web instance left', async () => (await json<any[]>(['ps', '--app', APP])).length === 0, 60_000);
    assert.deepEqual(await json(['volumes', 'destroy', 'data', '--confirm', 'data', '--app', APP]), { deleted: true });
    await waitFor('the node removed the volume directory', async () => !(await stat(hostDir).then(() => true, () => false)), 30_000);
    assert.deepEqual(await json(['volumes', '--app', APP]), []);
    await fails(['volumes', 'info', 'data', '--app', APP], /not found/i);
    // Without volumes the app goes as before.
    await ok(['apps', 'delete', APP, '--confirm', APP]);
    await fails(['volumes', '--app', APP], /not found/i);
  });
});
