/**
 * deploy: pack the directory, upload it, stream the build, then wait for the new release's web
 * instance to run — so "Deployed" means the app is up, not just that a build was accepted.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import type { BuildT, InstanceT, LogLineT } from '@shellwego/core';
import { isApiError, isNetworkError } from '@shellwego/sdk';
import type { ShellWeGoClient } from '@shellwego/sdk';
import { listSourceFiles, writeSourceArchive } from '../archive.ts';
import { parseSeconds } from '../args.ts';
import type { Ctx } from '../context.ts';
import { CliError } from '../errors.ts';
import { bytes, psLines, seconds } from '../format.ts';
import { findLink, writeLink } from '../link.ts';
import { plural, withApp } from './shared.ts';

export const DEFAULT_WAIT_TIMEOUT_S = 120;
// Short: this wait is on the critical path of every deploy, and a list call is cheap.
const POLL_MS = 100;
const CLEAR_LINE = '\r\x1b[K';

interface DeployOpts {
  app?: string;
  wait: boolean;
  waitTimeout: string;
  link: boolean;
  json?: boolean;
  image?: string;
  registryUser?: string;
}

export function registerDeploy(program: Command, ctx: Ctx): void {
  withApp(
    program
      .command('deploy')
      .description('build and release the source in DIR (default: the current directory), or an OCI image with --image')
      .argument('[dir]', 'source directory', '.'),
  )
    .option('--no-wait', 'return once the build is released, without waiting for the web instance to run')
    .option('--wait-timeout <seconds>', 'how long to wait for the web instance to run', String(DEFAULT_WAIT_TIMEOUT_S))
    .option('--no-link', 'do not link DIR to the app')
    .option('--json', 'print the finished build as JSON on stdout (build output goes to stderr)')
    .option('--image <ref>', 'deploy an OCI/Docker image (registry/repo:tag or @sha256:digest) instead of source')
    .option('--registry-user <name>', 'registry user for --image; the password is read from $SHELLWEGO_REGISTRY_PASSWORD')
    .action((dir: string, opts: DeployOpts) => deploy(ctx, dir, opts));
}

async function deploy(ctx: Ctx, dirArg: string, opts: DeployOpts): Promise<void> {
  const started = ctx.now();
  const waitTimeoutMs = parseSeconds(opts.waitTimeout, '--wait-timeout') * 1000;
  const dir = resolve(ctx.io.cwd, dirArg);
  const appName = await ctx.app(opts.app, dir);
  const client = await ctx.client();
  // Before packing anything: a typo in the app name should not cost an upload.
  const app = await client.call('getApp', { params: { app: appName } });
  if (opts.image !== undefined) return deployImage(ctx, client, app, opts, started, waitTimeoutMs);
  if (opts.registryUser !== undefined) throw new CliError('--registry-user goes with --image', 'usage');

  const listing = await listSourceFiles(dir);
  for (const p of listing.skipped) ctx.err(`Skipping ${p}: not a file, directory or link`);
  const tmp = await mkdtemp(join(tmpdir(), 'shellwego-deploy-'));
  let build: BuildT;
  try {
    const file = join(tmp, 'source.tar.gz');
    const size = await writeSourceArchive(listing, file);
    ctx.err(`Packed ${plural(listing.files, 'file')} (${bytes(listing.bytes)}) from ${listing.root} into ${bytes(size)}`);
    build = await upload(ctx, client, appName, file, size);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }

  ctx.err(`Building ${appName} (build ${build.id})`);
  const print = opts.json ? (l: string) => ctx.err(l) : (l: string) => ctx.out(l);
  const done = await followBuild(ctx, client, appName, build, print);
  if (opts.json) ctx.json(done);
  // The full reason is in the build output above; the error line keeps to one line.
  if (done.state === 'failed') throw new CliError(`build failed: ${done.error?.split('\n')[0].trim() || 'see the build output above'}`, 'build_failed');

  if (opts.app && opts.link) await linkDir(ctx, dir, appName);
  const version = done.releaseVersion;
  if (opts.wait && version !== null) await waitForWeb(ctx, client, appName, done, version, waitTimeoutMs);
  const summary = `Deployed ${version === null ? 'the build' : `v${version}`} to ${app.url} in ${seconds(ctx.now() - started)}`;
  if (opts.json) ctx.err(summary);
  else ctx.out(summary);
}

/** deploy --image: the control plane pulls the image; the rest is the source deploy's path. */
async function deployImage(ctx: Ctx, client: ShellWeGoClient, app: { name: string; url: string }, opts: DeployOpts, started: number, waitTimeoutMs: number): Promise<void> {
  let credentials: { username: string; password: string } | undefined;
  if (opts.registryUser !== undefined) {
    const password = ctx.env('SHELLWEGO_REGISTRY_PASSWORD');
    if (!password) throw new CliError('--registry-user needs the password in $SHELLWEGO_REGISTRY_PASSWORD (never on the command line)', 'usage');
    credentials = { username: opts.registryUser, password };
  }
  const build = await client.call('createImageBuild', { params: { app: app.name }, body: { image: opts.image!, ...(credentials ? { credentials } : {}) } });
  ctx.err(`Building ${app.name} from image ${opts.image} (build ${build.id})`);
  const print = opts.json ? (l: string) => ctx.err(l) : (l: string) => ctx.out(l);
  const done = await followBuild(ctx, client, app.name, build, print);
  if (opts.json) ctx.json(done);
  if (done.state === 'failed') throw new CliError(`build failed: ${done.error?.split('\n')[0].trim() || 'see the build output above'}`, 'build_failed');
  const version = done.releaseVersion;
  if (opts.wait && version !== null) await waitForWeb(ctx, client, app.name, done, version, waitTimeoutMs);
  const summary = `Deployed ${version === null ? 'the build' : `v${version}`} to ${app.url} in ${seconds(ctx.now() - started)}`;
  if (opts.json) ctx.err(summary);
  else ctx.out(summary);
}

async function upload(ctx: Ctx, client: ShellWeGoClient, app: string, file: string, size: number): Promise<BuildT> {
  const tty = Boolean(ctx.io.stderr.isTTY);
  const t0 = ctx.now();
  let shown = -1;
  if (!tty) ctx.err(`Uploading ${bytes(size)}`);
  const onProgress = (sent: number) => {
    if (!tty) return;
    const pct = size ? Math.floor((sent / size) * 100) : 100;
    if (pct === shown) return;
    shown = pct;
    ctx.io.stderr.write(`${CLEAR_LINE}Uploading ${bytes(sent)} of ${bytes(size)} (${pct}%)`);
  };
  try {
    const build = await client.upload('createBuild', { params: { app } }, createReadStream(file), { size, onProgress });
    if (tty) ctx.io.stderr.write(`${CLEAR_LINE}Uploaded ${bytes(size)} in ${seconds(ctx.now() - t0)}\n`);
    return build;
  } catch (err) {
    if (tty) ctx.io.stderr.write('\n');
    throw err;
  }
}

/** Streams the build output; returns the finished build from the stream's `end` event. */
async function followBuild(ctx: Ctx, client: ShellWeGoClient, app: string, build: BuildT, print: (line: string) => void): Promise<BuildT> {
  const params = { app, build: build.id };
  try {
    for await (const m of client.stream('buildLog', { params })) {
      if (m.event === 'line') print(lineText(m.data));
      else if (m.event === 'end') return m.data as BuildT;
    }
  } catch (err) {
    if (!isNetworkError(err)) throw err;
    ctx.err(`The build log connection broke (${err.message}); waiting for the build to finish`);
  }
  // The stream ended without `end` (a proxy timeout, a restart): the build goes on; poll it.
  for (;;) {
    const b = await client.call('getBuild', { params });
    if (b.state === 'succeeded' || b.state === 'failed') return b;
    await sleep(1000);
  }
}

function lineText(data: unknown): string {
  if (data && typeof data === 'object' && typeof (data as LogLineT).line === 'string') return (data as LogLineT).line;
  return typeof data === 'string' ? data : JSON.stringify(data);
}

async function linkDir(ctx: Ctx, dir: string, app: string): Promise<void> {
  const target = resolve(dir);
  if (target === resolve(ctx.io.home) || target === '/') return;
  const existing = await findLink(target);
  if (existing?.dir === target && existing.app === app) return;
  await writeLink(target, app);
  ctx.err(`Linked ${target} to ${app}${existing?.dir === target ? ` (was ${existing.app})` : ''}`);
}

/** Until a `web` instance of `version` runs; only when the release has a web process scaled above 0. */
async function waitForWeb(ctx: Ctx, client: ShellWeGoClient, app: string, build: BuildT, version: number, timeoutMs: number): Promise<void> {
  if (!('web' in build.processTypes)) {
    ctx.err('No web process type: not waiting for instances');
    return;
  }
  const formation = await client.call('getFormation', { params: { app } });
  if ((formation.find((f) => f.type === 'web')?.quantity ?? 1) === 0) {
    ctx.err('web is scaled to 0: not waiting for instances');
    return;
  }
  const tty = Boolean(ctx.io.stderr.isTTY);
  const deadline = ctx.now() + timeoutMs;
  let instances: InstanceT[] = [];
  let status = '';
  for (;;) {
    try {
      instances = await client.call('listInstances', { params: { app } });
    } catch (err) {
      // A busy or restarting API is not a failed deploy; the deadline still holds.
      if (!isNetworkError(err) && !(isApiError(err) && err.status >= 500)) throw err;
    }
    const web = instances.filter((i) => i.type === 'web' && i.releaseVersion === version);
    if (web.some((i) => i.state === 'running')) {
      if (tty && status) ctx.io.stderr.write(CLEAR_LINE);
      return;
    }
    if (ctx.now() >= deadline) break;
    if (tty) {
      const next = `Waiting for web on v${version}: ${web.length ? countStates(web) : 'not started yet'}`;
      if (next !== status) ctx.io.stderr.write(`${CLEAR_LINE}${next}`);
      status = next;
    }
    await sleep(Math.min(POLL_MS, Math.max(0, deadline - ctx.now())));
  }
  if (tty && status) ctx.io.stderr.write(`${CLEAR_LINE}`);
  const relevant = instances.filter((i) => i.type === 'web');
  if (relevant.length) {
    ctx.err(`Instances of ${app}:`);
    for (const l of psLines(relevant, ctx.now(), { lastLogOf: (i) => i.releaseVersion === version })) ctx.err(`  ${l}`);
  } else {
    ctx.err(`No web instance of ${app} was scheduled.`);
  }
  throw new CliError(
    `v${version} was released but no web instance of it was running after ${seconds(timeoutMs)}; see \`shellwego ps --app ${app}\` and \`shellwego logs --app ${app}\``,
    'deploy_timeout',
  );
}

function countStates(instances: InstanceT[]): string {
  const counts = new Map<string, number>();
  for (const i of instances) counts.set(i.state, (counts.get(i.state) ?? 0) + 1);
  return [...counts].map(([s, n]) => `${n} ${s}`).join(', ');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
