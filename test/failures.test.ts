/**
 * Failure behaviour on the real platform: crashing apps, the memory limit, failed builds, and a
 * kill -9 of the whole platform while apps run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { platformSuite, waitFor } from './helpers/platform.ts';
import { appDir, bootStampApp } from './helpers/apps.ts';

const suite = platformSuite({ isolation: 'sandbox' });
const { ok, run } = suite;
async function ps(app: string): Promise<any[]> {
  return JSON.parse((await ok(['ps', '--app', app, '--json'])).stdout);
}
async function serving(app: string) {
  return waitFor(`200 from ${app}`, async () => {
    const r = await suite.p.viaRouter(app);
    return r.status === 200 && (await r.text());
  }, 30_000);
}

test('an app whose start command exits shows crashed with the exit code and its last lines', async () => {
  const dir = await appDir({ Procfile: 'web: echo "starting up"; echo "fatal: DATABASE_URL is not set" >&2; exit 3\n' });
  await ok(['apps', 'create', 'crasher']);
  const d = await run(['deploy', dir, '--app', 'crasher', '--wait-timeout', '5']);
  assert.notEqual(d.code, 0, 'deploy reports that the app did not come up');
  const inst = await waitFor('crashed', async () => (await ps('crasher')).find((i) => i.state === 'crashed' && i.exitCode === 3), 30_000);
  assert.ok(inst.lastLog.some((l: string) => /DATABASE_URL is not set/.test(l)), JSON.stringify(inst.lastLog));
  // The human table says the same; the instance may be restarting (backoff) between two reads, so
  // look until a read catches it crashed.
  const human = await waitFor('ps shows crashed', async () => {
    const out = (await ok(['ps', '--app', 'crasher'])).stdout;
    return /crashed/.test(out) && out;
  }, 30_000);
  assert.match(human, /exit 3/);
  await waitFor('restarted with backoff', async () => (await ps('crasher')).some((i) => i.restarts >= 1), 30_000);
  assert.equal((await fetch(`${suite.p.apiUrl}/v1/health`)).status, 200, 'the platform keeps running');
});

test('an app past its memory limit is OOM-killed and its neighbour is unaffected', async () => {
  await ok(['apps', 'create', 'neighbour']);
  await ok(['deploy', await appDir(bootStampApp), '--app', 'neighbour']);
  const before = JSON.parse(await serving('neighbour'));

  const hog = await appDir({
    Procfile: 'web: node hog.js\n',
    'hog.js': `
const http = require('http');
http.createServer((q, s) => s.end('ok')).listen(process.env.PORT, () => {
  console.log('allocating past the limit');
  const keep = [];
  setInterval(() => { for (let i = 0; i < 8; i++) keep.push(Buffer.alloc(16 * 1024 * 1024, 1)); }, 50);
});
`,
  });
  await ok(['apps', 'create', 'hog', '--plan', 'free']); // free: 256 MB
  await run(['deploy', hog, '--app', 'hog', '--no-wait']);
  const inst = await waitFor('oom', async () => (await ps('hog')).find((i) => i.state === 'crashed' || i.restarts > 0 ? i.oomKilled : false), 60_000);
  assert.equal(inst.oomKilled, true);
  // The instance restarts with backoff; the human view says why while it is down.
  await waitFor('ps shows out of memory', async () => /out of memory/i.test((await ok(['ps', '--app', 'hog'])).stdout), 60_000, 100);

  const after = JSON.parse(await serving('neighbour'));
  assert.equal(after.started, before.started, 'the neighbour was not restarted');
  const n = (await ps('neighbour')).find((i) => i.type === 'web');
  assert.equal(n.restarts, 0);
  await ok(['apps', 'delete', 'hog', '--confirm', 'hog']);
});

test('a failed build keeps the previous release running and says why', async () => {
  await ok(['apps', 'create', 'steady']);
  await ok(['deploy', await appDir(bootStampApp), '--app', 'steady']);
  const first = JSON.parse(await serving('steady'));
  const broken = await appDir({
    'package.json': JSON.stringify({ name: 'broken', version: '1.0.0', scripts: { build: 'echo compiling; echo "error TS2304: cannot find name" >&2; exit 2', start: 'node server.js' } }),
    'server.js': 'require("http").createServer((q,s)=>s.end("new")).listen(process.env.PORT)',
  });
  const d = await run(['deploy', broken, '--app', 'steady']);
  assert.equal(d.code, 1);
  assert.match(d.stdout + d.stderr, /TS2304|build/i);
  const releases = JSON.parse((await ok(['releases', '--app', 'steady', '--json'])).stdout);
  assert.equal(releases.length, 1, 'no release was created');
  const still = JSON.parse(await serving('steady'));
  assert.equal(still.started, first.started, 'the running instance was not touched');
});

test('kill -9 of the platform loses nothing: state intact, running instances adopted', async () => {
  await ok(['apps', 'create', 'survivor']);
  await ok(['config', 'set', 'GREETING=persisted', '--app', 'survivor']);
  await ok(['deploy', await appDir(bootStampApp), '--app', 'survivor']);
  await ok(['scale', 'web=2', '--app', 'survivor']);
  await waitFor('2 running', async () => (await ps('survivor')).filter((i) => i.state === 'running').length === 2, 30_000);
  const stamps = new Set<string>();
  for (let i = 0; i < 8; i++) stamps.add(JSON.parse(await serving('survivor')).started);
  assert.equal(stamps.size, 2);
  const releasesBefore = (await ok(['releases', '--app', 'survivor', '--json'])).stdout;

  await suite.p.kill9();
  assert.equal(await fetch(`${suite.p.apiUrl}/v1/health`).then(() => 'up', () => 'down'), 'down', 'the platform is really gone');
  await suite.p.boot();

  await waitFor('served again', async () => (await suite.p.viaRouter('survivor')).status === 200, 30_000);
  const after = new Set<string>();
  for (let i = 0; i < 8; i++) after.add(JSON.parse(await serving('survivor')).started);
  assert.deepEqual([...after].sort(), [...stamps].sort(), 'the same processes serve: adopted, not restarted');
  assert.equal((await ok(['releases', '--app', 'survivor', '--json'])).stdout, releasesBefore);
  assert.equal(JSON.parse((await ok(['config', '--app', 'survivor', '--json'])).stdout).GREETING, 'persisted');
  const list = await ps('survivor');
  assert.equal(list.filter((i) => i.state === 'running').length, 2);
  assert.ok(list.every((i) => i.restarts === 0));
});
