// Mount staging (staging.ts): mount sources below directories the sandbox uid cannot search (a
// 0700 parent, as `mktemp -d` makes) still work — pooled and non-pooled, every network mode —
// without any host permission or mount changing. Unit part: no root needed; the rest needs root
// + bubblewrap (real bwrap, cgroups, network namespaces).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fsp, readFileSync, readlinkSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { createRuntime, detectCgroups, prepareWritableDir, readMeta, removeBridge, removeCgroupRoot } from './index.ts';
import type { ManagedSandboxRuntime, SandboxSpec } from './index.ts';
import { blockingDir, canSearch, detectStaging, redirectableBy, stagePlan } from './staging.ts';
import { closeFdsSnippet } from './pool.ts';
import { which } from './util.ts';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const skip = !isRoot ? 'staging integration tests need root' : !existsSync('/usr/bin/bwrap') ? 'staging integration tests need bubblewrap (/usr/bin/bwrap)' : false;
if (skip) console.log(`# SKIP staging integration tests: ${skip}`);

const rnd = randomBytes(3).toString('hex');
const BRIDGE = `swgs-${rnd}`;
const CIDR = `10.${110 + (parseInt(rnd.slice(0, 2), 16) % 40)}.${parseInt(rnd.slice(2, 4), 16)}.0/24`;
const ROOTS = { pooled: `swgstage-${rnd}`, direct: `swgstagd-${rnd}` };
const UID = 100_000 + (parseInt(rnd, 16) % 50_000);
const SERVER =
  `const fs = require('fs'); fs.writeFileSync('/app/written-by-app', 'hi'); let ro = 'ro-writable'; ` +
  `try { fs.writeFileSync('/ro/x', 'x'); } catch (e) { ro = 'ro-' + e.code; } ` +
  `const cfg = fs.readFileSync('/config.json', 'utf8').trim(); ` +
  `require('http').createServer((q, r) => r.end(JSON.stringify({ uid: process.getuid(), ro, cfg, seen: fs.readFileSync('/ro/seen', 'utf8') }))).listen(5000, () => console.log('listening'))`;

function httpGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 1000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

async function getWithRetry(url: string, ms = 8000): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await httpGet(url);
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

const st = (mode: number, uid = 0, gid = 0) => ({ mode: 0o40000 | mode, uid, gid });

describe('mount staging: reachability rules', () => {
  it('search permission follows the owner / group / other bits (no supplementary groups)', () => {
    const who = { uid: 1234, gid: 1234 };
    assert.equal(canSearch(st(0o700), who), false);
    assert.equal(canSearch(st(0o711), who), true);
    assert.equal(canSearch(st(0o701), who), true);
    assert.equal(canSearch(st(0o700, 1234), who), true, 'owner');
    assert.equal(canSearch(st(0o601, 1234), who), false, 'owner bits apply to the owner, not other');
    assert.equal(canSearch(st(0o710, 0, 1234), who), true, 'group');
    assert.equal(canSearch(st(0o701, 0, 1234), who), false, 'group bits apply to the group');
  });

  it('finds the blocking ancestor; symlinked paths are checked as given and resolved', async () => {
    const top = await fsp.mkdtemp('/var/tmp/swgs-unit-');
    try {
      await fsp.chmod(top, 0o755);
      await fsp.mkdir(path.join(top, 'open/app'), { recursive: true });
      await fsp.mkdir(path.join(top, 'closed/app'), { recursive: true, mode: 0o700 });
      await fsp.chmod(path.join(top, 'closed'), 0o700);
      await fsp.symlink(path.join(top, 'closed'), path.join(top, 'link'));
      const who = { uid: 54321, gid: 54321 };
      assert.equal(blockingDir(path.join(top, 'open/app'), who), null);
      assert.equal(blockingDir(path.join(top, 'closed/app'), who), path.join(top, 'closed'));
      assert.equal(blockingDir(path.join(top, 'link/app'), who), path.join(top, 'link'), 'through a symlink (to a 0700 dir)');
      await fsp.symlink(path.join(top, 'closed/app'), path.join(top, 'open/app-link'));
      assert.equal(blockingDir(path.join(top, 'open/app-link'), who), path.join(top, 'closed'), 'a source that is a symlink: its target is reached');
      assert.equal(blockingDir(path.join(top, 'closed'), who), null, 'the source itself needs no search permission');
      // redirection: a directory on the way that the uid can write
      if (isRoot) {
        await fsp.mkdir(path.join(top, 'owned/app'), { recursive: true });
        await fsp.chown(path.join(top, 'owned'), who.uid, who.gid);
        assert.equal(redirectableBy(path.join(top, 'owned/app'), who), path.join(top, 'owned'));
        assert.equal(redirectableBy(path.join(top, 'closed/app'), who), null);
        assert.equal(redirectableBy(path.join(top, 'owned'), who), null, 'owning the source itself is fine');
      }
      assert.equal(redirectableBy('/tmp/x-not-there/app', who), '/tmp', 'sticky /tmp: an entry that is not there yet could be created by the uid');
    } finally {
      await fsp.rm(top, { recursive: true, force: true });
    }
  });

  it('picks a staging directory that holds none of the tools', async () => {
    const tools = { bash: '/usr/bin/bash', unshare: '/usr/bin/unshare', mount: '/usr/bin/mount', mkdir: '/usr/bin/mkdir' };
    const top = await fsp.mkdtemp('/var/tmp/swgs-cand-');
    try {
      await fsp.chmod(top, 0o755);
      await fsp.mkdir(path.join(top, 'a'));
      await fsp.mkdir(path.join(top, 'b'));
      const s = detectStaging(tools, ['/usr/bin/bwrap', path.join(top, 'a', 'setpriv')], ['/nonexistent-swg', path.join(top, 'a'), path.join(top, 'b')]);
      assert.equal(s.dir, path.join(top, 'b'));
      const none = detectStaging({ ...tools, unshare: undefined }, []);
      assert.equal(none.dir, null);
      assert.match((none as { reason: string }).reason, /unshare not found/);
      await fsp.chmod(top, 0o700);
      const hidden = detectStaging(tools, [], [path.join(top, 'b')]);
      assert.equal(hidden.dir, null, 'the staging dir itself must be reachable');
    } finally {
      await fsp.rm(top, { recursive: true, force: true });
    }
  });
});

describe('mount staging: the staging step itself', { skip }, () => {
  it('binds sources that lie below the staging directory, read-only where asked, and leaves no fd behind', async () => {
    const top = await fsp.mkdtemp('/var/tmp/swgs-step-');
    try {
      const stage = path.join(top, 'stage');
      await fsp.mkdir(path.join(stage, 'inner'), { recursive: true });
      await fsp.writeFile(path.join(stage, 'inner', 'f'), 'under-the-stage-dir');
      await fsp.mkdir(path.join(top, 'ro'));
      await fsp.writeFile(path.join(top, 'file'), 'a-file');
      const tools = { bash: (await which('bash'))!, unshare: (await which('unshare'))!, mount: (await which('mount'))!, mkdir: (await which('mkdir'))! };
      const plan = stagePlan({ dir: stage, tools }, [
        { source: path.join(stage, 'inner'), target: '/a', readonly: false },
        { source: path.join(top, 'ro'), target: '/b', readonly: true },
        { source: path.join(top, 'file'), target: '/c', readonly: true },
      ]);
      assert.deepEqual(
        plan.mounts.map((m) => m.source),
        ['0', '1', '2'].map((i) => path.join(stage, i)),
      );
      const check = `cat ${stage}/0/f; echo; cat ${stage}/2; echo; touch ${stage}/1/x 2>/dev/null && echo ro-writable || echo ro-refused; touch ${stage}/0/y && echo rw-ok; ls /proc/self/fd | tr '\\n' ' '`;
      // (through the launcher's fd-closing snippet, as in the runtime: no fds of ours leak in)
      const out = execFileSync(tools.bash, ['-c', closeFdsSnippet(2) + 'exec "$@"', 'swg-launch', ...plan.prefix, 'sh', '-c', check], { encoding: 'utf8' });
      assert.match(out, /^under-the-stage-dir\na-file\nro-refused\nrw-ok\n0 1 2 3 $/);
      assert.equal(existsSync(path.join(stage, '0')), false, 'nothing appeared on the host');
      assert.equal(existsSync(path.join(stage, 'inner', 'y')), true, 'the write went to the source');
      assert.doesNotMatch(readFileSync('/proc/self/mountinfo', 'utf8'), /swg-stage/);
    } finally {
      await fsp.rm(top, { recursive: true, force: true });
    }
  });
});

describe('mount staging: sandboxes below a 0700 directory', { skip }, () => {
  let parent: string; // mkdtemp: 0700, root's
  const runtimes: ManagedSandboxRuntime[] = [];
  const started: Array<{ rt: ManagedSandboxRuntime; id: string; stateDir: string }> = [];
  let modesBefore: Record<string, string> = {};
  let stagingBefore: string[] = [];
  let stagingDir = '';

  /** mode/owner of the parent, every directory below it and every ancestor */
  async function modes(): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    const add = (p: string) => {
      const s = statSync(p);
      out[p] = `${(s.mode & 0o7777).toString(8)} ${s.uid}:${s.gid}`;
    };
    for (let d = path.dirname(parent); ; d = path.dirname(d)) {
      add(d);
      if (d === '/') break;
    }
    const walk = async (d: string) => {
      add(d);
      for (const e of await fsp.readdir(d, { withFileTypes: true })) if (e.isDirectory() && e.name !== 'state' && e.name !== 'logs') await walk(path.join(d, e.name));
    };
    await walk(parent);
    return out;
  }

  async function runtime(root: string, netPoolSize: number): Promise<ManagedSandboxRuntime> {
    const rt = await createRuntime({ isolation: 'sandbox', bridge: { name: BRIDGE, cidr: CIDR }, cgroupRoot: root, stateRoot: path.join(parent, 'runtime'), netPoolSize });
    runtimes.push(rt);
    return rt;
  }

  async function spec(rt: ManagedSandboxRuntime, id: string, over: Partial<SandboxSpec> = {}): Promise<SandboxSpec> {
    const app = path.join(parent, 'apps', id);
    await fsp.mkdir(app, { recursive: true });
    await prepareWritableDir(app, UID, UID);
    const s: SandboxSpec = {
      id,
      argv: ['node', '-e', SERVER],
      env: {},
      cwd: '/app',
      mounts: [
        { source: app, target: '/app', readonly: false },
        { source: path.join(parent, 'shared'), target: '/ro', readonly: true },
        { source: path.join(parent, 'config.json'), target: '/config.json', readonly: true },
      ],
      uid: UID,
      gid: UID,
      limits: { memoryMb: 256, cpus: 1, pids: 64 },
      network: { mode: 'bridge' },
      logFile: path.join(parent, 'logs', `${id}.log`),
      stateDir: path.join(parent, 'state', id),
      ...over,
    };
    started.push({ rt, id, stateDir: s.stateDir });
    return s;
  }

  const readLog = (id: string) => fsp.readFile(path.join(parent, 'logs', `${id}.log`), 'utf8').catch(() => '');
  const staged = (pid: number) => readFileSync(`/proc/${pid}/mountinfo`, 'utf8').includes(' swg-stage ');

  before(async () => {
    parent = await fsp.mkdtemp('/var/tmp/swgs-');
    await fsp.chmod(parent, 0o700);
    await fsp.mkdir(path.join(parent, 'shared'));
    await fsp.writeFile(path.join(parent, 'shared', 'seen'), 'shared-file');
    await fsp.writeFile(path.join(parent, 'config.json'), '{"from":"host"}\n');
    await fsp.mkdir(path.join(parent, 'apps'));
    await fsp.mkdir(path.join(parent, 'logs'));
    await fsp.mkdir(path.join(parent, 'state'));
    const rt = await runtime(ROOTS.pooled, 2);
    const s = (rt as unknown as { staging: { dir: string | null } }).staging;
    assert.ok(s.dir, 'this host has a staging directory');
    stagingDir = s.dir;
    stagingBefore = (await fsp.readdir(stagingDir)).sort();
    modesBefore = await modes();
  });

  after(async () => {
    const problems: string[] = [];
    for (const s of started) await s.rt.cleanup(s.id, s.stateDir).catch((e) => problems.push(String(e)));
    for (const rt of runtimes) await rt.close().catch((e) => problems.push(String(e)));
    const cg = await detectCgroups();
    for (const root of Object.values(ROOTS)) {
      if (cg.layout) await removeCgroupRoot(cg.layout, root).catch((e) => problems.push(String(e)));
      for (const ns of execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n')) {
        const name = ns.split(' ')[0];
        if (name.startsWith(`${root}-`)) {
          problems.push(`leftover netns ${name}`);
          try {
            execFileSync('ip', ['netns', 'del', name]);
          } catch {}
        }
      }
    }
    await removeBridge(BRIDGE).catch((e) => problems.push(String(e)));
    if (parent && !process.env.SWG_KEEP) await fsp.rm(parent, { recursive: true, force: true });
    assert.deepEqual(problems, []);
  });

  async function serves(rt: ManagedSandboxRuntime, id: string) {
    const h = await rt.start(await spec(rt, id));
    assert.ok(h.ip, 'bridged: has an address');
    const body = JSON.parse(await getWithRetry(`http://${h.ip}:5000/`).catch(async (e) => assert.fail(`${e}\n${await readLog(id)}`)));
    assert.deepEqual(body, { uid: UID, ro: 'ro-EROFS', cfg: '{"from":"host"}', seen: 'shared-file' });
    assert.equal(await fsp.readFile(path.join(parent, 'apps', id, 'written-by-app'), 'utf8'), 'hi', 'the app wrote its /app');
    assert.equal(statSync(path.join(parent, 'apps', id, 'written-by-app')).uid, UID);
    assert.equal(existsSync(path.join(parent, 'shared', 'x')), false, 'read-only mount stayed read-only');
    assert.ok(staged(h.pid), 'went through the staging step');
    return h;
  }

  it('pooled (zygote) start: serves HTTP on the bridge, writes its /app, read-only mounts stay read-only; adoptable', async () => {
    const rt = runtimes[0];
    const pool = (rt as unknown as { pool: { idle(): Promise<void>; available: number } }).pool;
    await pool.idle();
    const h = await serves(rt, 'pooled');
    const meta = (await readMeta(path.join(parent, 'state', 'pooled')))!;
    assert.match(meta.netns!, /-Pool\./, 'started from a pool slot');
    // a second runtime (a restarted platform) adopts it as usual
    const rt2 = await runtime(ROOTS.pooled, 0);
    const adopted = (await rt2.adopt('pooled', path.join(parent, 'state', 'pooled')))!;
    assert.equal(adopted.pid, h.pid);
    const waiting = adopted.wait();
    await adopted.kill();
    assert.equal((await waiting).signal, 'SIGTERM');
    await rt2.cleanup('pooled', path.join(parent, 'state', 'pooled'));
    assert.equal(existsSync(`/run/netns/${meta.netns}`), false, 'cleanup works as ever');
  });

  it('non-pooled start (netPoolSize 0) works the same', async () => {
    const rt = await runtime(ROOTS.direct, 0);
    const h = await serves(rt, 'direct');
    await h.kill();
    assert.equal((await h.wait()).signal, 'SIGTERM');
  });

  for (const mode of ['host', 'none'] as const) {
    it(`network ${mode}: runs, writes its /app, read-only mounts stay read-only`, async () => {
      const rt = runtimes[0];
      const id = `net-${mode}`;
      const script = `echo "uid=$(id -u)"; echo ok > /app/out && echo app-rw; touch /ro/x 2>/dev/null && echo ro-writable || echo ro-refused; cat /ro/seen; echo; cat /config.json; test -e ${stagingDir}/0 && echo SEES_STAGING || true; echo "fds=$(ls /proc/self/fd | tr '\\n' ' ')"`;
      const h = await rt.start(await spec(rt, id, { argv: ['sh', '-c', script], network: { mode } }));
      assert.equal(h.ip, mode === 'host' ? '127.0.0.1' : null);
      const exit = await h.wait();
      const log = await readLog(id);
      assert.deepEqual(exit, { exitCode: 0, signal: null, oomKilled: false }, log);
      assert.equal(log, `uid=${UID}\napp-rw\nro-refused\nshared-file\n{"from":"host"}\nfds=0 1 2 3 \n`, 'no fd of the staging step leaks into the sandbox (3: ls reading the dir)');
      assert.equal(await fsp.readFile(path.join(parent, 'apps', id, 'out'), 'utf8'), 'ok\n');
    });
  }

  it('a reachable source keeps the plain chain (no staging step)', async () => {
    const rt = runtimes[0];
    const open = path.join(path.dirname(parent), `swgs-open-${rnd}`);
    await fsp.mkdir(open, { mode: 0o755 });
    await prepareWritableDir(open, UID, UID);
    try {
      const s = await spec(rt, 'fast', { argv: ['sleep', '30'], mounts: [{ source: open, target: '/app', readonly: false }] });
      const h = await rt.start(s);
      assert.equal(staged(h.pid), false);
      await h.kill('SIGKILL');
      await h.wait();
    } finally {
      await fsp.rm(open, { recursive: true, force: true });
    }
  });

  it('refuses to stage a source whose path the sandbox uid could redirect', async () => {
    const rt = runtimes[0];
    const owned = path.join(parent, 'owned');
    await fsp.mkdir(path.join(owned, 'app'), { recursive: true });
    await fsp.chown(owned, UID, UID);
    const s = await spec(rt, 'redirect', { mounts: [{ source: path.join(owned, 'app'), target: '/app', readonly: false }] });
    await assert.rejects(rt.start(s), /cannot be staged safely: .*owned.* is writable by uid/);
  });

  it('the host is unchanged afterwards: directory modes, mounts, the staging directory', async () => {
    // (the sandboxes started above are gone or still running: either way nothing may show)
    const now = await modes();
    for (const [p, m] of Object.entries(modesBefore)) assert.equal(now[p], m, `mode/owner of ${p}`);
    assert.equal(now[parent], `700 0:0`);
    assert.doesNotMatch(readFileSync('/proc/self/mountinfo', 'utf8'), /swg-stage/);
    assert.deepEqual((await fsp.readdir(stagingDir)).sort(), stagingBefore);
  });

  it('the staging namespace dies with the sandbox (nothing holds it)', async () => {
    const rt = runtimes[0];
    const h = await rt.start(await spec(rt, 'dies', { argv: ['sleep', '30'], network: { mode: 'none' } }));
    const ns = await fsp.readlink(`/proc/${h.pid}/ns/mnt`);
    assert.notEqual(ns, await fsp.readlink('/proc/self/ns/mnt'));
    await h.kill('SIGKILL');
    await h.wait();
    await rt.cleanup('dies', path.join(parent, 'state', 'dies'));
    // no process is left in that mount namespace
    const holders = (await fsp.readdir('/proc')).filter((p) => /^\d+$/.test(p)).filter((p) => {
      try {
        return readlinkSync(`/proc/${p}/ns/mnt`) === ns;
      } catch {
        return false;
      }
    });
    assert.deepEqual(holders, []);
  });
});
