/** git remote: `git push shellwego main` deploys. */
import { execFile } from 'node:child_process';
import type { Command } from 'commander';
import type { Ctx } from '../context.ts';
import { CliError, UsageError } from '../errors.ts';
import { withApp } from './shared.ts';
import type { AppOpts } from './shared.ts';

/** The app's git URL on the API server, without credentials. */
export function gitRemoteUrl(apiUrl: string, app: string): string {
  const u = new URL(apiUrl);
  u.username = '';
  u.password = '';
  u.search = '';
  u.hash = '';
  u.pathname = `${u.pathname.replace(/\/+$/, '')}/git/${encodeURIComponent(app)}.git`;
  return u.toString();
}

/** A git remote name git accepts (a conservative subset of valid ref components). */
export function isValidRemoteName(name: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name) && !name.includes('..') && !name.endsWith('.lock') && !name.endsWith('.');
}

function git(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('git', args, { cwd }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') resolve({ code: 127, stdout: '', stderr: 'git is not installed' });
      else resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

export function registerGit(program: Command, ctx: Ctx): void {
  const cmd = program.command('git').description('deploy with `git push`');
  withApp(
    cmd
      .command('remote')
      .description('add (or update) a git remote for the app in the current git repository')
      .option('-r, --remote <name>', 'name of the git remote', 'shellwego'),
  ).action(async (opts: AppOpts & { remote: string }) => {
    if (!isValidRemoteName(opts.remote)) throw new UsageError(`'${opts.remote}' is not a valid git remote name`);
    const appName = await ctx.app(opts.app);
    const app = await (await ctx.client()).call('getApp', { params: { app: appName } });
    const { apiUrl } = await ctx.resolveSession();
    const url = gitRemoteUrl(apiUrl, app.name);
    const cwd = ctx.io.cwd;
    const inside = await git(['rev-parse', '--git-dir'], cwd);
    if (inside.code !== 0) throw new CliError(inside.code === 127 ? 'git is not installed' : `${cwd} is not a git repository: run \`git init\` first`, 'not_a_git_repo');
    const existing = await git(['remote', 'get-url', opts.remote], cwd);
    const r = existing.code === 0 ? await git(['remote', 'set-url', opts.remote, url], cwd) : await git(['remote', 'add', opts.remote, url], cwd);
    if (r.code !== 0) throw new CliError(`git remote failed: ${r.stderr.trim()}`, 'git_failed');
    ctx.out(`${existing.code === 0 ? 'Updated' : 'Added'} git remote ${opts.remote} → ${url}`);
    ctx.err('');
    ctx.err(`Deploy with:  git push ${opts.remote} main     (or master, when the repository has no main)`);
    ctx.err('Other branches are stored without deploying; a push whose build fails is rejected.');
    ctx.err('');
    ctx.err('Authentication: when git asks, give any username and a ShellWeGo API token as the password,');
    ctx.err('e.g. one from `shellwego tokens create git --scope apps:deploy`. To avoid typing it each time,');
    ctx.err('let a credential helper remember it: `git config credential.helper store` (plain file) or your');
    ctx.err("OS keychain helper. Embedding the token in the remote URL is discouraged: it ends up in .git/config.");
  });
}
