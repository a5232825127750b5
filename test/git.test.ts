/**
 * `git push` deploys: the smart-HTTP git endpoint on the real platform (sandboxed instances),
 * driven by the real git client.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { TestPlatform, waitFor } from './helpers/platform.ts';
import { appDir, bootStampApp } from './helpers/apps.ts';

let p: TestPlatform;
let token: string;
let viewerToken: string;
let otherOrgToken: string;
let repo: string;
let home: string;

interface Run { code: number; stdout: string; stderr: string; out: string }

function git(args: string[], cwd: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile('git', args, {
      cwd, timeout: 240_000, maxBuffer: 16 * 1024 * 1024,
      env: { ...process.env, GIT_TERMINAL_PROMPT: '0', GIT_CONFIG_NOSYSTEM: '1', HOME: home, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@example.com', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@example.com' },
    }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr, out: stdout + stderr });
    });
  });
}

async function gitOk(args: string[], cwd = repo): Promise<Run> {
  const r = await git(args, cwd);
  assert.equal(r.code, 0, `git ${args.join(' ')} failed:\n${r.out}`);
  return r;
}

function remote(tok: string, app = 'gitapp'): string {
  return `http://x:${encodeURIComponent(tok)}@127.0.0.1:${p.apiPort}/git/${app}.git`;
}

async function releases(): Promise<{ version: number }[]> {
  return (await p.client(token)).call('listReleases', { params: { app: 'gitapp' } });
}

async function remoteRefs(): Promise<string> {
  return (await gitOk(['ls-remote', remote(token)])).stdout;
}

async function serving(match: RegExp) {
  return waitFor(`gitapp serves ${match}`, async () => {
    const r = await p.viaRouter('gitapp');
    const text = await r.text();
    return r.status === 200 && match.test(text) && text;
  }, 60_000);
}

before(async () => {
  p = await TestPlatform.start({ isolation: 'sandbox' });
  token = await p.token();
  home = await mkdtemp(join(tmpdir(), 'swg-git-home-'));
  const a = await p.client(token);
  await a.call('createApp', { body: { name: 'gitapp' } });

  const viewer = await a.call('addMember', { body: { email: 'viewer@example.com', role: 'viewer' } });
  viewerToken = await p.token('viewer@example.com', viewer.initialPassword!);

  const other = await a.call('addMember', { body: { email: 'other@example.com', role: 'viewer' } });
  const tmp = await p.client(await p.token('other@example.com', other.initialPassword!));
  await tmp.call('createOrganization', { body: { name: 'org-b' } });
  otherOrgToken = await p.token('other@example.com', other.initialPassword!, 'org-b');
  await a.call('removeMember', { params: { user: other.member.userId } });
  // Org B's owner has a deploy-capable token, and an app of the same name does not exist there.

  repo = await appDir(bootStampApp);
  await gitOk(['init', '-q', '-b', 'main']);
  await gitOk(['add', '.']);
  await gitOk(['commit', '-q', '-m', 'first']);
  await gitOk(['remote', 'add', 'shellwego', remote(token)]);
});

after(async () => {
  await p?.destroy();
  if (home) await rm(home, { recursive: true, force: true });
});

describe('git push', () => {
  test('pushing main builds, releases and serves; build output and URL stream back', async () => {
    const r = await gitOk(['push', 'shellwego', 'main']);
    assert.match(r.stderr, /remote: -----> Building gitapp from main/);
    assert.match(r.stderr, /remote: .*Released v1/);
    assert.match(r.stderr, /remote: -----> Web process running/);
    assert.match(r.stderr, /remote: +http:\/\/gitapp\.localhost:\d+/);
    assert.ok(r.stderr.split('\n').filter((l) => l.startsWith('remote: ')).length > 4, `expected build lines:\n${r.stderr}`);
    assert.equal((await releases()).length, 1);
    await serving(/"started"/);
  });

  test('`shellwego git remote` adds, then updates, a remote without credentials', async () => {
    const added = await p.cli(['git', 'remote', '--app', 'gitapp', '--remote', 'sw2'], token, { cwd: repo });
    assert.equal(added.code, 0, added.stdout + added.stderr);
    assert.match(added.stdout, /Added git remote sw2/);
    assert.match(added.stderr, /token as the password/);
    assert.equal((await gitOk(['remote', 'get-url', 'sw2'])).stdout.trim(), `${p.apiUrl}/git/gitapp.git`);
    const updated = await p.cli(['git', 'remote', '--app', 'gitapp', '--remote', 'sw2'], token, { cwd: repo });
    assert.match(updated.stdout, /Updated git remote sw2/);
    const missing = await p.cli(['git', 'remote', '--app', 'nope'], token, { cwd: repo });
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /not found/i);
  });

  test('a non-deploy branch is stored without deploying', async () => {
    await gitOk(['checkout', '-q', '-b', 'feature']);
    await writeFile(join(repo, 'NOTES.md'), 'feature work\n');
    await gitOk(['add', '.']);
    await gitOk(['commit', '-q', '-m', 'feature']);
    const r = await gitOk(['push', 'shellwego', 'feature']);
    assert.match(r.stderr, /without deploying/);
    assert.doesNotMatch(r.stderr, /Building/);
    assert.equal((await releases()).length, 1);
    assert.match(await remoteRefs(), /refs\/heads\/feature/);
    await gitOk(['checkout', '-q', 'main']);
  });

  test('a force push deploys the rewritten history', async () => {
    const server = await readFile(join(repo, 'server.js'), 'utf8');
    await writeFile(join(repo, 'server.js'), server.replace('greeting:', "rev: 'amended', greeting:"));
    await gitOk(['commit', '-q', '-a', '--amend', '-m', 'first, amended']);
    const rejected = await git(['push', 'shellwego', 'main'], repo);
    assert.notEqual(rejected.code, 0, 'a non-fast-forward push without --force is refused by git');
    const r = await gitOk(['push', '--force', 'shellwego', 'main']);
    assert.match(r.stderr, /Released v2/);
    assert.match(r.stderr, /forced update/);
    await serving(/"rev":"amended"/);
    const head = (await gitOk(['rev-parse', 'HEAD'])).stdout.trim();
    assert.match(await remoteRefs(), new RegExp(`^${head}\\s+refs/heads/main$`, 'm'));
  });

  test('a wrong token is refused (401) and nothing changes', async () => {
    const before = await remoteRefs();
    await writeFile(join(repo, 'x.txt'), 'x\n');
    await gitOk(['add', '.']);
    await gitOk(['commit', '-q', '-m', 'x']);
    const r = await git(['push', remote('swg_wrong-token'), 'main'], repo);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Authentication failed|401/);
    const noCreds = await git(['push', `http://127.0.0.1:${p.apiPort}/git/gitapp.git`, 'main'], repo);
    assert.notEqual(noCreds.code, 0);
    assert.match(noCreds.stderr, /could not read Username|Authentication failed|401/);
    assert.equal(await remoteRefs(), before);
    assert.equal((await releases()).length, 2);
  });

  test("another organization's token gets not found and nothing changes", async () => {
    const before = await remoteRefs();
    const r = await git(['push', remote(otherOrgToken), 'main'], repo);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /404|not found/i);
    assert.equal(await remoteRefs(), before);
    assert.equal((await releases()).length, 2);
  });

  test('a viewer token may not push (403)', async () => {
    const r = await git(['push', remote(viewerToken), 'main'], repo);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /403/);
  });

  test('a repo with no detectable app type is rejected with the builder error; the running release keeps serving', async () => {
    const before = await remoteRefs();
    const stamp = JSON.parse(await serving(/"rev":"amended"/)).started as string;
    await gitOk(['rm', '-q', 'Procfile', 'server.js']);
    await writeFile(join(repo, 'README.txt'), 'nothing to run here\n');
    await gitOk(['add', '.']);
    await gitOk(['commit', '-q', '-m', 'nothing to run']);
    const r = await git(['push', 'shellwego', 'main'], repo);
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.stderr, /No supported app type detected/);
    assert.match(r.stderr, /pre-receive hook declined/);
    assert.equal(await remoteRefs(), before, 'the ref is not updated');
    assert.equal((await releases()).length, 2);
    const still = JSON.parse(await serving(/"rev":"amended"/)) as { started: string };
    assert.equal(still.started, stamp, 'the running instance was not touched');
  });

  test('a pusher who disconnects mid-build gets no release, and the branch is not updated', async () => {
    const dir = await appDir({
      'package.json': JSON.stringify({ name: 'slow', version: '1.0.0', scripts: { build: 'node -e "setTimeout(() => {}, 6000)"', start: 'node server.js' } }),
      'server.js': bootStampApp['server.js'],
    });
    await (await p.client(token)).call('createApp', { body: { name: 'gitslow' } });
    for (const args of [['init', '-q', '-b', 'main'], ['add', '.'], ['commit', '-q', '-m', 'slow build']]) await gitOk(args, dir);
    // Its own process group: killing it takes git's HTTP helper (which holds the connection) along.
    const child = spawn('git', ['push', remote(token, 'gitslow'), 'main'], { cwd: dir, detached: true, env: { ...process.env, GIT_TERMINAL_PROMPT: '0', HOME: home } });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    await waitFor('the build to start', async () => /Building gitslow/.test(err), 60_000, 50);
    process.kill(-child.pid!, 'SIGKILL');
    const a = await p.client(token);
    const build = await waitFor('the build to be given up', async () => {
      const [b] = await a.call('listBuilds', { params: { app: 'gitslow' } });
      return b?.state === 'failed' && b;
    }, 30_000);
    assert.match(build.error ?? '', /push was interrupted/);
    // Long enough for the builder to have finished the 6 s build: its result makes no release.
    await new Promise((r) => setTimeout(r, 8000));
    assert.deepEqual(await a.call('listReleases', { params: { app: 'gitslow' } }), []);
    assert.equal((await gitOk(['ls-remote', remote(token, 'gitslow')])).stdout.trim(), '', 'the branch was not created');
  });

  test('master deploys when the repository has no main', async () => {
    await (await p.client(token)).call('createApp', { body: { name: 'gitmaster' } });
    const r = await gitOk(['push', remote(token, 'gitmaster'), 'HEAD~1:refs/heads/master']);
    assert.match(r.stderr, /Building gitmaster from master/);
    assert.match(r.stderr, /Released v1/);
  });

  test('gzip-encoded upload-pack requests are understood', async () => {
    const head = /^(\w+)\s+refs\/heads\/main$/m.exec(await remoteRefs())![1];
    const pkt = (s: string) => (s.length + 4).toString(16).padStart(4, '0') + s;
    const body = gzipSync(Buffer.from(pkt(`want ${head}\n`) + '0000' + pkt('done\n')));
    const auth = `Basic ${Buffer.from(`x:${viewerToken}`).toString('base64')}`;
    const r = await fetch(`${p.apiUrl}/git/gitapp.git/git-upload-pack`, {
      method: 'POST', body, headers: { authorization: auth, 'content-type': 'application/x-git-upload-pack-request', 'content-encoding': 'gzip' },
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'application/x-git-upload-pack-result');
    const out = Buffer.from(await r.arrayBuffer());
    assert.ok(out.includes('PACK'), out.subarray(0, 200).toString());
    const anon = await fetch(`${p.apiUrl}/git/gitapp.git/info/refs?service=git-upload-pack`);
    assert.equal(anon.status, 401);
    assert.equal(anon.headers.get('www-authenticate'), 'Basic realm="ShellWeGo"');
    assert.equal(((await anon.json()) as { error: { code: string } }).error.code, 'unauthorized');
  });

  test('a viewer can clone the app repository', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'swg-clone-'));
    try {
      await gitOk(['clone', '-q', remote(viewerToken), 'c'], dir);
      const server = await readFile(join(dir, 'c', 'server.js'), 'utf8');
      assert.match(server, /rev: 'amended'/);
      const branches = (await gitOk(['branch', '-r'], join(dir, 'c'))).stdout;
      assert.match(branches, /origin\/feature/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
