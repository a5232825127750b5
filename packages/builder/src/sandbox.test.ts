// Builds in the real sandbox (bubblewrap + cgroups + bridge netns) with the registry proxy.
// Needs root and bubblewrap; skipped (with the reason) elsewhere.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp, statSync } from 'node:fs';
import path from 'node:path';
import { InProcessBus } from '@shellwego/bus';
import { subjects } from '@shellwego/core';
import type { BuildLogMessage, BuildRequest, BuildResultMessage } from '@shellwego/core';
import { createRuntime, detectCgroups, detectIsolation, removeBridge, removeCgroupRoot } from '@shellwego/sandbox';
import type { ManagedSandboxRuntime } from '@shellwego/sandbox';
import { createBuilder, firstHost } from './builder.ts';
import type { Builder } from './builder.ts';
import { EXAMPLES, listTar, TempBlobStore, tempRoot } from './test-helpers.ts';
import { freePort, httpGet, runArtifact } from './run-helpers.ts';

const rnd = randomBytes(3).toString('hex');
const BRIDGE = `swgbb-${rnd}`;
const CIDR = `10.${150 + (parseInt(rnd.slice(0, 2), 16) % 40)}.${parseInt(rnd.slice(2, 4), 16)}.0/24`;
const CG_ROOT = `swgbtest-${rnd}`;
const UID = 60_000 + (parseInt(rnd, 16) % 5_000);

let skip: string | false =
  typeof process.getuid !== 'function' || process.getuid() !== 0
    ? 'sandboxed builds need root'
    : !existsSync('/usr/bin/bwrap')
      ? 'sandboxed builds need bubblewrap (/usr/bin/bwrap)'
      : false;
if (!skip) {
  const d = await detectIsolation();
  if (!d.available) skip = `sandbox isolation unavailable: ${d.reason}`;
}
if (skip) console.log(`# SKIP sandboxed build tests: ${skip}`);

describe('sandboxed builds (bwrap, bridge network, registry proxy)', { skip }, () => {
  let root: string;
  let blobs: TempBlobStore;
  let runtime: ManagedSandboxRuntime;
  let bus: InProcessBus;
  let builder: Builder;
  let seq = 0;
  let proxyPort = 0;

  /** mode and owner of `dirs` and all their ancestors */
  const modes = (dirs: string[]) => {
    const out: Record<string, string> = {};
    for (const dir of dirs) {
      for (let d = dir; ; d = path.dirname(d)) {
        const st = statSync(d);
        out[d] = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
        if (d === '/') break;
      }
    }
    return out;
  };
  let rootModes: Record<string, string> = {};

  before(async () => {
    proxyPort = await freePort();
    // mkdtemp: 0700, like `mktemp -d`. The work and cache dirs below it are the builder's; the
    // builder must not change this one (the sandbox reaches its mounts without that).
    root = await tempRoot('swgb-sbx-', '/var/tmp');
    rootModes = modes([root]);
    blobs = await TempBlobStore.create(root);
    runtime = await createRuntime({ isolation: 'sandbox', bridge: { name: BRIDGE, cidr: CIDR }, cgroupRoot: CG_ROOT, stateRoot: path.join(root, 'sandbox'), netPoolSize: 0 });
    bus = new InProcessBus();
    builder = createBuilder({
      bus, blobs, runtime, buildUid: UID,
      workDir: path.join(root, 'work'), cacheDir: path.join(root, 'cache'),
      gatewayIp: firstHost(CIDR), registryProxy: { port: proxyPort }, timeoutMs: 120_000,
    });
    builder.start();
  });

  after(async () => {
    await builder?.close();
    await runtime?.close();
    await removeBridge(BRIDGE).catch(() => {});
    const cg = await detectCgroups();
    if (cg.layout) await removeCgroupRoot(cg.layout, CG_ROOT).catch(() => {});
    if (root) await fsp.rm(root, { recursive: true, force: true });
  });

  async function buildVia(digest: string, over: Partial<BuildRequest> = {}) {
    const buildId = `bld_sbx${++seq}`;
    const lines: string[] = [];
    bus.subscribe<BuildLogMessage>(subjects.buildLog(buildId), (m) => void lines.push(m.line));
    const done = new Promise<BuildResultMessage>((resolve) => bus.subscribe<BuildResultMessage>(subjects.buildResult(buildId), (m) => resolve(m)));
    await bus.publish(subjects.buildRequested, {
      buildId, appId: 'app_sbx', appName: 'sbx', organizationId: 'org_sbx', sourceDigest: digest, env: {},
      limits: { memoryMb: 128, cpus: 0.5, pids: 64 }, ...over,
    } satisfies BuildRequest);
    const result = await done;
    return { result, lines, log: lines.join('\n') };
  }

  it('node-express: npm ci through the proxy in the sandbox; the redeploy hits the cache', async () => {
    const digest = await blobs.putDir(path.join(EXAMPLES, 'node-express'));
    const cold = await buildVia(digest);
    assert.equal(cold.result.ok, true, `${cold.result.error}\n${cold.log}`);
    assert.equal(cold.result.cacheHit, false);
    assert.match(cold.log, /added \d+ packages/);
    const warm = await buildVia(digest);
    assert.equal(warm.result.ok, true, warm.result.error ?? '');
    assert.equal(warm.result.cacheHit, true);
    assert.doesNotMatch(warm.log, /Installing dependencies|added \d+ packages/);
    console.log(`# sandboxed node-express build: cold ${cold.result.durationMs} ms, warm ${warm.result.durationMs} ms`);
    const art = await blobs.pathOf(warm.result.artifactDigest!);
    assert.ok((await listTar(art)).includes('node_modules/express/package.json'));
    const app = await runArtifact(art, path.join(root, 'run-express'), warm.result.processTypes.web);
    try {
      assert.equal((await httpGet(`http://127.0.0.1:${app.port}/`)).body, 'Hello from ShellWeGo (node-express)\n');
    } finally {
      await app.stop();
    }
    assert.deepEqual(await fsp.readdir(path.join(root, 'work')), [], 'work dirs cleaned');
  });

  it('build steps: unprivileged, host hidden, registry reachable only through the proxy', async () => {
    const check = `
const net = require('node:net'); const http = require('node:http'); const fs = require('node:fs');
const proxy = new URL(process.env.HTTPS_PROXY);
console.log('uid', process.getuid(), 'gid', process.getgid());
console.log('host root visible', fs.existsSync(${JSON.stringify(root)}));
const direct = () => new Promise((r) => {
  const s = net.connect({ host: '104.16.0.35', port: 443, timeout: 3000 });
  s.on('connect', () => { s.destroy(); r('connected'); });
  s.on('timeout', () => { s.destroy(); r('blocked (timeout)'); });
  s.on('error', (e) => r('blocked (' + e.code + ')'));
});
const tunnel = (target) => new Promise((r) => {
  const q = http.request({ host: proxy.hostname, port: proxy.port, method: 'CONNECT', path: target, timeout: 10000 });
  q.on('connect', (res, sock) => { sock.destroy(); r(res.statusCode); });
  q.on('error', (e) => r('error ' + e.code));
  q.end();
});
(async () => {
  console.log('direct internet:', await direct());
  console.log('proxy example.com:', await tunnel('example.com:443'));
  console.log('proxy registry:', await tunnel('registry.npmjs.org:443'));
})();
`;
    const digest = await blobs.putFiles(
      { 'package.json': JSON.stringify({ name: 'net', version: '1.0.0', scripts: { start: 'node check.js', build: 'node check.js' } }), 'check.js': check },
      root,
    );
    const { result, log } = await buildVia(digest, { appId: 'app_net' });
    assert.equal(result.ok, true, `${result.error}\n${log}`);
    assert.match(log, new RegExp(`uid ${UID} gid ${UID}`));
    assert.match(log, /host root visible false/);
    assert.match(log, /direct internet: blocked/);
    assert.match(log, /proxy example\.com: 403/);
    assert.match(log, /proxy registry: 200/);
  });

  it('other sandboxes on the bridge (app instances) cannot use the registry proxy', async () => {
    const dir = path.join(root, 'intruder');
    await fsp.mkdir(dir, { recursive: true });
    const script = `const q = require('node:http').request({ host: '${firstHost(CIDR)}', port: ${proxyPort}, method: 'CONNECT', path: 'registry.npmjs.org:443' });
q.on('connect', (res, s) => { console.log('intruder status', res.statusCode); s.destroy(); });
q.on('error', (e) => console.log('intruder error', e.code)); q.end();`;
    const h = await runtime.start({
      id: `swgb-intruder-${rnd}`, argv: ['node', '-e', script], env: {}, cwd: '/', mounts: [], uid: UID, gid: UID,
      limits: { memoryMb: 128, cpus: 1, pids: 64 }, network: { mode: 'bridge' },
      logFile: path.join(dir, 'log'), stateDir: path.join(dir, 'state'),
    });
    await h.wait();
    await runtime.cleanup(`swgb-intruder-${rnd}`, path.join(dir, 'state'));
    const out = await fsp.readFile(path.join(dir, 'log'), 'utf8');
    assert.match(out, /intruder status 403|intruder error ECONNREFUSED/);
  });

  for (const pm of ['pnpm', 'yarn'] as const) {
    it(`${pm}-lock → ${pm} via corepack (fetched through the proxy), devDependencies pruned, cached`, async () => {
      const digest = await blobs.putDir(path.join(import.meta.dirname, 'fixtures', `${pm}-app`));
      const cold = await buildVia(digest, { appId: `app_${pm}` });
      assert.equal(cold.result.ok, true, `${cold.result.error}\n${cold.log}`);
      assert.match(cold.log, new RegExp(`-----> Installing dependencies \\(cache miss\\)\\n {7}${pm} install`));
      assert.match(cold.log, /-----> Pruning devDependencies/);
      const entries = await listTar(await blobs.pathOf(cold.result.artifactDigest!));
      assert.ok(entries.some((e) => e.startsWith('node_modules/ms')));
      assert.ok(!entries.some((e) => /(^|\/)is-number(\/|$|@)/.test(e)), 'dev dependency pruned');
      const warm = await buildVia(digest, { appId: `app_${pm}` });
      assert.equal(warm.result.cacheHit, true);
      assert.match(warm.log, /Restored node_modules from cache \(production dependencies\)/);
    });
  }

  it('python-stdlib builds in the sandbox', async () => {
    const { result, log } = await buildVia(await blobs.putDir(path.join(EXAMPLES, 'python-stdlib')), { appId: 'app_py' });
    assert.equal(result.ok, true, `${result.error}\n${log}`);
    assert.equal(result.stack, 'python');
  });

  it('work and cache dirs below 0700 directories: sandboxed builds succeed, no directory above them changes', async () => {
    const closed = path.join(root, 'closed');
    await fsp.mkdir(closed, { mode: 0o700 });
    const before = modes([closed]);
    assert.equal(before[root], '700 0:0');
    assert.equal(before[closed], '700 0:0');
    const digest = await blobs.putFiles(
      { 'package.json': JSON.stringify({ name: 'closed', version: '1.0.0', scripts: { start: 'node i.js', build: 'node -e "require(\'fs\').writeFileSync(\'built.txt\', String(process.getuid()))" && echo built' } }), 'i.js': '' },
      root,
    );
    // network none (no registry proxy), non-pooled runtime (netPoolSize 0 above)
    const b2bus = new InProcessBus();
    const b2 = createBuilder({ bus: b2bus, blobs, runtime, buildUid: UID, workDir: path.join(closed, 'work'), cacheDir: path.join(closed, 'cache'), registryProxy: false, timeoutMs: 60_000 });
    b2.start();
    const lines: string[] = [];
    b2bus.subscribe<BuildLogMessage>(subjects.buildLog('bld_closed'), (m) => void lines.push(m.line));
    const done = new Promise<BuildResultMessage>((resolve) => b2bus.subscribe<BuildResultMessage>(subjects.buildResult('bld_closed'), (m) => resolve(m)));
    await b2bus.publish(subjects.buildRequested, { buildId: 'bld_closed', appId: 'app_closed', appName: 'c', organizationId: 'o', sourceDigest: digest, env: {}, limits: { memoryMb: 128, cpus: 1, pids: 64 } });
    const r = await done;
    await b2.close();
    assert.equal(r.ok, true, `${r.error}\n${lines.join('\n')}`);
    assert.ok(lines.includes('built'), lines.join('\n'));
    assert.ok((await listTar(await blobs.pathOf(r.artifactDigest!))).includes('built.txt'));
    assert.deepEqual(modes([closed]), before, 'no directory above the work/cache dirs changed');
    // and the bridged builds of the other tests ran below the 0700 root too
    assert.deepEqual(modes([root]), rootModes);
  });

  it('a runaway build is killed at the timeout', async () => {
    const digest = await blobs.putFiles(
      { 'package.json': JSON.stringify({ name: 'slow', version: '1.0.0', scripts: { start: 'node i.js', build: 'echo start; sleep 600' } }), 'i.js': '' },
      root,
    );
    // A second builder without network (registryProxy: false) and a 2 s timeout.
    const b2bus = new InProcessBus();
    const b2 = createBuilder({ bus: b2bus, blobs, runtime, buildUid: UID, workDir: path.join(root, 'work2'), cacheDir: path.join(root, 'cache'), registryProxy: false, timeoutMs: 2000 });
    b2.start();
    const done = new Promise<BuildResultMessage>((resolve) => b2bus.subscribe<BuildResultMessage>(subjects.buildResult('bld_slow'), (m) => resolve(m)));
    const t = Date.now();
    await b2bus.publish(subjects.buildRequested, { buildId: 'bld_slow', appId: 'app_slow', appName: 's', organizationId: 'o', sourceDigest: digest, env: {}, limits: { memoryMb: 128, cpus: 1, pids: 64 } });
    const r = await done;
    await b2.close();
    assert.equal(r.ok, false);
    assert.match(r.error!, /^build timed out after 2 s \(during npm run build\)/);
    assert.ok(Date.now() - t < 15_000);
  });
});
