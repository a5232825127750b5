// Full builds with isolation 'none' (real npm against the real registry, real python3, real
// artifacts started and queried over HTTP). The sandboxed variant is in sandbox.test.ts.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { InProcessBus } from '@shellwego/bus';
import { subjects } from '@shellwego/core';
import type { BuildLogMessage, BuildRequest, BuildResultMessage } from '@shellwego/core';
import { createRuntime } from '@shellwego/sandbox';
import type { SandboxRuntime } from '@shellwego/sandbox';
import { build, ensureTraversableBelow } from './build.ts';
import type { BuildDeps } from './build.ts';
import { createBuilder } from './builder.ts';
import { EXAMPLES, listTar, rawTar, TempBlobStore, tempRoot } from './test-helpers.ts';
import { httpGet, runArtifact } from './run-helpers.ts';

let root: string;
let blobs: TempBlobStore;
let runtime: SandboxRuntime & { close?: () => Promise<void> };
let seq = 0;

before(async () => {
  root = await tempRoot('swgb-build-', '/var/tmp');
  // Isolation none (as root) runs the steps as the build user directly on these host paths, with
  // no mount namespace: unlike the sandbox it needs them reachable (mkdtemp makes this 0700).
  await fsp.chmod(root, 0o711);
  blobs = await TempBlobStore.create(root);
  runtime = await createRuntime({ isolation: 'none', stateRoot: path.join(root, 'sandbox') });
});
after(async () => {
  await runtime.close?.();
  await fsp.rm(root, { recursive: true, force: true });
});

function request(sourceDigest: string, over: Partial<BuildRequest> = {}): BuildRequest {
  return {
    buildId: `bld_test${++seq}`,
    appId: `app_${over.appId ?? 'default'}`,
    appName: 'test',
    organizationId: 'org_test',
    sourceDigest,
    env: {},
    limits: { memoryMb: 256, cpus: 1, pids: 128 },
    ...over,
  };
}

function deps(over: Partial<BuildDeps> = {}): BuildDeps {
  return { blobs, runtime, workDir: path.join(root, 'work'), cacheDir: path.join(root, 'cache'), ...over };
}

async function run(sourceDigest: string, over: Partial<BuildRequest> = {}, d: Partial<BuildDeps> = {}) {
  const lines: string[] = [];
  const result = await build(request(sourceDigest, over), deps(d), (l) => lines.push(l));
  return { result, lines, log: lines.join('\n') };
}

describe('builder service (InProcessBus): node-express', () => {
  it('builds, streams logs, caches node_modules; the redeploy restores them without installing', async () => {
    const bus = new InProcessBus();
    const builder = createBuilder({ bus, blobs, runtime, workDir: path.join(root, 'work'), cacheDir: path.join(root, 'cache') });
    builder.start();
    const digest = await blobs.putDir(path.join(EXAMPLES, 'node-express'));
    const buildOnce = async (buildId: string) => {
      const lines: string[] = [];
      bus.subscribe<BuildLogMessage>(subjects.buildLog(buildId), (m) => {
        assert.equal(m.buildId, buildId);
        assert.ok(!Number.isNaN(Date.parse(m.ts)));
        lines.push(m.line);
      });
      const done = new Promise<BuildResultMessage>((resolve) => bus.subscribe<BuildResultMessage>(subjects.buildResult(buildId), (m) => resolve(m)));
      const t = Date.now();
      await bus.publish(subjects.buildRequested, request(digest, { buildId, appId: 'express' }));
      const result = await done;
      return { result, lines, wall: Date.now() - t };
    };

    const cold = await buildOnce('bld_express1');
    assert.equal(cold.result.ok, true, cold.result.error ?? '');
    assert.equal(cold.result.stack, 'node');
    assert.equal(cold.result.cacheHit, false);
    assert.deepEqual(cold.result.processTypes, { web: 'npm start' });
    assert.match(cold.result.artifactDigest!, /^[0-9a-f]{64}$/);
    assert.ok(cold.lines.includes('-----> Node.js app detected'));
    assert.ok(cold.lines.includes('-----> Installing dependencies (cache miss)'));
    assert.ok(cold.lines.some((l) => /added \d+ packages/.test(l)), 'npm output streamed');
    assert.ok(cold.lines.some((l) => /^-----> Build succeeded: [\d.]+ (KB|MB)/.test(l)));
    const entries = await listTar(await blobs.pathOf(cold.result.artifactDigest!));
    for (const e of ['package.json', 'server.js', 'node_modules/express/package.json', '.profile.d/shellwego.sh']) assert.ok(entries.includes(e), e);

    const warm = await buildOnce('bld_express2');
    assert.equal(warm.result.ok, true, warm.result.error ?? '');
    assert.equal(warm.result.cacheHit, true);
    assert.ok(warm.lines.includes('-----> Restored node_modules from cache'));
    assert.equal(warm.result.artifactDigest, cold.result.artifactDigest, 'unchanged redeploy → identical artifact');
    assert.ok(!warm.lines.some((l) => l.includes('Installing dependencies') || /added \d+ packages/.test(l)), 'installer did not run');
    console.log(`# node-express build: cold ${cold.result.durationMs} ms, warm ${warm.result.durationMs} ms (bus round trip ${warm.wall} ms)`);
    assert.ok(warm.result.durationMs < 1500, `warm build took ${warm.result.durationMs} ms`);

    // The artifact runs like the agent runs it.
    const app = await runArtifact(await blobs.pathOf(warm.result.artifactDigest!), path.join(root, 'run-express'), 'npm start');
    try {
      assert.equal((await httpGet(`http://127.0.0.1:${app.port}/`)).body, 'Hello from ShellWeGo (node-express)\n');
      assert.equal(JSON.parse((await httpGet(`http://127.0.0.1:${app.port}/health`)).body).status, 'ok');
      await new Promise((r) => setTimeout(r, 100));
      assert.match(app.output(), /GET \/health 200/);
    } finally {
      await app.stop();
    }
    await builder.close();
    assert.deepEqual(await fsp.readdir(path.join(root, 'work')), [], 'work dirs cleaned');
  });
});

describe('build(): other stacks', () => {
  it('python-stdlib: no install, runs with python3', async () => {
    const { result, log } = await run(await blobs.putDir(path.join(EXAMPLES, 'python-stdlib')), { appId: 'py' });
    assert.equal(result.ok, true, result.error ?? '');
    assert.equal(result.stack, 'python');
    assert.equal(result.cacheHit, null);
    assert.deepEqual(result.processTypes, { web: 'python3 app.py' });
    assert.match(log, /Python app detected/);
    assert.match(log, /standard library only/);
    const app = await runArtifact(await blobs.pathOf(result.artifactDigest!), path.join(root, 'run-py'), result.processTypes.web);
    try {
      assert.equal((await httpGet(`http://127.0.0.1:${app.port}/`)).body, 'Hello from ShellWeGo (python-stdlib)\n');
    } finally {
      await app.stop();
    }
  });

  it('python with requirements: pip install runs (and fails clearly when PyPI is unreachable)', async () => {
    const digest = await blobs.putFiles({ 'requirements.txt': 'shellwego-surely-not-a-real-package==0.0.1\n', 'app.py': 'print(1)\n' }, root);
    const { result, log } = await run(digest, { appId: 'pyreq', env: { PIP_RETRIES: '0', PIP_TIMEOUT: '3' } });
    assert.match(log, /Installing dependencies \(cache miss\)/);
    assert.match(log, /pip install --target \.python -r requirements\.txt/);
    if (!result.ok) assert.match(result.error!, /^pip install failed \(exit \d+\)/);
    assert.doesNotMatch(result.error ?? '', /externally-managed/);
  });

  it('python with a local wheel in requirements: installed into .python, cached, on PYTHONPATH at run time', async () => {
    const src = path.join(root, 'pywheel');
    await fsp.mkdir(path.join(src, 'wheels'), { recursive: true });
    // A minimal pure-python wheel, built with the stdlib (no PyPI needed).
    execFileSync('python3', ['-c', `
import zipfile, hashlib, base64
files = {
  'swghello/__init__.py': 'GREETING = "Hello from a wheel"\\n',
  'swghello-1.0.dist-info/METADATA': 'Metadata-Version: 2.1\\nName: swghello\\nVersion: 1.0\\n',
  'swghello-1.0.dist-info/WHEEL': 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n',
}
rec = []
with zipfile.ZipFile('wheels/swghello-1.0-py3-none-any.whl', 'w') as z:
  for n, c in files.items():
    z.writestr(n, c)
    h = base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).rstrip(b'=').decode()
    rec.append(f'{n},sha256={h},{len(c)}')
  rec.append('swghello-1.0.dist-info/RECORD,,')
  z.writestr('swghello-1.0.dist-info/RECORD', '\\n'.join(rec) + '\\n')
`], { cwd: src });
    await fsp.writeFile(path.join(src, 'requirements.txt'), './wheels/swghello-1.0-py3-none-any.whl\n');
    await fsp.writeFile(
      path.join(src, 'app.py'),
      'import os, swghello\nfrom http.server import BaseHTTPRequestHandler, HTTPServer\n' +
        'class H(BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200); self.end_headers(); self.wfile.write(swghello.GREETING.encode())\n' +
        'HTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()\n',
    );
    const digest = await blobs.putDir(src);
    const first = await run(digest, { appId: 'pywheel', env: { PIP_RETRIES: '0' } });
    assert.equal(first.result.ok, true, `${first.result.error}\n${first.log}`);
    assert.equal(first.result.cacheHit, false);
    const art = await blobs.pathOf(first.result.artifactDigest!);
    assert.ok((await listTar(art)).includes('.python/swghello/__init__.py'));
    const second = await run(digest, { appId: 'pywheel' });
    assert.equal(second.result.cacheHit, true);
    assert.match(second.log, /Restored \.python from cache/);
    assert.doesNotMatch(second.log, /pip install/);
    const app = await runArtifact(await blobs.pathOf(second.result.artifactDigest!), path.join(root, 'run-pywheel'), second.result.processTypes.web);
    try {
      assert.equal((await httpGet(`http://127.0.0.1:${app.port}/`)).body, 'Hello from a wheel');
    } finally {
      await app.stop();
    }
  });

  it('static-site: ships the static server; it serves files, 404s and no traversal', async () => {
    const { result } = await run(await blobs.putDir(path.join(EXAMPLES, 'static-site')), { appId: 'static' });
    assert.equal(result.ok, true, result.error ?? '');
    assert.equal(result.stack, 'static');
    const art = await blobs.pathOf(result.artifactDigest!);
    assert.ok((await listTar(art)).includes('.shellwego/static-server.mjs'));
    const app = await runArtifact(art, path.join(root, 'run-static'), result.processTypes.web);
    try {
      const base = `http://127.0.0.1:${app.port}`;
      const index = await httpGet(`${base}/`);
      assert.equal(index.status, 200);
      assert.match(index.headers['content-type']!, /^text\/html/);
      assert.match(index.body, /Hello from ShellWeGo \(static-site\)/);
      const css = await httpGet(`${base}/css/style.css`);
      assert.equal(css.status, 200);
      assert.match(css.headers['content-type']!, /^text\/css/);
      const missing = await httpGet(`${base}/nope.html`);
      assert.equal(missing.status, 404);
      assert.match(missing.body, /<h1>404<\/h1>/);
      for (const evil of ['/../../../../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/.profile.d/shellwego.sh', '/.shellwego/static-server.mjs', '/css/..%2f..%2f..%2fetc%2fpasswd']) {
        const r = await httpGet(`${base}${evil}`);
        assert.equal(r.status, 404, evil);
        assert.doesNotMatch(r.body, /root:|SHELLWEGO|createServer/, evil);
      }
      const dir = await httpGet(`${base}/css`);
      assert.equal(dir.status, 301);
    } finally {
      await app.stop();
    }
  });

  it('procfile-worker: Procfile process types, no install', async () => {
    const { result } = await run(await blobs.putDir(path.join(EXAMPLES, 'procfile-worker')), { appId: 'worker' });
    assert.equal(result.ok, true, result.error ?? '');
    assert.equal(result.stack, 'procfile');
    assert.deepEqual(result.processTypes, { web: 'node web.mjs', worker: 'node worker.mjs' });
  });

  it('a failing build script fails the build with the exit code and the last lines', async () => {
    const digest = await blobs.putFiles(
      { 'package.json': JSON.stringify({ name: 'f', version: '1.0.0', scripts: { start: 'node index.js', build: 'echo compiling; exit 3' } }), 'index.js': '' },
      root,
    );
    const { result, log } = await run(digest, { appId: 'fail' });
    assert.equal(result.ok, false);
    assert.equal(result.artifactDigest, null);
    assert.match(result.error!, /^npm run build failed \(exit 3\)/);
    assert.match(result.error!, /exit 3/);
    assert.match(log, /-----> Running build: npm run build/);
    assert.match(log, /compiling/);
    assert.match(log, /-----> Build failed/);
  });

  it('engines.node that nothing satisfies → error naming the available majors (real registry)', async () => {
    const digest = await blobs.putFiles({ 'package.json': JSON.stringify({ name: 'e', version: '1.0.0', engines: { node: '>=99' } }), 'index.js': '' }, root);
    const { result } = await run(digest, { appId: 'engines99' });
    assert.equal(result.ok, false);
    assert.match(result.error!, /engines\.node ">=99" cannot be satisfied/);
    assert.match(result.error!, /Available major versions: [\d, -]*\b2[0-6]\b/);
  });

  it('engines.node satisfied by the host → no download', async () => {
    const cacheDir = path.join(root, 'cache-engines-host');
    const digest = await blobs.putFiles({ 'package.json': JSON.stringify({ name: 'e', version: '1.0.0', engines: { node: `>=${process.versions.node.split('.')[0]}` } }), 'index.js': '' }, root);
    const { result, log } = await run(digest, { appId: 'engineshost' }, { cacheDir });
    assert.equal(result.ok, true, result.error ?? '');
    assert.match(log, /satisfies engines\.node/);
    assert.doesNotMatch(log, /Downloading Node/);
    assert.equal(existsSync(path.join(cacheDir, 'runtimes')), false);
    assert.ok(!(await listTar(await blobs.pathOf(result.artifactDigest!))).some((e) => e.startsWith('.shellwego/node')));
  });

  it('devDependencies are pruned from the artifact; the pruned tree is cached too', async () => {
    const digest = await blobs.putFiles(
      {
        'package.json': JSON.stringify({ name: 'p', version: '1.0.0', scripts: { start: 'node index.js' }, dependencies: { ms: '2.1.3' }, devDependencies: { 'is-number': '7.0.0' } }),
        'index.js': 'require("ms")',
      },
      root,
    );
    const first = await run(digest, { appId: 'prune' });
    assert.equal(first.result.ok, true, first.result.error ?? '');
    assert.match(first.log, /-----> Pruning devDependencies/);
    let entries = await listTar(await blobs.pathOf(first.result.artifactDigest!));
    assert.ok(entries.includes('node_modules/ms/package.json'));
    assert.ok(!entries.some((e) => e.startsWith('node_modules/is-number')), 'dev dependency pruned');
    const second = await run(digest, { appId: 'prune' });
    assert.equal(second.result.cacheHit, true);
    assert.match(second.log, /Restored node_modules from cache \(production dependencies\)/);
    assert.doesNotMatch(second.log, /Pruning|Installing dependencies/);
    entries = await listTar(await blobs.pathOf(second.result.artifactDigest!));
    assert.ok(entries.includes('node_modules/ms/package.json'));
    assert.ok(!entries.some((e) => e.startsWith('node_modules/is-number')));
    // Another app with the same dependencies does not share the cache (tenants are walled off).
    const other = await run(digest, { appId: 'prune-other' });
    assert.equal(other.result.cacheHit, false);
  });

  it('nothing detectable, hostile archives, missing sources and timeouts fail clearly', async () => {
    const none = await run(await blobs.putFiles({ 'main.go': 'package main' }, root), { appId: 'none' });
    assert.equal(none.result.ok, false);
    assert.match(none.result.error!, /^No supported app type detected\. Looked for: package\.json/);

    const evilTar = await rawTar(path.join(root, 'evil.tgz'), [
      { path: 'package.json', body: '{}' },
      { path: '../../../tmp/pwned', body: 'x' },
    ]);
    const hostile = await run(await blobs.putFile(evilTar), { appId: 'evil' });
    assert.equal(hostile.result.ok, false);
    assert.match(hostile.result.error!, /^source archive rejected: entry "\.\.\/\.\.\/\.\.\/tmp\/pwned" contains "\.\."/);
    assert.equal(existsSync('/tmp/pwned'), false);

    const missing = await run('0'.repeat(64), { appId: 'missing' });
    assert.equal(missing.result.ok, false);
    assert.match(missing.result.error!, /source 000000000000 is not available/);

    const slow = await blobs.putFiles({ 'package.json': JSON.stringify({ name: 's', version: '1.0.0', scripts: { start: 'node i.js', build: 'sleep 30' } }), 'i.js': '' }, root);
    const t = Date.now();
    const timedOut = await run(slow, { appId: 'slow' }, { timeoutMs: 1500 });
    assert.equal(timedOut.result.ok, false);
    assert.match(timedOut.result.error!, /^build timed out after 1\.5 s \(during npm run build\)/);
    assert.ok(Date.now() - t < 10_000, 'killed promptly');
    assert.deepEqual(await fsp.readdir(path.join(root, 'work')), [], 'work dirs cleaned');
  });

  it('node app without a start command but with a built static site is served statically', async () => {
    const digest = await blobs.putFiles(
      {
        'package.json': JSON.stringify({ name: 'spa', version: '1.0.0', scripts: { build: 'mkdir -p dist && echo "<h1>spa</h1>" > dist/index.html' } }),
      },
      root,
    );
    const { result } = await run(digest, { appId: 'spa' });
    assert.equal(result.ok, true, result.error ?? '');
    assert.deepEqual(result.processTypes, { web: 'node .shellwego/static-server.mjs dist' });
    assert.ok((await listTar(await blobs.pathOf(result.artifactDigest!))).includes('.shellwego/static-server.mjs'));
  });

  it('a source .shellwego/ is replaced and escaping symlinks made by the build are left out', async () => {
    const digest = await blobs.putFiles(
      {
        'package.json': JSON.stringify({ name: 'x', version: '1.0.0', scripts: { start: 'node i.js', build: 'ln -s /etc/passwd leak && ln -s ../../.. up && ln -s i.js ok' } }),
        'i.js': '',
        '.shellwego/evil': 'x',
      },
      root,
    );
    const { result, log } = await run(digest, { appId: 'links' });
    assert.equal(result.ok, true, result.error ?? '');
    assert.match(log, /ignoring \.shellwego\//);
    const entries = await listTar(await blobs.pathOf(result.artifactDigest!));
    assert.ok(entries.includes('ok'));
    assert.ok(!entries.includes('leak') && !entries.includes('up'));
    assert.ok(!entries.includes('.shellwego/evil'));
  });
});

describe('ensureTraversableBelow', () => {
  it('opens the builder\'s own directories for the build user, never one above them', async () => {
    const outer = await fsp.mkdtemp(path.join(root, 'trav-'));
    await fsp.chmod(outer, 0o700);
    const top = path.join(outer, 'work');
    await fsp.mkdir(path.join(top, 'a', 'b'), { recursive: true, mode: 0o700 });
    await ensureTraversableBelow(path.join(top, 'a', 'b'), top);
    const mode = async (p: string) => (await fsp.stat(p)).mode & 0o777;
    assert.equal(await mode(path.join(top, 'a', 'b')), 0o701);
    assert.equal(await mode(path.join(top, 'a')), 0o701);
    assert.equal(await mode(top), 0o701);
    assert.equal(await mode(outer), 0o700, 'above top: untouched');
    await fsp.chmod(top, 0o700);
    await ensureTraversableBelow(outer, top);
    assert.equal(await mode(outer), 0o700, 'not below top: untouched');
  });
});

describe('builder service: shutdown', () => {
  it('close() cancels a running build and reports it failed', async () => {
    const bus = new InProcessBus();
    const builder = createBuilder({ bus, blobs, runtime, workDir: path.join(root, 'work-close'), cacheDir: path.join(root, 'cache') });
    builder.start();
    const digest = await blobs.putFiles({ 'package.json': JSON.stringify({ name: 'c', version: '1.0.0', scripts: { start: 'node i.js', build: 'sleep 60' } }), 'i.js': '' }, root);
    const done = new Promise<BuildResultMessage>((resolve) => bus.subscribe<BuildResultMessage>(subjects.buildResult('bld_close'), (m) => resolve(m)));
    const started = new Promise<void>((resolve) => bus.subscribe<BuildLogMessage>(subjects.buildLog('bld_close'), (m) => void (m.line.includes('Running build') && resolve())));
    await bus.publish(subjects.buildRequested, request(digest, { buildId: 'bld_close', appId: 'close' }));
    await started;
    const t = Date.now();
    await builder.close();
    const r = await done;
    assert.equal(r.ok, false);
    assert.match(r.error!, /cancelled during npm run build: the builder is shutting down/);
    assert.ok(Date.now() - t < 10_000);
    assert.deepEqual(await fsp.readdir(path.join(root, 'work-close')), []);
  });
});

describe('slow: node provisioning from the registry', { skip: process.env.SHELLWEGO_SLOW_TESTS ? false : 'set SHELLWEGO_SLOW_TESTS=1 (downloads ~25 MB)' }, () => {
  it('engines.node "18.x" → node 18 downloaded once, used by the build and shipped in the artifact', async () => {
    const digest = await blobs.putFiles(
      {
        'package.json': JSON.stringify({ name: 'n18', version: '1.0.0', engines: { node: '18.x' }, scripts: { start: 'node server.js', build: 'node -e "console.log(\'build node\', process.version)"' } }),
        'server.js': 'require("http").createServer((q,s)=>s.end(process.version)).listen(process.env.PORT)',
      },
      root,
    );
    const { result, log } = await run(digest, { appId: 'n18' });
    assert.equal(result.ok, true, result.error ?? '');
    assert.match(log, /engines\.node "18\.x" → Node\.js 18\./);
    assert.match(log, /build node v18\./);
    const art = await blobs.pathOf(result.artifactDigest!);
    assert.ok((await listTar(art)).includes('.shellwego/node/bin/node'));
    assert.equal(result.processTypes.web, 'npm start');
    const app = await runArtifact(art, path.join(root, 'run-n18'), result.processTypes.web);
    try {
      assert.match((await httpGet(`http://127.0.0.1:${app.port}/`)).body, /^v18\./);
    } finally {
      await app.stop();
    }
    const again = await run(digest, { appId: 'n18' });
    assert.doesNotMatch(again.log, /Downloading Node/);
  });
});
