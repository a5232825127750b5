/**
 * OCI image deploys against a real registry on loopback (Debian's docker-registry with token
 * auth, test/helpers/registry.ts). The test builds its own images — gzip'd tar layers made with
 * GNU tar holding a static busybox, a config, an OCI manifest and an index — pushes them through
 * the registry API, and deploys them with the CLI onto the real platform (sandboxed instances).
 * A tampering proxy in front of the registry counts requests and alters one manifest.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest } from 'node:http';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { platformSuite, waitFor } from './helpers/platform.ts';
import { REGISTRY_PASSWORD, REGISTRY_USER, TestRegistry } from './helpers/registry.ts';
import { makeTar } from '../packages/oci/src/tar-writer.ts';

const exec = promisify(execFile);
const suite = platformSuite({ isolation: 'sandbox' });
const creds = { SHELLWEGO_REGISTRY_PASSWORD: REGISTRY_PASSWORD };

let registry: TestRegistry;
let proxy: Server;
let proxyHost = '';
let work = '';
/** GET requests seen by the proxy, by path. */
const seen = new Map<string, number>();
const escapeMarker = `swg-oci-escape-${process.pid}-${Date.now()}`;
let web: { layerDigests: string[] };
let shared: { layerDigests: string[] };

const cli = (args: string[], env: Record<string, string> = {}) => suite.p.cli(args, suite.token, { cwd: suite.cwd, env });
async function cliOk(args: string[], env: Record<string, string> = {}) {
  const r = await cli(args, env);
  if (r.code !== 0) throw new Error(`shellwego ${args.join(' ')} failed (${r.code}):\n${r.stdout}\n${r.stderr}\n--- platform ---\n${suite.p.output.slice(-3000)}`);
  return r;
}
const json = async <T = any>(args: string[]) => JSON.parse((await cliOk([...args, '--json'])).stdout) as T;
async function get(app: string, path = '/') {
  const r = await suite.p.viaRouter(app, path);
  return { status: r.status, text: await r.text() };
}

/** A layer as `docker build` would produce it: a gzip'd tar of a directory, made with GNU tar. */
async function tarLayer(files: Record<string, string | { copy: string; mode?: number } | { link: string }>): Promise<Buffer> {
  const dir = await mkdtemp(join(work, 'layer-'));
  for (const [p, v] of Object.entries(files)) {
    const abs = join(dir, p);
    await mkdir(join(abs, '..'), { recursive: true });
    if (typeof v === 'string') await writeFile(abs, v);
    else if ('copy' in v) await copyFile(v.copy, abs);
    else await symlink(v.link, abs);
  }
  const out = `${dir}.tar.gz`;
  await exec('tar', ['-czf', out, '--owner=0', '--group=0', '--numeric-owner', '-C', dir, '.']);
  return readFile(out);
}

/** Forwards to the registry; counts GETs; serves a tampered body (same digest header) for tag `tampered`. */
function startProxy(upstreamPort: number): Promise<Server> {
  const server = createServer((req, res) => {
    const path = req.url ?? '/';
    if (req.method === 'GET') seen.set(path, (seen.get(path) ?? 0) + 1);
    const up = httpRequest({ host: '127.0.0.1', port: upstreamPort, path, method: req.method, headers: { ...req.headers, host: `127.0.0.1:${upstreamPort}` } }, (ur) => {
      const chunks: Buffer[] = [];
      ur.on('data', (c: Buffer) => chunks.push(c));
      ur.on('end', () => {
        let body = Buffer.concat(chunks);
        const headers = { ...ur.headers };
        if (req.method === 'GET' && /\/manifests\/tampered$/.test(path) && ur.statusCode === 200) {
          const m = JSON.parse(body.toString());
          m.annotations = { 'org.example.injected': 'yes' };
          body = Buffer.from(JSON.stringify(m, null, 2));
          headers['content-length'] = String(body.length);
        }
        res.writeHead(ur.statusCode ?? 502, headers).end(body);
      });
    });
    up.on('error', () => res.writeHead(502).end());
    req.pipe(up);
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)));
}

/** The image's command: writes what the process sees, then serves its workdir. */
const RUN = 'echo "uid=$(busybox id -u) gid=$(busybox id -g) pwd=$(pwd) image=$IMAGE_VAR shared=$SHARED app=$APP_VAR motd=$(busybox ls /etc/motd 2>/dev/null || echo gone)" > info.txt && exec /bin/busybox httpd -f -p "$PORT" -h .';

const layerGets = (digests: string[]) => digests.map((d) => [...seen].filter(([p]) => p.endsWith(`/blobs/${d}`)).reduce((n, [, c]) => n + c, 0));

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'swg-oci-it-'));
  registry = await TestRegistry.start();
  proxy = await startProxy(registry.port);
  proxyHost = `127.0.0.1:${(proxy.address() as { port: number }).port}`;

  const base = await tarLayer({
    'bin/busybox': { copy: '/bin/busybox' },
    'bin/sh': { link: 'busybox' },
    'etc/passwd': 'root:x:0:0:root:/root:/bin/sh\nweb:x:1234:1234:web:/srv:/bin/sh\n',
    'etc/group': 'root:x:0:\nweb:x:1234:\n',
    'etc/motd': 'removed by the next layer\n',
  });
  const site = await tarLayer({ 'srv/www/index.html': 'hello from an OCI image\n', 'etc/.wh.motd': '' });
  const config = { Entrypoint: ['/bin/sh', '-c'], Cmd: [RUN], Env: ['PATH=/bin', 'IMAGE_VAR=from-image', 'SHARED=from-image'], WorkingDir: '/srv/www', User: 'web' };
  web = await registry.push('private/web', 'v1', [base, site], config, { index: true });
  await registry.push('private/web', 'tampered', [base, site], config);
  const evil = gzipSync(makeTar([{ path: 'srv/ok', data: 'x' }, { path: `../../../../../../tmp/${escapeMarker}`, data: 'escaped' }]));
  await registry.push('private/evil', 'v1', [base, evil], config);
  // Its own layers (another page), so the cache counts below start from zero.
  const sharedSite = await tarLayer({ 'srv/www/index.html': 'shared image\n' });
  shared = await registry.push('public/shared', 'v1', [base, sharedSite], { ...config, User: '' }, { index: true });
});

after(async () => {
  await new Promise<void>((r) => (proxy ? proxy.close(() => r()) : r()));
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('OCI image deploys', () => {
  test('an image deploys with its entrypoint, env, workdir and user, and serves through the router', async () => {
    await cliOk(['apps', 'create', 'imgweb']);
    await cliOk(['config', 'set', 'SHARED=from-app', 'APP_VAR=yes', '--app', 'imgweb']);
    const d = await cliOk(['deploy', '--image', `${registry.host}/private/web:v1`, '--app', 'imgweb', '--registry-user', REGISTRY_USER], creds);
    assert.match(d.stdout, /manifest list, using linux\//);
    assert.match(d.stdout, /Deployed v1 to/);
    const page = await waitFor('the image serves', async () => {
      const g = await get('imgweb');
      return g.status === 200 && g;
    }, 30_000);
    assert.equal(page.text, 'hello from an OCI image\n');
    const info = (await get('imgweb', '/info.txt')).text;
    assert.match(info, /uid=1234 gid=1234 pwd=\/srv\/www /, 'USER web from the image passwd, WORKDIR');
    assert.match(info, / image=from-image shared=from-app app=yes /, 'image env under the app config vars');
    assert.match(info, /motd=gone/, 'the whiteout of the second layer removed /etc/motd');

    const builds = await (await suite.p.client(suite.token)).call('listBuilds', { params: { app: 'imgweb' } });
    assert.equal(builds[0].stack, 'image');
    assert.deepEqual(JSON.parse(builds[0].processTypes.web), ['/bin/sh', '-c', RUN], 'web = ENTRYPOINT + CMD, exec form');
    assert.ok(registry.tokens.authenticated > 0, 'the pull used the registry credentials');
    assert.ok(!suite.p.output.includes(REGISTRY_PASSWORD), 'the registry password is never logged');
  });

  test('an image that does not exist: clear error, the running release is untouched', async () => {
    const before = await json<any[]>(['releases', '--app', 'imgweb']);
    const r = await cli(['deploy', '--image', `${registry.host}/private/web:no-such-tag`, '--app', 'imgweb', '--registry-user', REGISTRY_USER], creds);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /not found: the registry has no manifest for tag "no-such-tag"/);
    assert.equal((await json<any[]>(['releases', '--app', 'imgweb'])).length, before.length);
    assert.equal((await get('imgweb')).status, 200);

    const bad = await cli(['deploy', '--image', 'Not A Reference', '--app', 'imgweb']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /invalid image reference/);
  });

  test('a manifest whose digest does not match is refused', async () => {
    const before = await json<any[]>(['releases', '--app', 'imgweb']);
    const r = await cli(['deploy', '--image', `${proxyHost}/private/web:tampered`, '--app', 'imgweb', '--registry-user', REGISTRY_USER], creds);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /digest mismatch/);
    assert.ok((seen.get('/v2/private/web/manifests/tampered') ?? 0) >= 1, 'the tampered manifest went through the proxy');
    assert.equal((await json<any[]>(['releases', '--app', 'imgweb'])).length, before.length);
    assert.equal((await get('imgweb')).status, 200);
  });

  test('a layer with path traversal is refused and writes nothing outside', async () => {
    await cliOk(['apps', 'create', 'imgevil']);
    const r = await cli(['deploy', '--image', `${registry.host}/private/evil:v1`, '--app', 'imgevil', '--registry-user', REGISTRY_USER], creds);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /path that leaves the root/);
    await assert.rejects(stat(join('/tmp', escapeMarker)), { code: 'ENOENT' });
    assert.deepEqual(await json<any[]>(['releases', '--app', 'imgevil']), []);
  });

  test('a second app with the same image reuses the layer cache', async () => {
    await cliOk(['apps', 'create', 'imgshare1']);
    await cliOk(['apps', 'create', 'imgshare2']);
    const newLayer = shared.layerDigests[1];
    assert.ok(!web.layerDigests.includes(newLayer));
    const first = await cliOk(['deploy', '--image', `${proxyHost}/public/shared:v1`, '--app', 'imgshare1']);
    assert.match(first.stdout, /downloaded/);
    assert.deepEqual(layerGets([newLayer]), [1], 'the new layer was downloaded once');
    const second = await cliOk(['deploy', '--image', `${proxyHost}/public/shared:v1`, '--app', 'imgshare2']);
    assert.doesNotMatch(second.stdout, /downloaded/);
    assert.deepEqual(layerGets(shared.layerDigests), [0, 1], 'no layer was downloaded again (the base came from the first test)');
    for (const app of ['imgshare1', 'imgshare2']) {
      const g = await waitFor(`${app} serves`, async () => {
        const x = await get(app);
        return x.status === 200 && x;
      }, 30_000);
      assert.equal(g.text, 'shared image\n');
      assert.match((await get(app, '/info.txt')).text, /uid=0 gid=0 /, 'no USER: root inside the user namespace');
    }
  });
});
