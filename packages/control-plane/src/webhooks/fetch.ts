/**
 * Fetches one commit of a remote repository with real git and archives it as tar.gz, in a
 * private temp directory under the data dir. Git runs with no user or system config, no
 * prompts, network transports only and (for http/https) no redirects and the host pinned to
 * the address the URL policy checked.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { redactCredentials, resolveRepositoryHost } from './url-policy.ts';
import type { RepositoryUrl } from './url-policy.ts';

export class FetchError extends Error {}

export interface FetchedCommit {
  /** The tar.gz of the commit's tree. */
  file: string;
  /** Removes the temp directory (repository and archive). */
  cleanup(): Promise<void>;
}

function git(args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: timedOut ? 124 : code ?? 1, stderr: timedOut ? `timed out after ${Math.round(opts.timeoutMs / 1000)}s` : stderr });
    });
  });
}

function lastLine(stderr: string): string {
  const lines = redactCredentials(stderr).split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.slice(-2).join(' / ') || 'no output';
}

/**
 * Fetches `sha` from `repo` (directly by id where the server allows it, else the branch's
 * recent history, which must contain it) and writes `git archive` of it to a file.
 */
export async function fetchCommit(opts: {
  repo: RepositoryUrl;
  branch: string;
  sha: string;
  workRoot: string;
  allowPrivate: boolean;
  timeoutMs?: number;
}): Promise<FetchedCommit> {
  const { repo, branch, sha } = opts;
  const timeoutMs = opts.timeoutMs ?? 5 * 60_000;
  const address = await resolveRepositoryHost(repo, { allowPrivate: opts.allowPrivate });
  await mkdir(opts.workRoot, { recursive: true });
  const dir = await mkdtemp(join(opts.workRoot, 'hook-'));
  const cleanup = () => rm(dir, { recursive: true, force: true });
  try {
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: dir,
      LANG: 'C',
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_TERMINAL_PROMPT: '0',
      GIT_ASKPASS: 'true',
      // Also covers redirects and anything git would start on its own: network transports only.
      GIT_ALLOW_PROTOCOL: 'https:http:git',
    };
    const repoDir = join(dir, 'repo.git');
    const init = await git(['init', '--bare', '--quiet', repoDir], { cwd: dir, env, timeoutMs });
    if (init.code !== 0) throw new FetchError(`git init failed: ${lastLine(init.stderr)}`);
    const config = ['-c', 'protocol.file.allow=never', '-c', 'http.followRedirects=false'];
    if (repo.scheme !== 'git' && !isIP(repo.host)) {
      config.push('-c', `http.curloptResolve=${repo.host}:${repo.port}:${isIP(address) === 6 ? `[${address}]` : address}`);
    }
    const run = (args: string[]) => git([...config, ...args], { cwd: repoDir, env, timeoutMs });
    const byId = await run(['fetch', '--quiet', '--no-tags', '--depth', '1', repo.url, sha]);
    if (byId.code !== 0) {
      // Servers that refuse fetching by commit id (git daemon's default): take the branch instead.
      const byBranch = await run(['fetch', '--quiet', '--no-tags', '--depth', '50', repo.url, `refs/heads/${branch}`]);
      if (byBranch.code !== 0) throw new FetchError(`git fetch from ${repo.display} failed: ${lastLine(byBranch.stderr)}`);
      const has = await run(['cat-file', '-e', `${sha}^{commit}`]);
      if (has.code !== 0) throw new FetchError(`commit ${sha.slice(0, 12)} is not on ${branch} of ${repo.display} (force-pushed away?)`);
    }
    const file = join(dir, 'source.tar.gz');
    const archive = await run(['archive', '--format=tar.gz', '-o', file, sha]);
    if (archive.code !== 0) throw new FetchError(`git archive of ${sha.slice(0, 12)} failed: ${lastLine(archive.stderr)}`);
    return { file, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
