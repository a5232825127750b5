/**
 * One-off processes (issue 3): `shellwego run <app> -- <cmd>` against the real platform (sandbox
 * isolation): the release's config reaches the command and its exit code comes back; an
 * interactive session through the CLI under a real pty (node-pty) has a terminal of its own; the
 * process sees nothing of the host; closing the client kills it; another org's app is 404 and a
 * viewer gets 403, before any upgrade.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import pty from 'node-pty';
import WebSocket from 'ws';
import { ROOT, platformSuite, waitFor } from './helpers/platform.ts';
import { makeTarGz } from './helpers/tarball.ts';

const s = platformSuite();
const APP = `run-${Math.random().toString(36).slice(2, 8)}`;
const CONFIG_VALUE = `value-${Math.random().toString(36).slice(2, 10)}`;

/** The app, deployed once (lazily: platformSuite's own hook must have run first). */
let deployed: Promise<void> | null = null;
const ready = () => (deployed ??= deploy());

async function deploy(): Promise<void> {
  const c = await s.p.client(s.token);
  await c.call('createApp', { body: { name: APP } });
  await c.call('updateConfig', { params: { app: APP }, body: { vars: { SOMECONFIG: CONFIG_VALUE } } });
  const up = await fetch(`${s.p.apiUrl}/v1/apps/${APP}/builds`, {
    method: 'POST', headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/gzip' },
    body: makeTarGz([{ name: 'index.html', content: '<h1>run</h1>' }]) as unknown as BodyInit,
  });
  assert.equal(up.status, 202, await up.clone().text());
  await waitFor('a release', async () => (await c.call('getApp', { params: { app: APP } })).currentRelease !== null, 120_000);
}

/** Is any process on the host running `sleep <n>`? */
async function sleeping(n: string): Promise<boolean> {
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd === `sleep\0${n}\0`) return true;
  }
  return false;
}

function wsUrl(app: string, q: Record<string, string>): string {
  return `${s.p.apiUrl.replace(/^http/, 'ws')}/v1/apps/${app}/run?${new URLSearchParams(q)}`;
}

/** The HTTP status a run request is answered with before (or instead of) the upgrade. */
function upgradeStatus(app: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(app, { command: 'true' }), { headers: { authorization: `Bearer ${token}` } });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.on('open', () => {
      ws.close();
      reject(new Error('upgraded'));
    });
    ws.on('error', () => {});
  });
}

test('run -- sh -c: the app config reaches the command, stdout/stderr are separate, the exit code comes back', async () => {
  await ready();
  const r = await s.run(['run', '--app', APP, '--env', 'EXTRA=from-flag', '--', 'sh', '-c', 'echo "$SOMECONFIG $EXTRA"; echo to-stderr >&2; exit 3']);
  assert.equal(r.code, 3, r.stderr);
  assert.equal(r.stdout, `${CONFIG_VALUE} from-flag\n`);
  assert.match(r.stderr, /to-stderr/);
  const ok = await s.run(['run', APP, '--', 'test -d /app && ! test -e /root && ! test -e /work && ! test -e ' + ROOT]);
  assert.equal(ok.code, 0, `the sandbox sees host directories: ${ok.stdout}${ok.stderr}`);
  const events = await waitFor('the run.finished event', async () => {
    const list = await (await s.p.client(s.token)).call('appEvents', { params: { app: APP } });
    return list.filter((e) => e.type === 'run.finished').length >= 2 && list;
  });
  const started = events.find((e) => e.type === 'run.started' && e.message.includes('$SOMECONFIG'));
  assert.ok(started, JSON.stringify(events.map((e) => e.message)));
  assert.match(started.message, /^run started by admin@localhost: /);
  assert.ok(!events.some((e) => e.message.includes(CONFIG_VALUE)), 'an event holds a config value');
  assert.ok(events.some((e) => e.type === 'run.finished' && /exit 3\)$/.test(e.message)));
});

test('interactive: the CLI under a pty gets a terminal of its own, typed input, and the exit code', async () => {
  await ready();
  const term = pty.spawn(process.execPath, [join(ROOT, 'packages/cli/bin/shellwego.js'), 'run', '--app', APP, '--', 'sh'], {
    name: 'xterm-256color', cols: 90, rows: 30, cwd: s.cwd,
    env: { ...(process.env as Record<string, string>), SHELLWEGO_API_URL: s.p.apiUrl, SHELLWEGO_TOKEN: s.token, XDG_CONFIG_HOME: join(s.p.dataDir, 'cli-config') },
  });
  let out = '';
  term.onData((d) => (out += d));
  const exited = new Promise<number>((r) => term.onExit((e) => r(e.exitCode)));
  const seen = (re: RegExp) =>
    waitFor(String(re), async () => re.test(out), 60_000, 50).catch((err: Error) => {
      throw new Error(`${err.message}; output: ${JSON.stringify(out.slice(-400))}`);
    });
  // Both ptys (the CLI's and the sandbox's own) translate \n to \r\n: lines end in \r+\n.
  try {
    await seen(/[$#] $/m); // the prompt
    term.write('echo hi\r');
    await seen(/\nhi\r*\n/);
    term.write('tty; stty size\r');
    await seen(/\/dev\/pts\/\d+\r*\n30 90\r*\n/);
    term.resize(100, 40);
    term.write('stty size\r');
    await seen(/40 100\r*\n/);
    term.write('exit 5\r');
    assert.equal(await exited, 5, out);
  } finally {
    try {
      term.kill();
    } catch {}
  }
});

test('closing the client kills the remote process: nothing is left running', async () => {
  await ready();
  const n = String(100000 + Math.floor(Math.random() * 800000));
  const ws = new WebSocket(wsUrl(APP, { command: `sleep ${n} & echo started; wait`, tty: '0' }), { headers: { authorization: `Bearer ${s.token}` } });
  let out = '';
  ws.on('message', (d, binary) => {
    if (binary) out += d.toString();
  });
  await new Promise((r, j) => {
    ws.once('open', r);
    ws.once('error', j);
  });
  await waitFor('the command to start', async () => out.includes('started'), 60_000, 50);
  assert.equal(await sleeping(n), true, 'the sleep runs on the host (in its sandbox)');
  ws.close();
  await waitFor('the sleep to be killed', async () => !(await sleeping(n)), 30_000, 100);
});

test('another organization gets 404 and a viewer 403, before any upgrade', async () => {
  await ready();
  const c = await s.p.client(s.token);
  const email = `viewer-${Math.random().toString(36).slice(2, 8)}@example.com`;
  const added = await c.call('addMember', { body: { email, role: 'viewer' } });
  const viewer = await s.p.token(email, added.initialPassword!);
  const forbidden = await upgradeStatus(APP, viewer);
  assert.equal(forbidden.status, 403, forbidden.body);
  assert.equal(JSON.parse(forbidden.body).error.code, 'forbidden');

  const tmp = await s.p.client(viewer);
  const org = `org-${Math.random().toString(36).slice(2, 8)}`;
  await tmp.call('createOrganization', { body: { name: org } });
  const other = await s.p.token(email, added.initialPassword!, org);
  const missing = await upgradeStatus(APP, other);
  assert.equal(missing.status, 404, missing.body);
  assert.equal(JSON.parse(missing.body).error.code, 'not_found');

  const bad = await upgradeStatus(APP, 'not-a-token');
  assert.equal(bad.status, 401, bad.body);
  // Through the CLI: a clear error, exit 1.
  const r = await s.p.cli(['run', '--app', APP, '--', 'true'], other, { cwd: s.cwd });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /app '.*' not found \(not_found\)/);
});
