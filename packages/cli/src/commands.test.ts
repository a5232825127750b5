/**
 * Commands run in-process against a fake API: what they send, what they print, how they exit.
 */
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { FakeApi, apiError, fakeIo, fixtures, runCli, sse } from './testing.ts';
import type { FakeIo } from './testing.ts';
import { maskValue } from './commands/releases.ts';

let api: FakeApi;
let base: string;
let home: string;
let work: string;

before(async () => {
  api = await new FakeApi().start();
  base = await mkdtemp(join(tmpdir(), 'swg-cmd-'));
});
after(async () => {
  await api.close();
  await rm(base, { recursive: true, force: true });
});

let n = 0;
beforeEach(async () => {
  n++;
  home = join(base, `home${n}`);
  work = join(base, `work${n}`);
  await mkdir(home, { recursive: true });
  await mkdir(work, { recursive: true });
});

/** A CLI with the token from the environment, like scripts use it. */
function io(opts: { cwd?: string; env?: Record<string, string>; tty?: boolean } = {}): FakeIo {
  return fakeIo({ cwd: opts.cwd ?? work, home, tty: opts.tty, env: { SHELLWEGO_API_URL: api.url, SHELLWEGO_TOKEN: 'tok_env', ...opts.env } });
}

const cli = (argv: string[], opts?: Parameters<typeof io>[0]) => runCli(io(opts), argv);

test('login stores apiUrl, token and email in a 0600 file; later commands use it; logout forgets it', async () => {
  api.on('login', (req) => {
    const b = req.json() as { email: string; password: string };
    if (b.password !== 'pw') return { status: 401 };
    return { token: 'tok_stored', user: { id: 'usr_1', email: b.email, createdAt: 'x' }, organization: { id: 'org_1', name: 'acme', createdAt: 'x' }, role: 'owner' };
  });
  api.on('listApps', (req) => (req.headers.authorization === 'Bearer tok_stored' ? [fixtures.app('one')] : []));
  const env = { XDG_CONFIG_HOME: join(home, 'cfg') };

  const r = await runCli(fakeIo({ cwd: work, home, env }), ['login', '--email', 'Dev@Example.com', '--password', 'pw', '--api', `${api.url}/`]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Logged in to http:\/\/127\.0\.0\.1:\d+ as Dev@Example\.com \(organization acme, owner\)/);
  const file = join(home, 'cfg', 'shellwego', 'config.json');
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  assert.deepEqual(JSON.parse(await readFile(file, 'utf8')), { apiUrl: api.url, token: 'tok_stored', email: 'Dev@Example.com', organization: 'acme' });

  const list = await runCli(fakeIo({ cwd: work, home, env }), ['apps', 'list', '--json']);
  assert.equal(list.code, 0, list.stderr);
  assert.equal(JSON.parse(list.stdout)[0].name, 'one', 'the stored token was sent');

  // The stored token never goes to a different API given by SHELLWEGO_API_URL.
  const other = await runCli(fakeIo({ cwd: work, home, env: { ...env, SHELLWEGO_API_URL: 'http://127.0.0.1:9' } }), ['apps', 'list']);
  assert.equal(other.code, 1);
  assert.match(other.stderr, /^error: not logged in to http:\/\/127\.0\.0\.1:9 \(the stored login is for http:\/\/127\.0\.0\.1:\d+\)/);

  const out = await runCli(fakeIo({ cwd: work, home, env }), ['logout']);
  assert.match(out.stdout, /Logged out of/);
  await assert.rejects(stat(file));
});

test('login without --email and no terminal is a usage error; a wrong password exits 1', async () => {
  const r = await runCli(fakeIo({ cwd: work, home, env: { SHELLWEGO_API_URL: api.url } }), ['login', '--password', 'x']);
  assert.equal(r.code, 2);
  assert.equal(r.stderr, 'error: give --email (there is no terminal to ask on)\n');
  api.on('login', (_req, res) => apiError(res, 401, 'invalid_credentials', 'wrong email or password'));
  const bad = await runCli(fakeIo({ cwd: work, home, env: { SHELLWEGO_API_URL: api.url } }), ['login', '--email', 'a@b.c', '--password', 'nope']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^error: wrong email or password .*\(invalid_credentials\)\n$/);
});

test('apps create links the current directory; --app is then optional below it', async () => {
  api.on('createApp', (req) => fixtures.app((req.json() as { name: string }).name, { plan: (req.json() as { plan?: string }).plan ?? 'standard' }));
  api.on('getApp', (req) => fixtures.app(req.params.app));
  api.on('getFormation', () => [{ type: 'web', quantity: 1, command: 'node server.js' }]);
  const r = await cli(['apps', 'create', 'hello', '--plan', 'free']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(api.last('createApp')!.json(), { name: 'hello', plan: 'free' });
  assert.match(r.stdout, /Created hello \(free\) — http:\/\/hello\.localhost:8000/);
  assert.deepEqual(JSON.parse(await readFile(join(work, '.shellwego.json'), 'utf8')), { app: 'hello' });

  await mkdir(join(work, 'src', 'deep'), { recursive: true });
  const info = await cli(['apps', 'info'], { cwd: join(work, 'src', 'deep') });
  assert.equal(info.code, 0, info.stderr);
  assert.equal(api.last('getApp')!.params.app, 'hello');
  assert.match(info.stdout, /=== hello\nURL:\s+http:\/\/hello\.localhost:8000\nPlan:\s+standard\nRelease:\s+none \(not deployed yet\)\nProcesses:\s+web=1/);

  const noLink = await cli(['apps', 'create', 'other', '--no-link', '--json'], { cwd: join(work, 'src') });
  assert.equal(noLink.code, 0);
  assert.equal(JSON.parse(noLink.stdout).name, 'other', '--json prints only the API JSON');
  await assert.rejects(stat(join(work, 'src', '.shellwego.json')));
});

test('--app missing outside a linked directory is a usage error (exit 2)', async () => {
  const r = await cli(['ps']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^error: no app given: use --app NAME/);
});

test('scale validates pairs before calling the API; config set splits at the first =', async () => {
  const before = api.requests.length;
  const bad = await cli(['scale', 'web=two', '--app', 'hello']);
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr, "error: 'web=two': the count must be a whole number from 0 to 100, e.g. web=2\n");
  assert.equal(api.requests.length, before, 'nothing was sent');

  api.on('scale', (req) => Object.entries((req.json() as { quantities: Record<string, number> }).quantities).map(([type, quantity]) => ({ type, quantity, command: null })));
  const ok = await cli(['scale', 'web=2', 'worker=1', '--app', 'hello']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual(api.last('scale')!.json(), { quantities: { web: 2, worker: 1 } });
  assert.equal(ok.stdout, 'Scaled hello: web=2 worker=1\n');

  api.on('updateConfig', (req) => ({ config: {}, release: fixtures.release(2), sent: req.json() }));
  const set = await cli(['config', 'set', 'GREETING=hi there', 'OTHER=x=y', 'EMPTY=', '--app', 'hello']);
  assert.equal(set.code, 0, set.stderr);
  assert.deepEqual(api.last('updateConfig')!.json(), { vars: { GREETING: 'hi there', OTHER: 'x=y', EMPTY: '' } });
  assert.equal(set.stdout, 'Set GREETING, OTHER, EMPTY on hello and released v2\n');

  const unset = await cli(['config', 'unset', 'OTHER', 'EMPTY', '--app', 'hello', '--json']);
  assert.equal(unset.code, 0);
  assert.deepEqual(api.last('updateConfig')!.json(), { vars: { OTHER: null, EMPTY: null } });
  assert.equal(JSON.parse(unset.stdout).release.version, 2);

  const noEq = await cli(['config', 'set', 'GREETING', '--app', 'hello']);
  assert.equal(noEq.code, 2);
});

test('config lists masked values, --reveal shows them, --json is raw, get prints one value, a missing key exits 1', async () => {
  api.on('getConfig', () => ({ GREETING: 'hi there', DATABASE_URL: 'postgres://user:secret@db/app' }));
  const list = await cli(['config', '--app', 'hello']);
  assert.equal(list.code, 0, list.stderr);
  assert.equal(list.stdout, '=== hello config vars\nDATABASE_URL:  post…\nGREETING:      ********\n');
  assert.ok(!list.stdout.includes('secret') && !list.stderr.includes('secret'));
  assert.match(list.stderr, /masked: `--reveal` shows them/);
  const revealed = await cli(['config', '--app', 'hello', '--reveal']);
  assert.equal(revealed.stdout, '=== hello config vars\nDATABASE_URL:  postgres://user:secret@db/app\nGREETING:      hi there\n');
  assert.equal(revealed.stderr, '');
  const json = await cli(['config', '--app', 'hello', '--json']);
  assert.deepEqual(JSON.parse(json.stdout), { GREETING: 'hi there', DATABASE_URL: 'postgres://user:secret@db/app' });
  assert.equal((await cli(['config', 'get', 'GREETING', '--app', 'hello'])).stdout, 'hi there\n');
  const missing = await cli(['config', 'get', 'NOPE', '--app', 'hello']);
  assert.equal(missing.code, 1);
  assert.equal(missing.stderr, 'error: NOPE is not set on hello (not_set)\n');
});

test('ps prints crashed instances with exit code and last lines; --json is the raw list', async () => {
  const instances = [
    fixtures.instance({ id: 'ins_0000000000aaaaaaaaaa111111', state: 'crashed', exitCode: 3, address: null, restarts: 2, lastLog: ['starting up', 'fatal: DATABASE_URL is not set'] }),
    fixtures.instance({ id: 'ins_0000000000aaaaaaaaaa222222', index: 2, state: 'crashed', signal: 'SIGKILL', exitCode: 137, oomKilled: true }),
  ];
  api.on('listInstances', () => instances);
  const r = await cli(['ps', '--app', 'hello']);
  assert.equal(r.code, 0);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0], /^ID\s+PROCESS\s+STATE\s+RELEASE\s+RESTARTS\s+ADDRESS\s+AGE$/);
  assert.match(lines[1], /^aa111111\s+web\.1\s+crashed \(exit 3\)\s+v1\s+2\s+-\s+/);
  assert.equal(lines[2], '    starting up');
  assert.equal(lines[3], '    fatal: DATABASE_URL is not set');
  assert.match(lines[4], /^aa222222\s+web\.2\s+crashed \(SIGKILL, out of memory\)\s+v1\s+0\s+10\.89\.0\.2:5000/);
  assert.deepEqual(JSON.parse((await cli(['ps', '--app', 'hello', '--json'])).stdout), instances);
});

test('releases mark the current one; rollback takes v3 or 3', async () => {
  api.on('listReleases', () => [fixtures.release(2, { current: true, description: 'Set GREETING' }), fixtures.release(1)]);
  const r = await cli(['releases', '--app', 'hello']);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0], /^\s+VERSION\s+DESCRIPTION\s+BY\s+CREATED$/);
  assert.match(lines[1], /^\*\s+v2\s+Set GREETING\s+admin@localhost\s+/);
  assert.match(lines[2], /^\s+v1\s+Deploy 1\s+/);
  api.on('rollback', () => fixtures.release(3, { description: 'Rollback to v1', current: true }));
  for (const v of ['v1', '1']) {
    const rb = await cli(['rollback', v, '--app', 'hello']);
    assert.equal(rb.code, 0, rb.stderr);
    assert.deepEqual(api.last('rollback')!.json(), { version: 1 });
    assert.equal(rb.stdout, 'Rolled back hello: v3 (Rollback to v1)\n');
  }
  await cli(['rollback', '--app', 'hello']);
  assert.deepEqual(api.last('rollback')!.json(), {});
  assert.equal((await cli(['rollback', 'last', '--app', 'hello'])).code, 2);
});

test('logs formats lines; -f follows the stream until interrupted and exits 0', async () => {
  const line = (l: string, type: string | null = 'web.1') => ({ ts: '2026-11-23T12:00:00.000Z', source: type ? 'app' : 'platform', instanceId: null, type, line: l });
  api.on('logs', () => [line('hello'), line('Build started', null)]);
  const r = await cli(['logs', '--app', 'hello', '-n', '5']);
  assert.equal(r.stdout, '2026-11-23T12:00:00.000Z app[web.1]: hello\n2026-11-23T12:00:00.000Z platform: Build started\n');
  assert.match(api.last('logs')!.url, /\?lines=5$/);

  api.on('followLogs', (_req, res) => sse(res, [['line', line('one')], ['line', line('two')]], { end: false }));
  const fio = io();
  const running = runCli(fio, ['logs', '--app', 'hello', '-f']);
  for (let i = 0; i < 200 && !fio.stdout.text.includes('two'); i++) await new Promise((res) => setTimeout(res, 10));
  fio.interrupt();
  const done = await running;
  assert.equal(done.code, 0);
  assert.equal(done.stdout, '2026-11-23T12:00:00.000Z app[web.1]: one\n2026-11-23T12:00:00.000Z app[web.1]: two\n');
  assert.match(api.last('followLogs')!.url, /\?lines=100$/);
});

test('tokens create prints only the secret on stdout; members are resolved by email', async () => {
  api.on('createToken', (req) => ({ token: { id: 'tok_1', name: 'ci', scopes: (req.json() as { scopes: string[] }).scopes, createdAt: 'x', expiresAt: null, lastUsedAt: null }, secret: 'swg_s3cret' }));
  const t = await cli(['tokens', 'create', 'ci', '--scope', 'apps:read', '--scope', 'apps:deploy', '--expires-in-days', '30']);
  assert.equal(t.code, 0, t.stderr);
  assert.equal(t.stdout, 'swg_s3cret\n');
  assert.deepEqual(api.last('createToken')!.json(), { name: 'ci', scopes: ['apps:read', 'apps:deploy'], expiresInDays: 30 });
  assert.equal((await cli(['tokens', 'create', 'ci', '--scope', 'root'])).code, 2);

  api.on('listMembers', () => [{ userId: 'usr_9', email: 'dev@example.com', role: 'developer', createdAt: 'x' }]);
  api.on('removeMember', () => ({ removed: true }));
  const rm1 = await cli(['members', 'remove', 'DEV@example.com']);
  assert.equal(rm1.code, 0, rm1.stderr);
  assert.equal(api.last('removeMember')!.params.user, 'usr_9');
  const rm2 = await cli(['members', 'remove', 'nobody@example.com']);
  assert.equal(rm2.code, 1);
  assert.match(rm2.stderr, /nobody@example\.com is not a member/);
  assert.equal((await cli(['members', 'add', 'x@example.com', '--role', 'king'])).code, 2);
});

test('apps delete needs --confirm with the same name', async () => {
  api.on('deleteApp', () => ({ deleted: true }));
  assert.equal((await cli(['apps', 'delete', 'hello'])).code, 2);
  assert.equal((await cli(['apps', 'delete', 'hello', '--confirm', 'other'])).code, 2);
  const ok = await cli(['apps', 'delete', 'hello', '--confirm', 'hello']);
  assert.equal(ok.code, 0);
  assert.equal(api.last('deleteApp')!.params.app, 'hello');
});

test('open prints the URL and opens a browser only with a display', async () => {
  api.on('getApp', (req) => fixtures.app(req.params.app));
  const a = io();
  assert.equal((await runCli(a, ['open', '--app', 'hello'])).stdout, 'http://hello.localhost:8000\n');
  assert.deepEqual(a.opened, []);
  const b = io({ env: { DISPLAY: ':0' } });
  await runCli(b, ['open', '--app', 'hello']);
  assert.deepEqual(b.opened, ['http://hello.localhost:8000']);
});

// ---------- deploy ----------

async function sourceDir(): Promise<string> {
  const dir = join(work, 'site');
  await mkdir(join(dir, 'node_modules', 'x'), { recursive: true });
  await writeFile(join(dir, '.gitignore'), 'node_modules/\n');
  await writeFile(join(dir, 'index.html'), '<h1>hi</h1>');
  await writeFile(join(dir, 'node_modules', 'x', 'i.js'), '');
  return dir;
}

function deployApi(opts: { buildState: 'succeeded' | 'failed'; instances: () => unknown[]; processTypes?: Record<string, string> }) {
  let uploaded: Buffer = Buffer.alloc(0);
  api.on('getApp', (req) => fixtures.app(req.params.app));
  api.on('createBuild', (req) => {
    uploaded = req.body;
    return fixtures.build({ id: 'bld_42' });
  });
  api.on('buildLog', (_req, res) =>
    sse(res, [
      ['line', { ts: 't', source: 'build', instanceId: null, type: null, line: '-----> Static site detected' }],
      ['line', { ts: 't', source: 'build', instanceId: null, type: null, line: 'error TS2304: cannot find name' }],
      ['end', fixtures.build({ id: 'bld_42', state: opts.buildState, releaseVersion: opts.buildState === 'succeeded' ? 3 : null, processTypes: opts.processTypes ?? { web: 'serve' }, error: opts.buildState === 'failed' ? 'the build command exited with 2' : null })],
    ]),
  );
  api.on('getFormation', () => [{ type: 'web', quantity: 1, command: null }]);
  api.on('listInstances', () => opts.instances());
  return () => uploaded;
}

test('deploy packs honouring .gitignore, streams the build, waits for web on the new release, links DIR', async () => {
  const dir = await sourceDir();
  let polls = 0;
  const uploaded = deployApi({
    buildState: 'succeeded',
    instances: () => (++polls < 3 ? [fixtures.instance({ releaseVersion: 2 }), fixtures.instance({ releaseVersion: 3, state: 'starting' })] : [fixtures.instance({ releaseVersion: 3 })]),
  });
  const r = await cli(['deploy', 'site', '--app', 'hello']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.split('\n')[0], '-----> Static site detected', 'build output is printed as is');
  assert.match(r.stdout, /^Deployed v3 to http:\/\/hello\.localhost:8000 in \d+\.\ds$/m);
  assert.match(r.stderr, /Packed 2 files/);
  assert.match(r.stderr, new RegExp(`Linked ${dir} to hello`));
  assert.ok(polls >= 3, 'waited until a web instance of v3 ran');

  const tar = gunzipSync(uploaded()).toString('latin1');
  assert.match(tar, /index\.html/);
  assert.doesNotMatch(tar, /node_modules\/x/, 'ignored files are not sent');
  assert.equal(api.last('createBuild')!.headers['content-type'], 'application/gzip');
  assert.equal(Number(api.last('createBuild')!.headers['content-length']), uploaded().length);

  // Linked now: a second deploy from inside needs no --app.
  const again = await cli(['deploy', '--no-wait'], { cwd: dir });
  assert.equal(again.code, 0, again.stderr);
  assert.equal(api.last('createBuild')!.params.app, 'hello');
});

test('deploy: a failed build prints the error and exits 1', async () => {
  const dir = await sourceDir();
  deployApi({ buildState: 'failed', instances: () => [] });
  const r = await cli(['deploy', dir, '--app', 'hello']);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /error TS2304/);
  assert.match(r.stderr, /error: build failed: the build command exited with 2 \(build_failed\)\n$/);
  await assert.rejects(stat(join(dir, '.shellwego.json')), 'a failed deploy does not link');
});

test('deploy: when no web instance of the release runs in time, show states and last lines, exit 1', async () => {
  const dir = await sourceDir();
  deployApi({ buildState: 'succeeded', instances: () => [fixtures.instance({ releaseVersion: 3, state: 'crashed', exitCode: 3, restarts: 1, lastLog: ['fatal: DATABASE_URL is not set'] })] });
  const r = await cli(['deploy', dir, '--app', 'hello', '--wait-timeout', '1']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /crashed \(exit 3\)/);
  assert.match(r.stderr, / {4}fatal: DATABASE_URL is not set/);
  assert.match(r.stderr, /error: v3 was released but no web instance of it was running after 1\.0s.* \(deploy_timeout\)\n$/);
});

test('deploy: no web process type means no waiting; --json prints the build only', async () => {
  const dir = await sourceDir();
  deployApi({ buildState: 'succeeded', processTypes: { worker: 'node worker.js' }, instances: () => assert.fail('should not poll') });
  const r = await cli(['deploy', dir, '--app', 'hello', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).id, 'bld_42');
  assert.match(r.stderr, /Static site detected/);
  assert.match(r.stderr, /No web process type/);
});

test('deploy refuses a symlink pointing outside before uploading', async () => {
  const dir = await sourceDir();
  await symlink('/etc/passwd', join(dir, 'passwd'));
  deployApi({ buildState: 'succeeded', instances: () => [] });
  const before = api.requests.filter((r) => r.route === 'createBuild').length;
  const r = await cli(['deploy', dir, '--app', 'hello']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /error: refusing to deploy .*passwd -> \/etc\/passwd/);
  assert.equal(api.requests.filter((x) => x.route === 'createBuild').length, before);
});

test('deploy to an unknown app fails before packing', async () => {
  api.on('getApp', (req, res) => apiError(res, 404, 'not_found', `app '${req.params.app}' not found`));
  const r = await cli(['deploy', work, '--app', 'nope']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, "error: app 'nope' not found (not_found)\n");
});

test('maskValue: a 4-character prefix only for long values, never the whole of a short one', () => {
  assert.equal(maskValue(''), '********');
  assert.equal(maskValue('short'), '********');
  assert.equal(maskValue('fifteen-chars!!'), '********');
  assert.equal(maskValue('sixteen-chars!!!'), 'sixt…');
});
