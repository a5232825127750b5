/**
 * Inbound GitHub/GitLab webhooks on the real platform: a real git repository served by
 * `git daemon` on loopback, deliveries signed like the providers sign them, real fetches,
 * builds and deploys through the router.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { WebhookT } from '@shellwego/core';
import { TestPlatform, cliOk, freePort, waitFor } from './helpers/platform.ts';

let p: TestPlatform;
let token: string;
let otherOrgToken: string;
let base: string;
let work: string;
let daemon: ChildProcess | undefined;
let repoUrl: string;
let cwd: string;
let github: WebhookT & { secret: string };

const GIT_ENV = { GIT_CONFIG_NOSYSTEM: '1', GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@example.com', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@example.com' };

function git(args: string[], dir = work): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('git', args, { cwd: dir, env: { ...process.env, ...GIT_ENV, HOME: base } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`git ${args.join(' ')}: ${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

/** Commits a one-page static site saying `text` on `branch` and pushes it to the served repository. */
async function commit(text: string, branch = 'main'): Promise<string> {
  await git(['checkout', '-q', '-B', branch]);
  await writeFile(join(work, 'index.html'), `<h1>${text}</h1>\n`);
  await git(['add', '-A']);
  await git(['commit', '-q', '-m', text]);
  await git(['push', '-q', '--force', join(base, 'site.git'), `${branch}:${branch}`]);
  return git(['rev-parse', 'HEAD']);
}

interface Delivery { status: number; body: Record<string, unknown> }

async function send(url: string, body: string, headers: Record<string, string>): Promise<Delivery> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

function githubPush(hook: { url: string; secret: string }, sha: string, opts: { delivery?: string; ref?: string; signature?: string | null } = {}) {
  const body = JSON.stringify({ ref: opts.ref ?? 'refs/heads/main', before: '0'.repeat(40), after: sha, pusher: { name: 'octocat' }, repository: { clone_url: repoUrl } });
  const headers: Record<string, string> = { 'x-github-event': 'push', 'x-github-delivery': opts.delivery ?? randomUUID() };
  const sig = opts.signature === undefined ? 'sha256=' + createHmac('sha256', hook.secret).update(body).digest('hex') : opts.signature;
  if (sig !== null) headers['x-hub-signature-256'] = sig;
  return send(hook.url, body, headers);
}

async function builds(app = 'hookapp') {
  return (await p.client(token)).call('listBuilds', { params: { app } });
}

async function serves(app: string, text: string) {
  return waitFor(`${app} serves ${text}`, async () => {
    const r = await p.viaRouter(app);
    const body = await r.text();
    return r.status === 200 && body.includes(text) && body;
  }, 120_000);
}

/** Waits until every build of the app has finished (so a count can't change under the test). */
async function settled(app = 'hookapp') {
  return waitFor(`builds of ${app} finish`, async () => {
    const list = await builds(app);
    return list.every((b) => b.state === 'succeeded' || b.state === 'failed') && list;
  }, 120_000);
}

before(async () => {
  p = await TestPlatform.start({ isolation: 'sandbox' });
  token = await p.token();
  base = await mkdtemp(join(tmpdir(), 'swg-hooks-git-'));
  cwd = await mkdtemp(join(tmpdir(), 'swg-hooks-cwd-'));
  work = join(base, 'work');
  await git(['init', '-q', '--bare', '-b', 'main', join(base, 'site.git')], base);
  await git(['init', '-q', '-b', 'main', work], base);

  const port = await freePort();
  daemon = spawn('git', ['daemon', '--export-all', `--base-path=${base}`, '--listen=127.0.0.1', `--port=${port}`, '--reuseaddr', base], { stdio: 'ignore' });
  repoUrl = `git://127.0.0.1:${port}/site.git`;
  await commit('v0');
  await waitFor('git daemon serves the repository', async () => (await git(['ls-remote', repoUrl])).includes('refs/heads/main'), 30_000);

  const a = await p.client(token);
  await a.call('createApp', { body: { name: 'hookapp' } });
  await a.call('createApp', { body: { name: 'glapp' } });

  const added = await a.call('addMember', { body: { email: 'other@example.com', role: 'viewer' } });
  const tmp = await p.client(await p.token('other@example.com', added.initialPassword!));
  await tmp.call('createOrganization', { body: { name: 'org-b' } });
  otherOrgToken = await p.token('other@example.com', added.initialPassword!, 'org-b');
  await a.call('removeMember', { params: { user: added.member.userId } });
});

after(async () => {
  if (daemon && daemon.exitCode === null) daemon.kill('SIGTERM');
  await p?.destroy();
  if (base) await rm(base, { recursive: true, force: true });
  if (cwd) await rm(cwd, { recursive: true, force: true });
});

test('webhooks add (CLI) prints the payload URL and the secret once; list never shows the secret', async () => {
  const r = await cliOk(p, ['webhooks', 'add', '--provider', 'github', '--repo', repoUrl, '--app', 'hookapp', '--json'], token, cwd);
  github = JSON.parse(r.stdout) as typeof github;
  assert.match(github.id, /^whk_/);
  assert.equal(github.url, `${p.apiUrl}/v1/hooks/${github.id}`);
  assert.equal(github.branch, 'main');
  assert.ok(github.secret.length >= 32);

  const list = await (await p.client(token)).call('listWebhooks', { params: { app: 'hookapp' } });
  assert.equal(list.length, 1);
  assert.equal(list[0].repository, repoUrl);
  assert.equal('secret' in list[0], false);
  const text = await cliOk(p, ['webhooks', 'list', '--app', 'hookapp'], token, cwd);
  assert.match(text.stdout, new RegExp(github.id));
  assert.doesNotMatch(text.stdout, new RegExp(github.secret));
});

test('a GitHub ping answers 200 and builds nothing', async () => {
  const body = '{"zen":"Keep it logically awesome."}';
  const sig = 'sha256=' + createHmac('sha256', github.secret).update(body).digest('hex');
  const r = await send(github.url, body, { 'x-github-event': 'ping', 'x-github-delivery': randomUUID(), 'x-hub-signature-256': sig });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.status, 'ignored');
  assert.equal((await builds()).length, 0);
});

test('a signed GitHub push fetches that commit, builds it and the app serves it through the router', async () => {
  const sha = await commit('version one');
  const r = await githubPush(github, sha);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const list = await waitFor('a build', async () => (await builds()).length === 1 && builds(), 30_000);
  if (r.body.buildId) assert.equal(r.body.buildId, list[0].id);
  await serves('hookapp', 'version one');
  const events = await (await p.client(token)).call('appEvents', { params: { app: 'hookapp' } });
  assert.ok(events.some((e) => e.type === 'webhook.received' && e.message.includes(sha.slice(0, 7))), 'event log records the delivery');
  assert.ok(events.some((e) => e.type === 'build.created' && e.message.includes('github webhook')));
});

test('a replayed delivery id is answered without a second build; concurrent duplicates build once', async () => {
  await settled();
  const sha = await commit('version two');
  const delivery = randomUUID();
  // Two identical deliveries at once: the delivery record lets exactly one through.
  const both = await Promise.all([githubPush(github, sha, { delivery }), githubPush(github, sha, { delivery })]);
  assert.deepEqual(both.map((d) => d.status).sort(), [200, 202], JSON.stringify(both.map((d) => d.body)));
  assert.equal(both.find((d) => d.status === 200)!.body.duplicate, true);
  await serves('hookapp', 'version two');
  // A later replay of the same delivery (e.g. captured and resent) changes nothing either.
  const replay = await githubPush(github, sha, { delivery });
  assert.equal(replay.status, 200);
  assert.equal(replay.body.duplicate, true);
  assert.match(String(replay.body.message), /already received/);
  const list = await settled();
  assert.equal(list.length, 2, 'one build per distinct delivery');
});

test('a bad or missing signature is refused with 401 and stores nothing, builds nothing', async () => {
  await settled();
  const before = (await builds()).length;
  const sha = await commit('version three');
  const delivery = randomUUID();
  const wrong = await githubPush({ ...github, secret: 'not-the-secret-at-all' }, sha, { delivery });
  assert.equal(wrong.status, 401, JSON.stringify(wrong.body));
  assert.equal((wrong.body.error as { code: string }).code, 'unauthorized');
  const missing = await githubPush(github, sha, { delivery, signature: null });
  assert.equal(missing.status, 401);
  const truncated = await githubPush(github, sha, { delivery, signature: 'sha256=abc' });
  assert.equal(truncated.status, 401);
  assert.equal((await builds()).length, before);
  // Nothing was recorded for that delivery id: the genuine delivery with it still deploys.
  const genuine = await githubPush(github, sha, { delivery });
  assert.equal(genuine.status, 202, JSON.stringify(genuine.body));
  await serves('hookapp', 'version three');
});

test('a push to another branch is ignored', async () => {
  await settled();
  const before = (await builds()).length;
  const sha = await commit('feature work', 'feature');
  const r = await githubPush(github, sha, { ref: 'refs/heads/feature' });
  assert.equal(r.status, 202);
  assert.equal(r.body.status, 'ignored');
  assert.match(String(r.body.message), /this webhook deploys main/);
  // GitHub's form-encoded content type: signed over the raw form bytes, payload in `payload=`.
  const form = new URLSearchParams({ payload: JSON.stringify({ ref: 'refs/heads/feature', after: sha }) }).toString();
  const signature = 'sha256=' + createHmac('sha256', github.secret).update(form).digest('hex');
  const f = await send(github.url, form, { 'content-type': 'application/x-www-form-urlencoded', 'x-github-event': 'push', 'x-github-delivery': randomUUID(), 'x-hub-signature-256': signature });
  assert.equal(f.status, 202, JSON.stringify(f.body));
  assert.equal(f.body.status, 'ignored');
  assert.equal((await builds()).length, before);
  await git(['checkout', '-q', 'main']);
});

test('a GitLab push (X-Gitlab-Token) deploys', async () => {
  const a = await p.client(token);
  const hook = await a.call('createWebhook', { params: { app: 'glapp' }, body: { provider: 'gitlab', repository: repoUrl, branch: 'release', secret: 'gitlab-shared-secret-token' } });
  assert.equal(hook.secret, 'gitlab-shared-secret-token');
  const sha = await commit('from gitlab', 'release');
  const body = JSON.stringify({ object_kind: 'push', ref: 'refs/heads/release', after: sha, user_username: 'jane' });
  const deliver = (tokenHeader: string, uuid: string) => send(hook.url, body, { 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': tokenHeader, 'x-gitlab-event-uuid': uuid });
  const bad = await deliver('gitlab-shared-secret-tokeX', randomUUID());
  assert.equal(bad.status, 401);
  const uuid = randomUUID();
  const r = await deliver('gitlab-shared-secret-token', uuid);
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await serves('glapp', 'from gitlab');
  assert.equal((await deliver('gitlab-shared-secret-token', uuid)).body.duplicate, true);
  assert.equal((await settled('glapp')).length, 1);
  await git(['checkout', '-q', 'main']);
});

test('a repository that cannot be fetched: the delivery fails visibly, without credentials in the message, and builds nothing', async () => {
  const a = await p.client(token);
  await a.call('createApp', { body: { name: 'failapp' } });
  const closed = await freePort();
  const hook = await a.call('createWebhook', { params: { app: 'failapp' }, body: { provider: 'github', repository: `https://bot:cred-Xy7-token@127.0.0.1:${closed}/gone.git` } });
  const r = await githubPush(hook, 'c'.repeat(40));
  // Answered with the failure when the fetch fails within the answer window, else accepted.
  assert.ok(r.status === 502 || r.status === 202, JSON.stringify(r.body));
  const failed = await waitFor('a webhook.failed event', async () => {
    const events = await a.call('appEvents', { params: { app: 'failapp' } });
    return events.find((e) => e.type === 'webhook.failed');
  }, 60_000);
  assert.match(failed.message, /could not deploy/);
  const [listed] = await a.call('listWebhooks', { params: { app: 'failapp' } });
  assert.equal(listed.lastDelivery?.status, 'failed');
  const everything = JSON.stringify(r.body) + failed.message + listed.lastDelivery?.message + p.output;
  assert.equal(everything.includes('cred-Xy7-token'), false, 'the URL credentials leak nowhere');
  assert.equal((await builds('failapp')).length, 0);
});

test('unknown hook ids are 404; repositories outside the URL policy are refused and nothing is created', async () => {
  for (const id of ['whk_00000000000000000000000000', 'nope', github.id.slice(0, -1) + (github.id.endsWith('0') ? '1' : '0')]) {
    const r = await send(`${p.apiUrl}/v1/hooks/${id}`, '{}', { 'x-github-event': 'ping' });
    assert.equal(r.status, 404, id);
  }
  const huge = await send(github.url, JSON.stringify({ pad: 'x'.repeat(1024 * 1024) }), { 'x-github-event': 'push', 'x-github-delivery': randomUUID() });
  assert.equal(huge.status, 413);
  const a = await p.client(token);
  for (const repository of ['file:///etc', '/srv/repo.git', 'ssh://git@example.com/x.git', 'ext::sh -c id']) {
    await assert.rejects(a.call('createWebhook', { params: { app: 'hookapp' }, body: { provider: 'github', repository } }), (e: { status: number; code: string }) => e.status === 400 && e.code === 'invalid_repository', repository);
  }
  await assert.rejects(a.call('createWebhook', { params: { app: 'hookapp' }, body: { provider: 'github', repository: repoUrl, branch: '../x' } }), (e: { status: number }) => e.status === 400);
  assert.equal((await a.call('listWebhooks', { params: { app: 'hookapp' } })).length, 1);
});

test('the secret and repository credentials are stored encrypted', async () => {
  const a = await p.client(token);
  const hook = await a.call('createWebhook', { params: { app: 'hookapp' }, body: { provider: 'github', repository: 'https://bot:cred-Zq81-in-url@127.0.0.1:9/x.git', secret: 'plain-secret-Zq81-value' } });
  assert.equal(hook.repository, 'https://127.0.0.1:9/x.git');
  let found = '';
  for (const f of await readdir(p.dataDir)) {
    if (!f.startsWith('shellwego.db')) continue;
    const bytes = await readFile(join(p.dataDir, f));
    for (const s of ['cred-Zq81-in-url', 'plain-secret-Zq81-value', github.secret]) if (bytes.includes(s)) found += `${s} in ${f}; `;
  }
  assert.equal(found, '');
  await a.call('deleteWebhook', { params: { app: 'hookapp', hook: hook.id } });
});

test('another organization cannot see or remove the hook; remove makes its URL answer 404', async () => {
  const b = await p.client(otherOrgToken);
  await assert.rejects(b.call('listWebhooks', { params: { app: 'hookapp' } }), (e: { status: number }) => e.status === 404);
  await assert.rejects(b.call('deleteWebhook', { params: { app: 'hookapp', hook: github.id } }), (e: { status: number }) => e.status === 404);
  // Even for an app of its own, B can't reach A's hook by id.
  await b.call('createApp', { body: { name: 'b-app' } });
  await assert.rejects(b.call('deleteWebhook', { params: { app: 'b-app', hook: github.id } }), (e: { status: number }) => e.status === 404);
  assert.equal((await (await p.client(token)).call('listWebhooks', { params: { app: 'hookapp' } })).length, 1);

  await cliOk(p, ['webhooks', 'remove', github.id, '--app', 'hookapp'], token, cwd);
  const sha = await git(['rev-parse', 'HEAD']);
  assert.equal((await githubPush(github, sha)).status, 404);
});
