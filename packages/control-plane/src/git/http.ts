/**
 * Git smart-HTTP endpoint: `/git/<app>.git` backed by real `git upload-pack` / `git
 * receive-pack` in stateless-RPC mode. Outside the /v1 route table: these speak git's protocol.
 * Auth is HTTP Basic with an API token as the password (any username), checked with the API's
 * own `authenticate()`/`authorize()`; apps are looked up in the token's organization.
 */
import { spawn } from 'node:child_process';
import { access, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError, isApiError, notFound, unauthorized } from '@shellwego/core';
import type { RouteDef } from '@shellwego/core';
import type { AppRow } from '@shellwego/store';
import { authenticate, authorize } from '../auth.ts';
import type { AuthContext } from '../auth.ts';
import type { ControlPlaneContext } from '../context.ts';
import { installHooks } from './hook.ts';
import { bearerFromGitAuth, isGitService, serviceAdvertisement } from './protocol.ts';
import type { GitService } from './protocol.ts';
import { runGit, withPushSession } from './push.ts';

/** Push: like `POST /v1/apps/:app/builds`; fetch: like reading the app. */
const ACCESS: Record<GitService, Pick<RouteDef, 'scope' | 'role'>> = {
  'git-receive-pack': { scope: 'apps:deploy', role: 'developer' },
  'git-upload-pack': { scope: 'apps:read', role: 'viewer' },
};

export const WWW_AUTHENTICATE = 'Basic realm="ShellWeGo"';

export function gitRoot(cp: ControlPlaneContext): string {
  return join(cp.settings.dataDir, 'git');
}

/** The bare repository of an app (by id, so a rename keeps its history), created on first use. */
export async function ensureRepo(root: string, appId: string): Promise<string> {
  const dir = join(root, `${appId}.git`);
  try {
    await access(join(dir, 'HEAD'));
  } catch {
    await mkdir(root, { recursive: true });
    const r = await runGit(['init', '--bare', '--quiet', '--initial-branch=main', dir]);
    if (r.code !== 0) throw new Error(`git init failed: ${r.stderr.trim()}`);
  }
  return dir;
}

function sendError(reply: FastifyReply, err: ApiError): FastifyReply {
  if (err.status === 401) void reply.header('www-authenticate', WWW_AUTHENTICATE);
  return reply.status(err.status).type('application/json').send(err.toJSON());
}

export function registerGitRoutes(app: FastifyInstance, cp: ControlPlaneContext): void {
  let hooks: Promise<string> | undefined;
  const hooksDir = () => (hooks ??= installHooks(gitRoot(cp)).catch((err: unknown) => {
    hooks = undefined;
    throw err;
  }));

  for (const service of ['upload-pack', 'receive-pack']) {
    app.addContentTypeParser(`application/x-git-${service}-request`, (_req, payload, done) => done(null, payload));
  }

  async function access(req: FastifyRequest, service: GitService): Promise<{ app: AppRow; auth: AuthContext; repo: string }> {
    const header = bearerFromGitAuth(req.headers.authorization);
    if (!header) throw unauthorized('authentication required: use any username and a ShellWeGo API token as the password');
    const auth = await authenticate(cp.store, header);
    authorize({ method: 'POST', path: '/git', summary: service, auth: 'token', response: undefined as never, ...ACCESS[service] }, auth);
    const name = (req.params as { repo: string }).repo.replace(/\.git$/, '');
    const row = await cp.store.apps.get(auth.organization.id, name);
    if (!row) throw notFound('app', name);
    return { app: row, auth, repo: await ensureRepo(gitRoot(cp), row.id) };
  }

  async function gitArgs(service: GitService): Promise<string[]> {
    if (service === 'git-upload-pack') return ['upload-pack'];
    // Same bound as a source upload: git refuses a larger pack before storing it.
    return ['-c', `core.hooksPath=${await hooksDir()}`, '-c', `receive.maxInputSize=${cp.settings.maxUploadBytes}`, 'receive-pack'];
  }

  app.get('/git/:repo/info/refs', async (req, reply) => {
    const service = (req.query as { service?: string }).service;
    try {
      if (!isGitService(service)) throw new ApiError(403, 'dumb_http_unsupported', 'only the smart HTTP protocol is supported: use git 1.6.6 or later');
      const { repo } = await access(req, service);
      const r = await runGitBuffer([...(await gitArgs(service)), '--stateless-rpc', '--advertise-refs', repo]);
      return reply
        .status(200)
        .header('content-type', `application/x-${service}-advertisement`)
        .header('cache-control', 'no-cache, max-age=0, must-revalidate')
        .send(Buffer.concat([serviceAdvertisement(service), r]));
    } catch (err) {
      if (isApiError(err)) return sendError(reply, err);
      throw err;
    }
  });

  for (const service of ['git-upload-pack', 'git-receive-pack'] as const) {
    app.post(`/git/:repo/${service}`, async (req, reply) => {
      let ctx;
      try {
        ctx = await access(req, service);
      } catch (err) {
        (req.body as Readable | undefined)?.resume?.();
        if (isApiError(err)) return sendError(reply, err);
        throw err;
      }
      const { app: appRow, auth, repo } = ctx;
      let body = (req.body as Readable | undefined) ?? req.raw;
      if (/\bgzip\b/i.test(String(req.headers['content-encoding'] ?? ''))) body = body.pipe(createGunzip());
      const args = [...(await gitArgs(service)), '--stateless-rpc', repo];
      reply.hijack();
      const res = reply.raw;
      // The pusher went away before git answered: the push is abandoned (no release from it).
      const interrupted = new AbortController();
      const run = (env: NodeJS.ProcessEnv) => new Promise<void>((resolve) => {
        const child = spawn('git', args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
        let stderr = '';
        let started = false;
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d.slice(0, 10_000)));
        child.stdout.once('data', () => (started = true));
        child.stdin.on('error', () => {});
        body.on('error', () => child.kill());
        res.on('close', () => {
          if (child.exitCode !== null) return;
          interrupted.abort();
          child.kill();
        });
        body.pipe(child.stdin);
        res.writeHead(200, { 'content-type': `application/x-${service}-result`, 'cache-control': 'no-cache, max-age=0, must-revalidate' });
        child.stdout.pipe(res);
        child.on('error', (err) => {
          cp.logger.error({ err }, `git ${service} failed to start`);
          res.destroy();
          resolve();
        });
        child.on('close', (code) => {
          if (code !== 0) cp.logger.warn({ app: appRow.id, code, stderr, started }, `git ${service} exited with an error`);
          resolve();
        });
      });
      try {
        if (service === 'git-receive-pack') {
          await withPushSession(cp, appRow, auth, repo, interrupted.signal, (socketPath) => run({ ...process.env, SWG_HOOK_SOCKET: socketPath }));
        } else {
          await run(process.env);
        }
      } catch (err) {
        cp.logger.error({ err, app: appRow.id }, `git ${service} failed`);
        res.destroy();
      }
    });
  }
}

function runGitBuffer(args: string[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`git ${args.join(' ')} failed: ${stderr.trim()}`))));
  });
}
