/**
 * One build: source tarball → detect → (provision node) → install (cached) → build → prune →
 * platform files → artifact in the blob store. Untrusted steps (installers, build scripts) run in
 * the sandbox runtime as an unprivileged user with /app = the source tree.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BlobStore, BuildRequest, BuildResultMessage, Stack } from '@shellwego/core';
import type { Mount, SandboxRuntime, SandboxSpec } from '@shellwego/sandbox';
import type { Logger } from 'pino';
import { DepCache, linkOrCopyTree, copyTree, nodeCacheKey, pythonCacheKey, safeName } from './cache.ts';
import type { Compression } from './artifact.ts';
import { createArtifact } from './artifact.ts';
import { detect, findStaticRoot, stackLabel } from './detect.ts';
import type { Detection, NodePlan } from './detect.ts';
import { BuildError } from './errors.ts';
import { extractSource } from './extract.ts';
import { NodeProvisioner } from './node-runtime.ts';
import type { NodeDistOptions } from './node-runtime.ts';
import { LogTail } from './tail.ts';
import { exists } from './fsutil.ts';

export const DEFAULT_BUILD_UID = 65533;
export const DEFAULT_TIMEOUT_MS = 15 * 60_000;
export const MIN_BUILD_MEMORY_MB = 1024;
const MIN_BUILD_PIDS = 1024;
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Host dirs every sandbox sees read-only. */
const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib64', '/lib32', '/libx32', '/etc'];
export const STATIC_SERVER_SOURCE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'static-server.mjs');

export interface BuildDeps {
  blobs: BlobStore;
  /** Scratch space; one sub-directory per build, removed afterwards. */
  workDir: string;
  /** Persistent: dependency cache, package-manager caches, downloaded runtimes. */
  cacheDir: string;
  runtime: SandboxRuntime;
  /** Unprivileged uid/gid the untrusted steps run as (default 65533). */
  buildUid?: number;
  buildGid?: number;
  /**
   * Registry proxy URL as reachable from inside a sandbox on the bridge (sandbox isolation).
   * When set, steps run with network 'bridge' and HTTPS_PROXY etc. pointing at it; when null in
   * sandbox isolation, steps have no network. Ignored with isolation 'none' (host network).
   */
  proxyUrl?: string | null;
  /** Told each bridged step's sandbox IP while it runs (RegistryProxy.grant/revoke). */
  proxyAccess?: { grant(ip: string): void; revoke(ip: string): void } | null;
  /** Whole-build timeout (default 15 min). */
  timeoutMs?: number;
  signal?: AbortSignal;
  logger?: Pick<Logger, 'info' | 'warn' | 'error' | 'debug'>;
  nodeDist?: NodeDistOptions;
  /** Shared provisioner (dedupes concurrent downloads); created per build otherwise. */
  provisioner?: NodeProvisioner;
  compression?: Compression;
}

type LogFn = (line: string) => void;

interface Ctx {
  req: BuildRequest;
  deps: BuildDeps;
  log: LogFn;
  runtime: SandboxRuntime;
  sandboxed: boolean;
  buildDir: string;
  appDir: string;
  toolDir: string;
  homeDir: string;
  logFile: string;
  uid: number;
  gid: number;
  isRoot: boolean;
  /** Paths as the build steps see them. */
  app: string;
  cache: string;
  home: string;
  mounts: Mount[];
  network: 'bridge' | 'host' | 'none';
  proxyUrl: string | null;
  idBase: string;
  step: number;
  deadline: number;
  timeoutMs: number;
  tail: LogTail;
  recent: string[];
  depCache: DepCache;
  provisioner: NodeProvisioner;
  /** Set when a node runtime was provisioned (host dir of the runtime). */
  nodeRuntimeDir: string | null;
  usesPython: boolean;
  needsStaticServer: boolean;
  cacheHit: boolean | null;
  /** Phase durations (ms), logged at the end. */
  timings: Record<string, number>;
}

function fmtDuration(ms: number): string {
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  if (ms >= 1000) return `${Math.round(ms / 100) / 10} s`;
  return `${ms} ms`;
}

function fmtSize(bytes: number): string {
  if (bytes >= 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  return `${(bytes / 1024).toFixed(1)} KB`;
}


function isRootUser(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/**
 * Give "others" search (x) permission on `dir` and its ancestors up to and including `top`, the
 * builder's own work or cache directory — never above it: directories the builder does not own
 * are not touched (a data dir under a 0700 `mktemp -d` or /root stays as it is). With sandbox
 * isolation this only keeps steps on the sandbox's fast path (bwrap, running as the build user,
 * reaches the mounts itself); when a directory above `top` is closed, the sandbox reaches them
 * through a private mount namespace instead. (Isolation `none` works on the host paths as the
 * build user: there the whole path must be reachable, and the runtime says which directory is
 * not.) lstat: a symlink is never followed out of our tree.
 */
export async function ensureTraversableBelow(dir: string, top: string, log?: (msg: string) => void): Promise<void> {
  const root = path.resolve(top);
  let cur = path.resolve(dir);
  if (cur !== root && !cur.startsWith(root + path.sep)) return; // not ours
  for (;;) {
    const st = await fsp.lstat(cur).catch(() => null);
    if (st && st.isDirectory() && (st.mode & 0o001) === 0) {
      await fsp.chmod(cur, (st.mode & 0o7777) | 0o001);
      log?.(`made ${cur} traversable (o+x) so unprivileged build steps can reach their work directory`);
    }
    if (cur === root) return;
    cur = path.dirname(cur);
  }
}

/** chown -R without following links (only when root). */
async function chownTree(p: string, uid: number, gid: number): Promise<void> {
  await fsp.lchown(p, uid, gid);
  const st = await fsp.lstat(p);
  if (!st.isDirectory()) return;
  for (const ent of await fsp.readdir(p, { withFileTypes: true })) {
    const c = path.join(p, ent.name);
    if (ent.isDirectory()) await chownTree(c, uid, gid);
    else await fsp.lchown(c, uid, gid);
  }
}

function execText(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env, timeout: 10_000 }, (err, stdout) => (err ? reject(err) : resolve(String(stdout).trim())));
  });
}

let pythonVersionMemo: Promise<string | null> | null = null;
/** Version of the python3 build steps get (first on the sandbox PATH), or null. */
export function hostPythonVersion(): Promise<string | null> {
  pythonVersionMemo ??= execText('python3', ['-c', 'import sys;print("%d.%d.%d" % sys.version_info[:3])'], { PATH: DEFAULT_PATH }).catch(() => null);
  return pythonVersionMemo;
}

interface HostNode {
  node: string;
  binDir: string;
  prefix: string;
  npmCli: string | null;
  npmVersion: string;
  corepack: string | null;
  headers: boolean;
}

let hostNodeMemo: HostNode | null = null;
function hostNode(): HostNode {
  if (hostNodeMemo) return hostNodeMemo;
  const node = process.execPath;
  const binDir = path.dirname(node);
  const prefix = path.dirname(binDir);
  const npmCliPath = path.join(prefix, 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');
  const npmCli = existsSync(npmCliPath) ? npmCliPath : null;
  let npmVersion = 'unknown';
  try {
    if (npmCli) npmVersion = JSON.parse(readFileSync(path.join(prefix, 'lib', 'node_modules', 'npm', 'package.json'), 'utf8')).version;
  } catch {}
  const cp = path.join(prefix, 'lib', 'node_modules', 'corepack', 'dist', 'corepack.js');
  hostNodeMemo = {
    node,
    binDir,
    prefix,
    npmCli,
    npmVersion,
    corepack: existsSync(cp) ? cp : null,
    headers: existsSync(path.join(prefix, 'include', 'node', 'node.h')),
  };
  return hostNodeMemo;
}

function underSystemDir(p: string): boolean {
  return SYSTEM_DIRS.some((d) => p === d || p.startsWith(d + '/'));
}

/**
 * CA settings of the platform host (e.g. a corporate TLS proxy's CA) that build tools need to
 * reach the registry. Forwarded when they point at files the sandbox can see.
 */
const CA_ENV = ['NODE_EXTRA_CA_CERTS', 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'PIP_CERT', 'REQUESTS_CA_BUNDLE'];

function stepEnv(ctx: Ctx, nodeBin: string | null, nodedir: string | null): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of CA_ENV) {
    const v = process.env[k];
    if (v && path.isAbsolute(v) && (!ctx.sandboxed || underSystemDir(v))) env[k] = v;
  }
  for (const [k, v] of Object.entries(ctx.req.env ?? {})) {
    if (ENV_KEY_RE.test(k) && typeof v === 'string' && !v.includes('\0')) env[k] = v;
  }
  const hn = hostNode();
  const pathDirs = [nodeBin, `${ctx.app}/node_modules/.bin`, DEFAULT_PATH.split(':').includes(hn.binDir) ? null : hn.binDir, DEFAULT_PATH].filter(Boolean);
  Object.assign(env, {
    HOME: ctx.home,
    PATH: pathDirs.join(':'),
    NODE_ENV: env.NODE_ENV || 'production',
    CI: 'true',
    SHELLWEGO_BUILD_ID: ctx.req.buildId,
    SHELLWEGO_APP_NAME: ctx.req.appName ?? '',
    npm_config_cache: `${ctx.cache}/npm`,
    npm_config_update_notifier: 'false',
    npm_config_fund: 'false',
    npm_config_audit: 'false',
    npm_config_progress: 'false',
    COREPACK_HOME: `${ctx.cache}/corepack`,
    COREPACK_ENABLE_DOWNLOAD_PROMPT: '0',
    COREPACK_ENABLE_AUTO_PIN: '0',
    // Registry metadata seen through some proxies lacks dist.signatures, which corepack then
    // refuses; the tarball still comes over TLS from the allow-listed registry only. An app can
    // turn verification back on with its own COREPACK_INTEGRITY_KEYS config var.
    COREPACK_INTEGRITY_KEYS: env.COREPACK_INTEGRITY_KEYS ?? '0',
    // Fetch yarn/pnpm themselves from the npm registry (repo.yarnpkg.com is not allow-listed).
    COREPACK_NPM_REGISTRY: env.COREPACK_NPM_REGISTRY ?? 'https://registry.npmjs.org',
    PIP_CACHE_DIR: `${ctx.cache}/pip`,
    PIP_DISABLE_PIP_VERSION_CHECK: '1',
    PIP_NO_INPUT: '1',
    // --target installs never touch the system site-packages; env (not the flag) so older pips ignore it.
    PIP_BREAK_SYSTEM_PACKAGES: '1',
    PYTHONUNBUFFERED: '1',
  });
  // node-gyp reads this (npm 11 warns about an unknown npm_config_nodedir): headers for native
  // addons without downloading them from nodejs.org, which builds cannot reach.
  if (nodedir) env.npm_package_config_node_gyp_nodedir = nodedir;
  if (ctx.network === 'none') {
    // No way out: fail fast from the package cache instead of retrying DNS for a minute.
    env.npm_config_offline = 'true';
    env.PIP_NO_INDEX = '1';
  }
  if (ctx.proxyUrl) {
    for (const k of ['HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy', 'http_proxy', 'npm_config_proxy', 'npm_config_https_proxy']) env[k] = ctx.proxyUrl;
    for (const k of ['NO_PROXY', 'no_proxy', 'npm_config_noproxy']) delete env[k];
  }
  return env;
}

/** The few output lines that explain a failure: error-looking lines when there are any, else the last ones. */
export function lastLines(lines: string[], n = 4): string {
  const useful = lines.filter((l) => l.trim() !== '' && !/A complete log of this run can be found in/.test(l));
  const leading = useful.filter((l) => /^\s*(npm (error|ERR!)|error\b|fatal\b|\S*Error\b|\S+: (error|fatal)\b)/i.test(l));
  const loose = useful.filter((l) => /\berr(or)?\b|ERR!|failed|exception|not found|cannot|denied/i.test(l));
  return (leading.length ? leading : loose.length ? loose : useful)
    .slice(-n)
    .map((l) => (l.length > 240 ? l.slice(0, 240) + '…' : l))
    .join('\n');
}

/** Run one untrusted step in the sandbox; throws BuildError("<label> failed (exit N): <last lines>"). */
async function runStep(ctx: Ctx, label: string, argv: string[]): Promise<void> {
  checkTime(ctx, label);
  const n = ++ctx.step;
  const id = `${ctx.idBase}-${n}`;
  const stateDir = path.join(ctx.buildDir, 'state', String(n));
  await fsp.mkdir(stateDir, { recursive: true, mode: 0o700 });
  const nodeBin = ctx.nodeRuntimeDir ? `${ctx.app}/.shellwego/node/bin` : null;
  const hn = hostNode();
  const nodedir = ctx.nodeRuntimeDir
    ? existsSync(path.join(ctx.nodeRuntimeDir, 'include', 'node', 'node.h'))
      ? `${ctx.app}/.shellwego/node`
      : null
    : hn.headers
      ? hn.prefix
      : null;
  const l = ctx.req.limits ?? { memoryMb: MIN_BUILD_MEMORY_MB, cpus: 1, pids: MIN_BUILD_PIDS };
  const spec: SandboxSpec = {
    id,
    argv,
    env: stepEnv(ctx, nodeBin, nodedir),
    cwd: '/app',
    mounts: ctx.mounts,
    uid: ctx.uid,
    gid: ctx.gid,
    limits: {
      memoryMb: Math.max(Number(l.memoryMb) || 0, MIN_BUILD_MEMORY_MB),
      cpus: Math.max(Number(l.cpus) || 0, 1),
      pids: Math.max(Number(l.pids) || 0, MIN_BUILD_PIDS),
    },
    network: { mode: ctx.network },
    logFile: ctx.logFile,
    stateDir,
  };
  ctx.recent = [];
  ctx.deps.logger?.debug({ buildId: ctx.req.buildId, step: label, argv }, 'build step');
  let handle;
  try {
    handle = await ctx.runtime.start(spec);
  } catch (e: any) {
    throw new BuildError(`${label} could not start: ${e?.message ?? e}`);
  }
  let outcome: 'exit' | 'timeout' | 'abort' = 'exit';
  let exit;
  const granted = ctx.network === 'bridge' && handle.ip ? handle.ip : null;
  if (granted) ctx.deps.proxyAccess?.grant(granted);
  try {
    const remaining = Math.min(Math.max(ctx.deadline - Date.now(), 0), 2 ** 31 - 1);
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const stop = new Promise<'timeout' | 'abort'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), remaining);
      onAbort = () => resolve('abort');
      if (ctx.deps.signal?.aborted) resolve('abort');
      ctx.deps.signal?.addEventListener('abort', onAbort, { once: true });
    });
    const r = await Promise.race([handle.wait(), stop]);
    clearTimeout(timer);
    if (onAbort) ctx.deps.signal?.removeEventListener('abort', onAbort);
    if (r === 'timeout' || r === 'abort') {
      outcome = r;
      await handle.kill('SIGKILL').catch(() => {});
      exit = await Promise.race([handle.wait(), new Promise<null>((res) => setTimeout(() => res(null), 5000))]);
    } else {
      exit = r;
    }
  } finally {
    await ctx.tail.drain();
    if (granted) ctx.deps.proxyAccess?.revoke(granted);
    await ctx.runtime.cleanup(id, stateDir).catch((e) => ctx.deps.logger?.warn({ err: e?.message, id }, 'sandbox cleanup failed'));
  }
  if (outcome === 'timeout') throw new BuildError(`build timed out after ${fmtDuration(ctx.timeoutMs)} (during ${label})`);
  if (outcome === 'abort') throw new BuildError(`build cancelled during ${label}: the builder is shutting down`);
  if (!exit) throw new BuildError(`${label} did not report an exit status`);
  if (exit.exitCode === 0) return;
  const tail = lastLines(ctx.recent);
  if (exit.oomKilled) throw new BuildError(`${label} ran out of memory (limit ${spec.limits.memoryMb} MB)${tail ? `: ${tail}` : ''}`);
  const how = exit.signal && exit.signal !== 'null' ? `killed by ${exit.signal}` : `exit ${exit.exitCode ?? 'unknown'}`;
  throw new BuildError(`${label} failed (${how})${tail ? `: ${tail}` : ''}`);
}

function checkTime(ctx: Ctx, what: string): void {
  if (ctx.deps.signal?.aborted) throw new BuildError(`build cancelled before ${what}: the builder is shutting down`);
  if (Date.now() > ctx.deadline) throw new BuildError(`build timed out after ${fmtDuration(ctx.timeoutMs)} (before ${what})`);
}

// --------------------------------------------------------------------------------------------
// Node.js

interface PmCommands {
  name: string;
  install: string[];
  installLabel: string;
  run: (script: string) => string[];
  prune: string[] | null;
  version: string;
}

/** pnpm release line that writes the given lockfileVersion (×10). */
export function pnpmRange(lockVersion: number | null): string {
  if (lockVersion === null || lockVersion >= 90) return '^9';
  if (lockVersion >= 60) return '^8';
  if (lockVersion >= 54) return '^7';
  return '^6';
}

function pmCommands(plan: NodePlan): PmCommands {
  const hn = hostNode();
  if (plan.packageManager === 'npm') {
    const npm = hn.npmCli ? [hn.node, hn.npmCli] : ['npm'];
    const install = plan.lockfile ? 'ci' : 'install';
    return {
      name: 'npm',
      install: [...npm, install, '--include=dev', '--no-audit', '--no-fund'],
      installLabel: `npm ${install}`,
      run: (s) => [...npm, 'run', s],
      prune: [...npm, 'prune', '--omit=dev', '--no-audit', '--no-fund'],
      version: hn.npmVersion,
    };
  }
  const pm = plan.packageManager;
  if (!hn.corepack) {
    throw new BuildError(
      `${plan.lockfile} found but ${pm} is not available: this platform's Node.js has no corepack. ` +
        'Commit a package-lock.json (npm) instead, or install corepack on the build host.',
    );
  }
  // packageManager in package.json wins (corepack reads it); else a release line matching the lockfile.
  const pmField = typeof plan.pkg.packageManager === 'string' && plan.pkg.packageManager.startsWith(`${pm}@`) ? plan.pkg.packageManager : null;
  const spec = pmField ? pm : `${pm}@${pm === 'yarn' ? (plan.yarnBerry ? '^4' : '^1') : pnpmRange(plan.pnpmLockVersion)}`;
  const cmd = [hn.node, hn.corepack, spec];
  const version = pmField ?? spec;
  if (pm === 'yarn') {
    return plan.yarnBerry
      ? {
          name: 'yarn',
          install: [...cmd, 'install', '--immutable'],
          installLabel: 'yarn install',
          run: (s) => [...cmd, 'run', s],
          prune: null,
          version,
        }
      : {
          name: 'yarn',
          install: [...cmd, 'install', '--frozen-lockfile', '--production=false', '--non-interactive'],
          installLabel: 'yarn install',
          run: (s) => [...cmd, 'run', s],
          prune: [...cmd, 'install', '--frozen-lockfile', '--production=true', '--ignore-scripts', '--prefer-offline', '--non-interactive'],
          version,
        };
  }
  return {
    name: 'pnpm',
    install: [...cmd, 'install', '--frozen-lockfile', '--prod=false'],
    installLabel: 'pnpm install',
    run: (s) => [...cmd, 'run', s],
    prune: [...cmd, 'prune', '--prod'],
    version,
  };
}

async function restoreTree(ctx: Ctx, src: string, dst: string): Promise<void> {
  await fsp.rm(dst, { recursive: true, force: true });
  await copyTree(src, dst);
  if (ctx.isRoot) {
    const st = await fsp.lstat(dst);
    if (st.uid !== ctx.uid) await chownTree(dst, ctx.uid, ctx.gid);
  }
}

async function buildNode(ctx: Ctx, det: Detection): Promise<void> {
  const plan = det.node!;
  const choice = await ctx.provisioner.choose(plan.engines, ctx.log);
  ctx.log(`       ${choice.reason}`);
  if (choice.provisioned && choice.dir) {
    ctx.nodeRuntimeDir = choice.dir;
    await placePlatformDir(ctx); // the build steps already need it
  }
  const pm = pmCommands(plan);
  const nm = path.join(ctx.appDir, 'node_modules');
  let key: string | null = null;
  let pruned = false;
  const prodShortcut = !plan.hasBuildScript && plan.hasDevDependencies && pm.prune !== null;
  if (!plan.needsInstall) {
    ctx.log('-----> No dependencies to install');
  } else {
    key = await nodeCacheKey(ctx.appDir, plan, choice.version, `${pm.name}@${pm.version}`);
    const entry = await ctx.depCache.lookup(ctx.req.appId, key);
    if (entry && (await ctx.depCache.hasPart(entry, 'full'))) {
      if (prodShortcut && (await ctx.depCache.hasPart(entry, 'prod'))) {
        await restoreTree(ctx, path.join(entry, 'prod', 'node_modules'), nm);
        pruned = true;
        ctx.log('-----> Restored node_modules from cache (production dependencies)');
      } else {
        await restoreTree(ctx, path.join(entry, 'full', 'node_modules'), nm);
        ctx.log('-----> Restored node_modules from cache');
      }
      ctx.cacheHit = true;
    } else {
      ctx.cacheHit = false;
      ctx.log('-----> Installing dependencies (cache miss)');
      ctx.log(`       ${pm.installLabel}`);
      await fsp.rm(nm, { recursive: true, force: true });
      await runStep(ctx, pm.installLabel, pm.install);
      if (await isRealDir(nm)) {
        await ctx.depCache.savePart(ctx.req.appId, key, 'full', nm, { stack: 'node', node: choice.version, pm: pm.name });
        ctx.log('-----> Cached node_modules');
      }
    }
  }
  if (plan.hasBuildScript) {
    ctx.log(`-----> Running build: ${pm.name} run build`);
    await runStep(ctx, `${pm.name} run build`, pm.run('build'));
  }
  if (plan.hasDevDependencies && !pruned && (await isRealDir(nm))) {
    if (pm.prune) {
      ctx.log('-----> Pruning devDependencies');
      await runStep(ctx, `${pm.name} prune`, pm.prune);
      if (prodShortcut && key && (await isRealDir(nm))) {
        await ctx.depCache.savePart(ctx.req.appId, key, 'prod', nm).catch((e) => ctx.deps.logger?.warn({ err: e?.message }, 'caching pruned node_modules failed'));
      }
    } else {
      ctx.log('       (yarn 2+: devDependencies are kept, there is no production prune)');
    }
  }
  if (Object.keys(det.processTypes).length === 0) {
    // No start command: a front-end project whose build produced a static site is served as one.
    const root = await findStaticRoot(ctx.appDir, ['dist', 'build', 'public', '.']);
    if (root === null) {
      throw new BuildError(
        'No start command: add "scripts.start" to package.json, a Procfile with a web process, or a server.js / index.js / app.js file',
      );
    }
    det.processTypes.web = `node .shellwego/static-server.mjs ${root}`;
    ctx.needsStaticServer = true;
    ctx.log(`-----> No start command; serving ${root === '.' ? 'the app root' : root + '/'} as a static site`);
  }
}

async function isRealDir(p: string): Promise<boolean> {
  try {
    return (await fsp.lstat(p)).isDirectory();
  } catch {
    return false;
  }
}

// --------------------------------------------------------------------------------------------
// Python

async function buildPython(ctx: Ctx, det: Detection): Promise<void> {
  const plan = det.python!;
  const version = await hostPythonVersion();
  if (!version) throw new BuildError('Python app detected but python3 is not installed on the build host');
  ctx.log(`       Python ${version}`);
  if (plan.requestedVersion && !version.startsWith(plan.requestedVersion.replace(/\.x$/, '').replace(/\.\*$/, ''))) {
    ctx.log(`       warning: ${plan.requestedVersion} was requested (runtime.txt / .python-version) but this platform provides Python ${version}`);
  }
  if (Object.keys(det.processTypes).length === 0) {
    throw new BuildError('No start command: add a Procfile with a web process, or an app.py / main.py / server.py / wsgi.py file');
  }
  if (!plan.requirementsFile) return;
  ctx.usesPython = true;
  const target = path.join(ctx.appDir, '.python');
  const key = await pythonCacheKey(ctx.appDir, plan.requirementsFile, version);
  const entry = await ctx.depCache.lookup(ctx.req.appId, key);
  if (entry && (await ctx.depCache.hasPart(entry, 'python'))) {
    await restoreTree(ctx, path.join(entry, 'python', '.python'), target);
    ctx.log('-----> Restored .python from cache');
    ctx.cacheHit = true;
    return;
  }
  ctx.cacheHit = false;
  ctx.log('-----> Installing dependencies (cache miss)');
  const src = plan.requirementsFile === 'requirements.txt' ? ['-r', 'requirements.txt'] : ['.'];
  ctx.log(`       pip install --target .python ${src.join(' ')}`);
  await fsp.rm(target, { recursive: true, force: true });
  await runStep(ctx, 'pip install', ['python3', '-m', 'pip', 'install', '--target', `${ctx.app}/.python`, '--no-input', '--progress-bar', 'off', ...src]);
  if (await isRealDir(target)) {
    await ctx.depCache.savePart(ctx.req.appId, key, 'python', target, { stack: 'python', python: version });
    ctx.log('-----> Cached .python');
  }
}

// --------------------------------------------------------------------------------------------
// Platform files

/** mtime of the files the platform writes, so unchanged redeploys produce identical artifacts. */
const PLATFORM_MTIME = new Date('2000-01-01T00:00:00Z');

/** (Re)create .shellwego/ as root: the provisioned node runtime and the static server. */
async function placePlatformDir(ctx: Ctx): Promise<void> {
  const dir = path.join(ctx.appDir, '.shellwego');
  await fsp.rm(dir, { recursive: true, force: true }); // never follows a link planted by the build
  if (!ctx.nodeRuntimeDir && !ctx.needsStaticServer) return;
  await fsp.mkdir(dir, { mode: 0o755 });
  if (ctx.nodeRuntimeDir) await linkOrCopyTree(ctx.nodeRuntimeDir, path.join(dir, 'node'));
  if (ctx.needsStaticServer) {
    await fsp.copyFile(STATIC_SERVER_SOURCE, path.join(dir, 'static-server.mjs'));
    await fsp.utimes(path.join(dir, 'static-server.mjs'), PLATFORM_MTIME, PLATFORM_MTIME);
  }
  await fsp.utimes(dir, PLATFORM_MTIME, PLATFORM_MTIME);
}

export function profileScript(opts: { node: boolean; python: boolean }): string {
  const lines = [
    '# Written by the ShellWeGo builder. Sourced before every process of this app starts.',
    '# The app dir: /app in a sandbox; the host dir (the cwd) under isolation "none".',
    'if [ -z "${SHELLWEGO_APP_DIR:-}" ]; then',
    '  if [ -f "$PWD/.profile.d/shellwego.sh" ]; then SHELLWEGO_APP_DIR="$PWD"; else SHELLWEGO_APP_DIR=/app; fi',
    'fi',
    'export SHELLWEGO_APP_DIR',
    `export PATH="${opts.node ? '$SHELLWEGO_APP_DIR/.shellwego/node/bin:' : ''}$SHELLWEGO_APP_DIR/node_modules/.bin:\${PATH:-${DEFAULT_PATH}}"`,
    'export NODE_ENV="${NODE_ENV:-production}"',
  ];
  if (opts.python) lines.push('export PYTHONPATH="$SHELLWEGO_APP_DIR/.python${PYTHONPATH:+:$PYTHONPATH}"');
  lines.push('export PYTHONUNBUFFERED="${PYTHONUNBUFFERED:-1}"');
  return lines.join('\n') + '\n';
}

async function writeProfile(ctx: Ctx): Promise<void> {
  const dir = path.join(ctx.appDir, '.profile.d');
  const st = await fsp.lstat(dir).catch(() => null);
  if (st && !st.isDirectory()) await fsp.rm(dir, { force: true, recursive: true });
  if (!st || !st.isDirectory()) await fsp.mkdir(dir, { mode: 0o755 });
  const file = path.join(dir, 'shellwego.sh');
  await fsp.rm(file, { force: true, recursive: true });
  // 'wx' = O_CREAT|O_EXCL: refuses to follow a symlink raced into place.
  await fsp.writeFile(file, profileScript({ node: !!ctx.nodeRuntimeDir, python: ctx.usesPython }), { flag: 'wx', mode: 0o644 });
  await fsp.utimes(file, PLATFORM_MTIME, PLATFORM_MTIME);
  if (!st) await fsp.utimes(dir, PLATFORM_MTIME, PLATFORM_MTIME);
}

// --------------------------------------------------------------------------------------------

function sandboxIdBase(buildId: string): string {
  const s = buildId.toLowerCase().replace(/[^a-z0-9_-]/g, '-').replace(/^[^a-z0-9]+/, '');
  return `swgb-${(s || randomBytes(4).toString('hex')).slice(0, 48)}`;
}

/**
 * Run one build. Never throws for build problems: the result says ok:false with a short error.
 * `onLog` receives every output line (step headers and the untrusted steps' stdout/stderr).
 */
export async function build(req: BuildRequest, deps: BuildDeps, onLog: LogFn): Promise<BuildResultMessage> {
  const started = Date.now();
  const timeoutMs = deps.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const isRoot = isRootUser();
  const uid = isRoot ? (deps.buildUid ?? DEFAULT_BUILD_UID) : process.getuid?.() ?? 0;
  const gid = isRoot ? (deps.buildGid ?? deps.buildUid ?? DEFAULT_BUILD_UID) : process.getgid?.() ?? 0;
  const sandboxed = deps.runtime.isolation === 'sandbox';
  const buildDir = path.join(deps.workDir, `${safeName(req.buildId)}-${randomBytes(3).toString('hex')}`);
  const appDir = path.join(buildDir, 'app');
  const appKey = safeName(req.appId || 'unknown');
  const toolDir = path.join(deps.cacheDir, 'apps', appKey, 'tools');
  const homeDir = path.join(buildDir, 'home');
  const proxyUrl = sandboxed ? (deps.proxyUrl ?? null) : null;
  let stack: Stack | null = null;
  let processTypes: Record<string, string> = {};

  const ctx: Ctx = {
    req,
    deps,
    log: onLog,
    runtime: deps.runtime,
    sandboxed,
    buildDir,
    appDir,
    toolDir,
    homeDir,
    logFile: path.join(buildDir, 'build.log'),
    uid,
    gid,
    isRoot,
    app: sandboxed ? '/app' : appDir,
    cache: sandboxed ? '/cache' : toolDir,
    home: sandboxed ? '/tmp' : homeDir,
    mounts: [],
    network: sandboxed ? (proxyUrl ? 'bridge' : 'none') : 'host',
    proxyUrl,
    idBase: sandboxIdBase(req.buildId),
    step: 0,
    deadline: started + timeoutMs,
    timeoutMs,
    tail: null as unknown as LogTail,
    recent: [],
    depCache: new DepCache(deps.cacheDir),
    provisioner: deps.provisioner ?? new NodeProvisioner(deps.cacheDir, deps.nodeDist),
    nodeRuntimeDir: null,
    usesPython: false,
    needsStaticServer: false,
    cacheHit: null,
    timings: {},
  };
  let mark = Date.now();
  const phase = (name: string) => {
    const now = Date.now();
    ctx.timings[name] = (ctx.timings[name] ?? 0) + now - mark;
    mark = now;
  };
  ctx.tail = new LogTail(ctx.logFile, (line) => {
    ctx.recent.push(line);
    if (ctx.recent.length > 40) ctx.recent.shift();
    onLog(line);
  });

  try {
    if (!req || typeof req.buildId !== 'string' || typeof req.sourceDigest !== 'string') throw new BuildError('invalid build request');
    // Work dirs: the build dir is root's; app/, home/ and the tool cache belong to the build user.
    await fsp.mkdir(buildDir, { recursive: true, mode: 0o711 });
    for (const d of [appDir, homeDir, toolDir, path.join(toolDir, 'npm'), path.join(toolDir, 'pip'), path.join(toolDir, 'corepack')]) {
      await fsp.mkdir(d, { recursive: true, mode: 0o755 });
      if (isRoot) await fsp.lchown(d, uid, gid);
    }
    if (isRoot) {
      await ensureTraversableBelow(buildDir, deps.workDir, (m) => deps.logger?.warn(m));
      await ensureTraversableBelow(toolDir, deps.cacheDir, (m) => deps.logger?.warn(m));
    }
    ctx.mounts = [
      { source: appDir, target: '/app', readonly: false },
      { source: toolDir, target: '/cache', readonly: false },
    ];
    const hn = hostNode();
    if (sandboxed && !underSystemDir(hn.prefix)) ctx.mounts.push({ source: hn.prefix, target: hn.prefix, readonly: true });
    ctx.tail.start();

    onLog('-----> Receiving source');
    let src: string;
    try {
      src = await deps.blobs.pathOf(req.sourceDigest);
    } catch (e: any) {
      throw new BuildError(`source ${req.sourceDigest.slice(0, 12)} is not available: ${e?.message ?? e}`);
    }
    const ex = await extractSource(src, appDir, isRoot ? { uid, gid } : {});
    onLog(`       ${ex.entries} entries, ${fmtSize(ex.bytes)}`);
    if (await exists(path.join(appDir, '.shellwego'))) {
      await fsp.rm(path.join(appDir, '.shellwego'), { recursive: true, force: true });
      onLog('       ignoring .shellwego/ from the source (reserved for the platform)');
    }

    phase('extract');
    const det = await detect(appDir);
    stack = det.stack;
    onLog(`-----> ${stackLabel(det.stack)} app detected`);
    for (const r of det.reasons) onLog(`       ${r}`);

    if (det.stack === 'node') await buildNode(ctx, det);
    else if (det.stack === 'python') await buildPython(ctx, det);
    else if (det.stack === 'static') ctx.needsStaticServer = true;
    processTypes = det.processTypes;
    if (Object.keys(processTypes).length === 0) {
      throw new BuildError('No process types: add a Procfile (for example "web: ./start.sh")');
    }

    phase('dependencies+build');
    checkTime(ctx, 'packaging');
    // All untrusted steps are over (their sandboxes are cleaned up): write platform files as root.
    await placePlatformDir(ctx);
    await writeProfile(ctx);
    onLog('-----> Process types');
    for (const [name, cmd] of Object.entries(processTypes)) onLog(`       ${name}: ${cmd}`);

    onLog('-----> Packaging artifact');
    const out = path.join(buildDir, 'artifact.tar');
    const art = await createArtifact(appDir, out, deps.compression ?? 'auto');
    for (const d of art.dropped.slice(0, 10)) onLog(`       left out ${d} (link leading outside the app, or a special file)`);
    phase('package');
    const artifactDigest = await deps.blobs.putFile(out);
    phase('store');
    const durationMs = Date.now() - started;
    deps.logger?.info({ buildId: req.buildId, timings: ctx.timings, durationMs, bytes: art.bytes }, 'build timings');
    onLog(`-----> Build succeeded: ${fmtSize(art.bytes)}${art.gzip ? ' (gzip)' : ' (tar)'} in ${fmtDuration(durationMs)}`);
    return { buildId: req.buildId, ok: true, stack, artifactDigest, processTypes, cacheHit: ctx.cacheHit, error: null, durationMs };
  } catch (e: any) {
    const msg = e instanceof BuildError ? e.message : `internal builder error: ${e?.message ?? String(e)}`;
    if (!(e instanceof BuildError)) deps.logger?.error({ err: e?.stack ?? String(e), buildId: req?.buildId }, 'build crashed');
    await ctx.tail.drain().catch(() => {});
    for (const line of msg.split('\n')) onLog(` !     ${line}`);
    onLog('-----> Build failed');
    return { buildId: req?.buildId, ok: false, stack, artifactDigest: null, processTypes: {}, cacheHit: ctx.cacheHit, error: msg, durationMs: Date.now() - started };
  } finally {
    await ctx.tail.stop().catch(() => {});
    await fsp.rm(buildDir, { recursive: true, force: true }).catch((err) => deps.logger?.warn({ err: err?.message, buildDir }, 'removing build dir failed'));
  }
}
