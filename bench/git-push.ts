/**
 * `git push` to serving: examples/node-express pushed to the platform's git remote with warm
 * dependency caches, timed from `git push` until the new release answers through the router.
 * Reference, same run: the same push of the same commits to a plain local bare repository —
 * the floor of any git push.
 * Run: node --import tsx bench/git-push.ts      (BENCH_RUNS=3 by default)
 */
import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { TestPlatform } from '../test/helpers/platform.ts';
import { ROOT, median, saveResult } from './lib.ts';

const run = promisify(execFile);
const RUNS = Number(process.env.BENCH_RUNS || 3);

const p = await TestPlatform.start({ isolation: 'sandbox', env: { SHELLWEGO_LOG_LEVEL: 'error' } });
const token = await p.token();
const work = await mkdtemp(join(tmpdir(), 'swg-bench-git-'));
const repo = join(work, 'app');
const bare = join(work, 'bare.git');
const env = { ...process.env, GIT_TERMINAL_PROMPT: '0', GIT_AUTHOR_NAME: 'bench', GIT_AUTHOR_EMAIL: 'b@x', GIT_COMMITTER_NAME: 'bench', GIT_COMMITTER_EMAIL: 'b@x' };
const git = (args: string[], cwd = repo) => run('git', args, { cwd, env, maxBuffer: 64 * 1024 * 1024 });

async function cli(args: string[]) {
  const r = await p.cli(args, token, { cwd: work });
  if (r.code !== 0) throw new Error(`shellwego ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
}

/** Polls the router until the app answers 200 from release `v`. */
async function serving(v: number): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    try {
      const r = await p.viaRouter('gitbench');
      await r.arrayBuffer();
      if (r.status === 200 && r.headers.get('x-release') === `v${v}`) return;
    } catch {}
    await new Promise((res) => setTimeout(res, 10));
  }
  throw new Error(`v${v} did not serve within 120 s`);
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

try {
  await cli(['apps', 'create', 'gitbench', '--no-link']);
  await cp(join(ROOT, 'examples/node-express'), repo, { recursive: true });
  await git(['init', '-q', '-b', 'main']);
  await git(['add', '.']);
  await git(['commit', '-qm', 'first']);
  await git(['init', '-q', '--bare', bare], work);
  const remote = `http://x:${encodeURIComponent(token)}@127.0.0.1:${p.apiPort}/git/gitbench.git`;
  // Warm-up: the first push installs dependencies into the app's cache.
  await git(['push', '-q', remote, 'main']);
  let version = 1;
  await serving(version);
  await git(['push', '-q', bare, 'main']);

  const platform: number[] = [];
  const plain: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    await writeFile(join(repo, 'CHANGELOG.txt'), `change ${i} ${Date.now()}\n`); // new source, same lockfile
    await git(['add', '.']);
    await git(['commit', '-qm', `change ${i}`]);
    plain.push(await timed(() => git(['push', '-q', bare, 'main'])));
    version++;
    const v = version;
    platform.push(await timed(async () => { await git(['push', '-q', remote, 'main']); await serving(v); }));
  }
  const ref = median(plain);
  const med = median(platform);
  const result = { runs: RUNS, referencePlainBarePushMs: ref, pushToServingMs: med, ratio: med / ref, samples: { platform, plain } };
  console.log(`git push of examples/node-express (warm dependency cache), median of ${RUNS}`);
  console.log(`  reference: plain git push to a local bare repo   ${ref.toFixed(1)} ms`);
  console.log(`  git push → new release serving via the router    ${(med / 1000).toFixed(2)} s   ${(med / ref).toFixed(0)}x   (target < 5 s)`);
  await saveResult('git-push', result);
} finally {
  await p.destroy();
  await rm(work, { recursive: true, force: true });
}
