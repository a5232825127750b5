/**
 * The real executable (bin/shellwego.js through tsx) against a tiny fake API: exit codes,
 * --json on stdout only, one `error:` line on stderr.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { FakeApi, apiError, fixtures } from './testing.ts';

const BIN = resolve(import.meta.dirname, '../bin/shellwego.js');
let api: FakeApi;
let home: string;

before(async () => {
  home = await mkdtemp(join(tmpdir(), 'swg-bin-'));
  api = await new FakeApi().start();
  api.on('listApps', (req, res) => {
    if (req.headers.authorization !== 'Bearer tok_test') return apiError(res, 401, 'unauthorized', 'missing or invalid credentials');
    return [fixtures.app('hello', { currentRelease: 2 }), fixtures.app('site')];
  });
  api.on('getApp', (req, res) => apiError(res, 404, 'not_found', `app '${req.params.app}' not found`));
});
after(async () => {
  await api.close();
  await rm(home, { recursive: true, force: true });
});

function shellwego(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: home,
      env: { PATH: process.env.PATH ?? '', HOME: home, XDG_CONFIG_HOME: join(home, 'cfg'), SHELLWEGO_API_URL: api.url, SHELLWEGO_TOKEN: 'tok_test', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', rej);
    child.on('exit', (code) => res({ code, stdout, stderr }));
  });
}

test('apps list --json prints the API JSON and nothing else; exit 0', async () => {
  const r = await shellwego(['apps', 'list', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.deepEqual(JSON.parse(r.stdout), [fixtures.app('hello', { currentRelease: 2 }), fixtures.app('site')]);
  assert.equal(api.last('listApps')!.headers.authorization, 'Bearer tok_test');
  assert.match(String(api.last('listApps')!.headers['user-agent']), /^shellwego-cli\//);
});

test('apps list without --json is an aligned table', async () => {
  const r = await shellwego(['apps', 'list']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0], /^NAME\s+PLAN\s+RELEASE\s+URL\s+CREATED$/);
  assert.match(lines[1], /^hello\s+standard\s+v2\s+http:\/\/hello\.localhost:8000\s+/);
  assert.match(lines[2], /^site\s+standard\s+-\s+http:\/\/site\.localhost:8000\s+/);
  assert.equal(lines[1].indexOf('standard'), lines[0].indexOf('PLAN'));
});

test('an API 404 is one `error:` line with its code, exit 1, nothing on stdout', async () => {
  const r = await shellwego(['apps', 'info', '--app', 'nope', '--json']);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, "error: app 'nope' not found (not_found)\n");
});

test('a bad token says to log in again; usage errors exit 2', async () => {
  const r = await shellwego(['apps', 'list'], { SHELLWEGO_TOKEN: 'wrong' });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: missing or invalid credentials — log in again with `shellwego login`.* \(unauthorized\)\n$/);

  const u = await shellwego(['scale', 'web=two', '--app', 'hello']);
  assert.equal(u.code, 2);
  assert.equal(u.stderr, "error: 'web=two': the count must be a whole number from 0 to 100, e.g. web=2\n");

  const unknown = await shellwego(['apps', 'lst']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^error: unknown command 'lst'/);
});

test('no API listening: a clear message, exit 1, no stack trace', async () => {
  const probe = createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const url = `http://127.0.0.1:${(probe.address() as { port: number }).port}`;
  probe.close();
  await once(probe, 'close');
  const r = await shellwego(['apps', 'list'], { SHELLWEGO_API_URL: url });
  assert.equal(r.code, 1);
  assert.equal(r.stderr, `error: cannot reach the API at ${url}: ECONNREFUSED — is the platform running? (\`npm start\`)\n`);
});
