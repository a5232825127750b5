import { spawn } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { createServer } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isApiError } from '@shellwego/core';
import type { AppRow } from '@shellwego/store';
import type { AuthContext } from '../auth.ts';
import { appUrl } from '../context.ts';
import type { ControlPlaneContext } from '../context.ts';
import { startSourceBuild } from '../source-builds.ts';
import { deployUpdate, parseRefUpdates } from './protocol.ts';
import type { RefUpdate } from './protocol.ts';

interface HookMessage {
  updates: string;
  env: Record<string, string | null>;
}

/** Runs `git` and collects its output; never throws for a non-zero exit. */
export function runGit(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/**
 * A push in progress: a unix socket (in a private temp directory) that the pre-receive hook of
 * this one `git receive-pack` connects to. The control plane decides there — after building the
 * deploy branch — whether git may update the refs. Nothing but this push knows the path.
 */
export async function withPushSession<T>(cp: ControlPlaneContext, app: AppRow, auth: AuthContext, repoDir: string, interrupted: AbortSignal, fn: (socketPath: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'swg-push-'));
  const socketPath = join(dir, 'hook.sock');
  const server = createServer((sock) => void serveHook(cp, app, auth, repoDir, interrupted, sock));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  try {
    return await fn(socketPath);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  }
}

async function serveHook(cp: ControlPlaneContext, app: AppRow, auth: AuthContext, repoDir: string, interrupted: AbortSignal, sock: Socket): Promise<void> {
  let input = '';
  sock.setEncoding('utf8');
  sock.on('error', () => {});
  const say = (line: string) => {
    if (!sock.destroyed) sock.write(line.replace(/[\r\n\0]+/g, ' ') + '\n');
  };
  let ok = false;
  try {
    const msg = await new Promise<HookMessage>((resolve, reject) => {
      sock.on('data', (d: string) => {
        input += d;
        const nl = input.indexOf('\n');
        try {
          if (nl >= 0) resolve(JSON.parse(input.slice(0, nl)) as HookMessage);
        } catch (err) {
          reject(err as Error);
        }
        if (input.length > 4 * 1024 * 1024) reject(new Error('hook message too large'));
      });
      sock.on('end', () => reject(new Error('the hook closed the connection early')));
    });
    ok = await preReceive(cp, app, auth, repoDir, msg, say, interrupted);
  } catch (err) {
    cp.logger.error({ err, app: app.id }, 'git pre-receive failed');
    say(`! internal error while processing the push: ${(err as Error).message}`);
    ok = false;
  }
  if (!sock.destroyed) sock.end(`\u0000${ok ? 'ok' : 'fail'}\n`);
}

function branch(ref: string): string {
  return ref.replace(/^refs\/heads\//, '');
}

async function preReceive(cp: ControlPlaneContext, app: AppRow, auth: AuthContext, repoDir: string, msg: HookMessage, say: (l: string) => void, interrupted: AbortSignal): Promise<boolean> {
  const updates = parseRefUpdates(msg.updates);
  const hasMain = (await runGit(['rev-parse', '--verify', '-q', 'refs/heads/main'], { cwd: repoDir })).code === 0;
  const deploy = deployUpdate(updates, hasMain);
  for (const u of updates) {
    if (u === deploy) continue;
    if (/^0+$/.test(u.newSha)) say(`Deleting ${branch(u.ref)}`);
    else say(`Storing ${branch(u.ref)} (${u.newSha.slice(0, 7)}) without deploying: push ${hasMain ? 'main' : 'main (or master)'} to deploy`);
  }
  if (!deploy) return true;
  return buildAndRelease(cp, app, auth, repoDir, deploy, msg.env, say, interrupted);
}

async function buildAndRelease(cp: ControlPlaneContext, app: AppRow, auth: AuthContext, repoDir: string, u: RefUpdate, quarantine: Record<string, string | null>, say: (l: string) => void, interrupted: AbortSignal): Promise<boolean> {
  say(`-----> Building ${app.name} from ${branch(u.ref)} (${u.newSha.slice(0, 7)})`);
  // The pushed objects are still in git's quarantine directory: read them through it.
  const env: NodeJS.ProcessEnv = { ...process.env, GIT_DIR: repoDir };
  for (const [k, v] of Object.entries(quarantine)) if (v && /^GIT_(OBJECT_DIRECTORY|ALTERNATE_OBJECT_DIRECTORIES|QUARANTINE_PATH)$/.test(k)) env[k] = v;
  // Archive to a file first: a failed `git archive` never reaches the build path.
  const tmp = join(cp.settings.dataDir, 'tmp');
  await mkdir(tmp, { recursive: true });
  const file = join(tmp, `git-${randomBytes(8).toString('hex')}.tar.gz`);
  let build;
  try {
    const archive = spawn('git', ['archive', '--format=tar.gz', u.newSha], { cwd: repoDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let archiveErr = '';
    archive.stderr.setEncoding('utf8').on('data', (d: string) => (archiveErr += d));
    const exit = new Promise<number>((resolve, reject) => {
      archive.on('error', reject);
      archive.on('close', (code) => resolve(code ?? 1));
    });
    await pipeline(archive.stdout, createWriteStream(file, { mode: 0o600 }));
    const code = await exit;
    if (code !== 0) {
      say(`! git archive failed (exit ${code}): ${archiveErr.trim()}`);
      say('! Push rejected; the running release is unchanged.');
      return false;
    }
    const { size } = await stat(file);
    try {
      build = await startSourceBuild(cp, app, createReadStream(file), { createdBy: auth.user.email, declaredLength: size, via: 'git push' });
    } catch (err) {
      if (!isApiError(err)) throw err;
      say(`! ${err.message}`);
      say('! Push rejected; the running release is unchanged.');
      return false;
    }
  } finally {
    await rm(file, { force: true });
  }

  // A pusher who disconnects mid-build gets no release: git will not update the branch, so a
  // release from it would run code the repository does not have. (After the build succeeded the
  // release exists; git still completes the push if it can.)
  const buildId = build.id;
  const abandon = () => void cp.builds.abandon(buildId, 'the push was interrupted before the build finished (the client disconnected): no release').catch((err) => cp.logger.error({ err, build: buildId }, 'could not abandon the build'));
  if (interrupted.aborted) abandon();
  else interrupted.addEventListener('abort', abandon, { once: true });

  await new Promise<void>((resolve) => {
    const f = cp.buildLogs.follow(build.id, { line: (l) => say(l.line), end: resolve });
    if (!f) {
      void cp.buildLogs.read(build.id).then((lines) => lines.forEach((l) => say(l.line))).finally(resolve);
      return;
    }
    for (const l of f.lines) say(l.line);
  });
  let done = await cp.store.builds.byId(build.id);
  for (let i = 0; i < 100 && done && done.state !== 'succeeded' && done.state !== 'failed'; i++) {
    await new Promise((r) => setTimeout(r, 100));
    done = await cp.store.builds.byId(build.id);
  }
  if (done?.state !== 'succeeded') {
    say(`! Build failed: ${done?.error ?? 'the build did not finish'}`);
    say('! Push rejected; the running release is unchanged.');
    return false;
  }
  const release = done.releaseId ? await cp.store.releases.byId(app.organizationId, done.releaseId) : undefined;
  say(`-----> Released v${release?.version ?? '?'}; deploying`);
  if (release && release.processTypes.web) await waitForWeb(cp, app, release.id, say);
  say(`       ${appUrl(cp.settings, app.name)}`);
  return true;
}

/**
 * Like `shellwego deploy`: report when a web instance of the new release runs. Bounded, and
 * informational only — the release exists either way, so the push is not rejected over it.
 */
async function waitForWeb(cp: ControlPlaneContext, app: AppRow, releaseId: string, say: (l: string) => void, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const instances = await cp.store.instances.listByApp(app.organizationId, app.id);
    if (instances.some((i) => i.releaseId === releaseId && i.processType === 'web' && i.state === 'running')) {
      say('-----> Web process running');
      return;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  say(`       No web instance of the new release was running after ${timeoutMs / 1000}s: see \`shellwego ps --app ${app.name}\` and \`shellwego logs --app ${app.name}\``);
}
