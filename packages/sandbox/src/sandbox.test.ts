// Integration tests: real bwrap, real cgroups, real network namespaces. Need root + bubblewrap.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createRuntime,
  detectCgroups,
  detectIsolation,
  prepareWritableDir,
  readFinalExit,
  readMeta,
  removeBridge,
  removeCgroupRoot,
} from './index.ts';
import type { ManagedSandboxRuntime, SandboxHandle, SandboxSpec } from './index.ts';
import { cgroupDirs } from './cgroups.ts';
import { vethName } from './net.ts';

const skip =
  typeof process.getuid !== 'function' || process.getuid() !== 0
    ? 'sandbox integration tests need root'
    : !existsSync('/usr/bin/bwrap')
      ? 'sandbox integration tests need bubblewrap (/usr/bin/bwrap)'
      : false;
if (skip) console.log(`# SKIP sandbox integration tests: ${skip}`);

const rnd = randomBytes(3).toString('hex');
const BRIDGE = `swgt-${rnd}`;
const CIDR = `10.${200 + (parseInt(rnd.slice(0, 2), 16) % 50)}.${parseInt(rnd.slice(2, 4), 16)}.0/24`;
const CG_ROOT = `swgtest-${rnd}`;
const UID = 100_000 + (parseInt(rnd, 16) % 50_000);
const ROOT = `/var/tmp/swgt-${rnd}`; // outside /tmp on purpose: the sandbox must not see it
const NODE = process.execPath;
const INDEX = path.join(path.dirname(fileURLToPath(import.meta.url)), 'index.ts');

let rt: ManagedSandboxRuntime;
const started: Array<{ id: string; stateDir: string }> = [];

function spec(id: string, over: Partial<SandboxSpec> = {}): SandboxSpec {
  const s: SandboxSpec = {
    id,
    argv: ['true'],
    env: {},
    cwd: '/app',
    mounts: [{ source: path.join(ROOT, 'apps', id), target: '/app', readonly: false }],
    uid: UID,
    gid: UID,
    limits: { memoryMb: 256, cpus: 1, pids: 128 },
    network: { mode: 'none' },
    logFile: path.join(ROOT, 'logs', `${id}.log`),
    stateDir: path.join(ROOT, 'state', id),
    ...over,
  };
  if (/^[a-z0-9][a-z0-9_-]*$/.test(s.id)) started.push({ id: s.id, stateDir: s.stateDir });
  return s;
}

async function appDir(id: string): Promise<string> {
  const d = path.join(ROOT, 'apps', id);
  await fsp.mkdir(d, { recursive: true });
  await prepareWritableDir(d, UID, UID);
  return d;
}

const readLog = (id: string) => fsp.readFile(path.join(ROOT, 'logs', `${id}.log`), 'utf8').catch(() => '');

function httpGet(url: string, timeoutMs = 1000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
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
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function waitForLog(id: string, re: RegExp, ms = 8000): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    const t = await readLog(id);
    if (re.test(t)) return t;
    if (Date.now() > deadline) throw new Error(`log of ${id} never matched ${re}: ${t}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const SERVER = `require('http').createServer((q, r) => r.end(JSON.stringify({ host: require('os').hostname(), uid: process.getuid(), pid: process.pid }))).listen(5000, () => console.log('listening'))`;

describe('sandbox runtime (bwrap)', { skip }, () => {
  before(async () => {
    await fsp.mkdir(path.join(ROOT, 'secret'), { recursive: true });
    await fsp.writeFile(path.join(ROOT, 'secret', 'token'), 'top-secret');
    rt = await createRuntime({ isolation: 'sandbox', bridge: { name: BRIDGE, cidr: CIDR }, cgroupRoot: CG_ROOT, stateRoot: path.join(ROOT, 'runtime') });
  });

  after(async () => {
    // Clean up everything, even when tests failed.
    const problems: string[] = [];
    for (const s of started) await rt?.cleanup(s.id, s.stateDir).catch((e) => problems.push(String(e)));
    await rt?.close().catch((e) => problems.push(String(e)));
    const cg = await detectCgroups();
    if (cg.layout) await removeCgroupRoot(cg.layout, CG_ROOT).catch((e) => problems.push(String(e)));
    for (const ns of execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n')) {
      const name = ns.split(' ')[0];
      if (name.startsWith(`${CG_ROOT}-`)) {
        problems.push(`leftover netns ${name}`);
        try {
          execFileSync('ip', ['netns', 'del', name]);
        } catch {}
      }
    }
    await removeBridge(BRIDGE).catch((e) => problems.push(String(e)));
    await fsp.rm(ROOT, { recursive: true, force: true });
    assert.deepEqual(problems, []);
  });

  it('detects a usable sandbox with a cgroup version', async () => {
    const d = await detectIsolation();
    assert.equal(d.available, true, d.reason);
    assert.notEqual(d.cgroup, 'none');
  });

  it('isolates: runs as the uid, own pid ns, read-only system, invisible host dirs, no network', async () => {
    await appDir('iso');
    const script = [
      'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) pid=$$ host=$(hostname)"',
      `test -e ${ROOT} && echo "SEES_ROOT" || echo "no-root-dir"`,
      `test -e ${path.join(ROOT, 'secret', 'token')} && echo "SEES_SECRET" || echo "no-secret"`,
      'test -e /var/tmp && echo "SEES_VAR_TMP" || echo "no-var-tmp"',
      'cat /etc/shadow >/dev/null 2>&1 && echo "READS_SHADOW" || echo "shadow-denied"',
      'touch /usr/pwned 2>/dev/null && echo "WRITES_USR" || echo "usr-ro"',
      'touch /pwned 2>/dev/null && echo "WRITES_ROOT" || echo "root-ro"',
      'echo hello > /app/out.txt && echo "app-rw"',
      'echo x > /tmp/x && echo "tmp-rw"',
      'echo "ifaces=$(ls /sys/class/net 2>/dev/null | tr "\\n" " ")"',
      'grep -c . /proc/net/dev',
      'echo "caps=$(grep CapEff /proc/self/status)"',
      'echo "maxpid=$(ls /proc | grep "^[0-9]" | sort -n | tail -1)"',
      'echo "env=$FOO:$PATH"',
      'echo "fds=$(ls /proc/self/fd | tr "\\n" " ")"',
    ].join('; ');
    const h = await rt.start(spec('iso', { argv: ['sh', '-c', script], env: { FOO: 'bar' } }));
    assert.equal(h.ip, null, 'network none has no IP');
    const exit = await h.wait();
    const log = await readLog('iso');
    assert.deepEqual(exit, { exitCode: 0, signal: null, oomKilled: false }, log);
    assert.match(log, new RegExp(`uid=${UID} gid=${UID} groups=${UID} pid=\\d+ host=iso`));
    const pid = Number(/pid=(\d+)/.exec(log)![1]);
    assert.ok(pid <= 3, `pid inside the sandbox should be tiny, got ${pid}`);
    for (const want of ['no-root-dir', 'no-secret', 'no-var-tmp', 'shadow-denied', 'usr-ro', 'root-ro', 'app-rw', 'tmp-rw', 'caps=CapEff:\t0000000000000000', 'env=bar:/usr/local/sbin']) {
      assert.ok(log.includes(want), `expected "${want}" in:\n${log}`);
    }
    assert.match(log, /fds=0 1 2 3 \n/, 'no status/args fd leaks into the sandbox (3 is ls reading the dir)');
    const maxpid = Number(/maxpid=(\d+)/.exec(log)![1]);
    assert.ok(maxpid < 20, `sees only its own processes (highest pid ${maxpid})`);
    // only loopback: /proc/net/dev has 2 header lines + lo
    assert.match(log, /\n3\n/);
    assert.equal(await fsp.readFile(path.join(ROOT, 'apps', 'iso', 'out.txt'), 'utf8'), 'hello\n');
    assert.equal((await fsp.stat(path.join(ROOT, 'apps', 'iso', 'out.txt'))).uid, UID);
  });

  it('reports the exit code', async () => {
    await appDir('exit3');
    const h = await rt.start(spec('exit3', { argv: ['sh', '-c', 'echo bye; exit 3'] }));
    assert.deepEqual(await h.wait(), { exitCode: 3, signal: null, oomKilled: false });
    assert.deepEqual(await readFinalExit(path.join(ROOT, 'state', 'exit3')), { exitCode: 3, signal: null, oomKilled: false });
    assert.match(await readLog('exit3'), /bye/);
  });

  it('kill() signals the sandbox: SIGTERM then SIGKILL', async () => {
    await appDir('kill1');
    await appDir('kill2');
    const h1 = await rt.start(spec('kill1', { argv: ['sleep', '30'] }));
    const h2 = await rt.start(spec('kill2', { argv: ['sh', '-c', 'trap "" TERM; echo ready; while :; do sleep 1; done'] }));
    await h1.kill();
    assert.deepEqual(await h1.wait(), { exitCode: 143, signal: 'SIGTERM', oomKilled: false });
    await waitForLog('kill2', /ready/);
    await h2.kill('SIGKILL');
    assert.deepEqual(await h2.wait(), { exitCode: 137, signal: 'SIGKILL', oomKilled: false });
  });

  it('two bridged instances listen on the same port, each reachable from the host, not from each other', async () => {
    await appDir('web1');
    await appDir('web2');
    const [a, b] = await Promise.all([
      rt.start(spec('web1', { argv: ['node', '-e', SERVER], network: { mode: 'bridge' }, env: { PORT: '5000' } })),
      rt.start(spec('web2', { argv: ['node', '-e', SERVER], network: { mode: 'bridge' }, env: { PORT: '5000' } })),
    ]);
    assert.ok(a.ip && b.ip && a.ip !== b.ip, `distinct IPs: ${a.ip} ${b.ip}`);
    const ra = JSON.parse(await getWithRetry(`http://${a.ip}:5000/`));
    const rb = JSON.parse(await getWithRetry(`http://${b.ip}:5000/`));
    assert.equal(ra.host, 'web1');
    assert.equal(rb.host, 'web2');
    assert.equal(ra.uid, UID);
    const st = await a.stats();
    assert.ok(st.memoryBytes! > 1_000_000, `memory accounted: ${st.memoryBytes}`);
    assert.ok(st.cpuUsageNs! > 0, `cpu accounted: ${st.cpuUsageNs}`);
    // instance -> instance traffic is blocked by bridge port isolation
    await appDir('probe');
    const probe = await rt.start(
      spec('probe', {
        argv: ['node', '-e', `require('http').get({ host: '${b.ip}', port: 5000, timeout: 1500 }, () => console.log('REACHED')).on('timeout', function () { console.log('BLOCKED'); this.destroy(); }).on('error', (e) => console.log('BLOCKED', e.code))`],
        network: { mode: 'bridge' },
      }),
    );
    await probe.wait();
    assert.match(await readLog('probe'), /BLOCKED/);
    await a.kill();
    await b.kill();
    assert.equal((await a.wait()).signal, 'SIGTERM');
    assert.equal((await b.wait()).signal, 'SIGTERM');
  });

  it('memory limit: allocating 200 MB under a 64 MB limit is OOM-killed', async () => {
    await appDir('oom');
    const h = await rt.start(
      spec('oom', {
        argv: ['node', '-e', 'const a = []; for (let i = 0; i < 200; i++) a.push(Buffer.alloc(1 << 20, 1)); console.log("SURVIVED", a.length)'],
        limits: { memoryMb: 64, cpus: 1, pids: 64 },
      }),
    );
    const exit = await h.wait();
    assert.deepEqual(exit, { exitCode: 137, signal: 'SIGKILL', oomKilled: true }, await readLog('oom'));
    assert.doesNotMatch(await readLog('oom'), /SURVIVED/);
    await rt.cleanup('oom', path.join(ROOT, 'state', 'oom'));
    // the verdict survives cleanup (the cgroup holding the OOM counter is gone)
    assert.deepEqual(await readFinalExit(path.join(ROOT, 'state', 'oom')), exit);
  });

  it('cpu limit: 0.2 cpus throttles a busy loop', async () => {
    await appDir('cpu');
    const h = await rt.start(
      spec('cpu', { argv: ['node', '-e', 'const end = Date.now() + 1500; while (Date.now() < end) {}'], limits: { memoryMb: 256, cpus: 0.2, pids: 64 } }),
    );
    assert.equal((await h.wait()).exitCode, 0);
    const { cpuUsageNs } = await h.stats(); // the cgroup stays until cleanup()
    assert.ok(cpuUsageNs !== null && cpuUsageNs > 0.1e9 && cpuUsageNs < 0.8e9, `cpu time ${cpuUsageNs} ns for 1.5 s wall at 0.2 cpus`);
  });

  it('host network shares the host interfaces and reports 127.0.0.1', async () => {
    await appDir('hostnet');
    const h = await rt.start(spec('hostnet', { argv: ['sh', '-c', 'echo "ifaces=$(grep -c : /proc/net/dev)"'], network: { mode: 'host' } }));
    assert.equal(h.ip, '127.0.0.1');
    await h.wait();
    const hostIfaces = (await fsp.readFile('/proc/net/dev', 'utf8')).split('\n').filter((l) => l.includes(':')).length;
    assert.match(await readLog('hostnet'), new RegExp(`ifaces=${hostIfaces}\\b`));
  });

  it('pids limit stops a fork loop', async () => {
    await appDir('forks');
    const stateDir = path.join(ROOT, 'state', 'forks');
    const h = await rt.start(
      spec('forks', {
        argv: ['sh', '-c', 'i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); echo "started $i"; done; echo ALL_STARTED'],
        limits: { memoryMb: 128, cpus: 1, pids: 10 },
      }),
    );
    const exit = await h.wait();
    const log = await readLog('forks');
    assert.doesNotMatch(log, /ALL_STARTED/);
    assert.match(log, /fork/i);
    const n = Math.max(...[...log.matchAll(/started (\d+)/g)].map((m) => Number(m[1])));
    assert.ok(n < 10, `at most pids.max processes, started ${n}`);
    assert.notEqual(exit.exitCode, 0);
    // the orphaned sleeps are still in the cgroup; cleanup must kill them and remove it
    const meta = (await readMeta(stateDir))!;
    await rt.cleanup('forks', stateDir);
    for (const d of cgroupDirs(meta.cgroup!)) assert.equal(existsSync(d), false, `${d} removed`);
  });

  it('survives the death of the starting process and is adopted by a new runtime', async () => {
    await appDir('adopt');
    const s = spec('adopt', { argv: ['node', '-e', SERVER], network: { mode: 'bridge' } });
    // Start from a separate Node process that exits right away (a real "agent restart").
    const starter = `
      import { createRuntime } from ${JSON.stringify(INDEX)};
      const rt = await createRuntime(${JSON.stringify({ isolation: 'sandbox', bridge: { name: BRIDGE, cidr: CIDR }, cgroupRoot: CG_ROOT, stateRoot: path.join(ROOT, 'runtime') })});
      const h = await rt.start(${JSON.stringify(s)});
      console.log(JSON.stringify({ pid: h.pid, ip: h.ip }));
      process.exit(0);`;
    const script = path.join(ROOT, 'starter.mts');
    await fsp.writeFile(script, starter);
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn(NODE, ['--import', 'tsx', script], { cwd: path.dirname(INDEX), stdio: ['ignore', 'pipe', 'inherit'] });
      let o = '';
      p.stdout.on('data', (d) => (o += d));
      p.on('exit', (code) => (code === 0 ? resolve(o) : reject(new Error(`starter exited ${code}: ${o}`))));
    });
    const first = JSON.parse(out.trim().split('\n').pop()!);
    assert.ok(JSON.parse(await getWithRetry(`http://${first.ip}:5000/`)).host === 'adopt', 'still serving after its starter died');

    const rt2 = await createRuntime({ isolation: 'sandbox', bridge: { name: BRIDGE, cidr: CIDR }, cgroupRoot: CG_ROOT, stateRoot: path.join(ROOT, 'runtime') });
    assert.equal(await rt2.adopt('adopt', path.join(ROOT, 'state', 'nope')), null);
    const h: SandboxHandle | null = await rt2.adopt('adopt', s.stateDir);
    assert.ok(h, 'adopted');
    assert.equal(h.pid, first.pid);
    assert.equal(h.ip, first.ip);
    assert.ok((await h.stats()).memoryBytes! > 0);
    assert.equal(await readFinalExit(s.stateDir), null, 'still running');
    const waiting = h.wait();
    await h.kill('SIGKILL');
    assert.deepEqual(await waiting, { exitCode: 137, signal: 'SIGKILL', oomKilled: false });
    assert.equal(await rt2.adopt('adopt', s.stateDir), null, 'gone after exit');

    // cleanup removes netns, veth, cgroups and the IP lease; and is idempotent
    const meta = (await readMeta(s.stateDir))!;
    await rt2.cleanup('adopt', s.stateDir);
    await rt2.cleanup('adopt', s.stateDir);
    assert.equal(existsSync(`/run/netns/${meta.netns}`), false, 'netns removed');
    assert.throws(() => execFileSync('ip', ['link', 'show', 'dev', vethName(meta.netns!)], { stdio: 'ignore' }), 'veth removed');
    for (const d of cgroupDirs(meta.cgroup!)) assert.equal(existsSync(d), false, `${d} removed`);
    const leases = JSON.parse(await fsp.readFile(path.join(ROOT, 'runtime', `ipam-${BRIDGE}.json`), 'utf8')).leases;
    assert.equal(leases[meta.netns!], undefined, 'IP lease released');
    assert.deepEqual(await readFinalExit(s.stateDir), { exitCode: 137, signal: 'SIGKILL', oomKilled: false });
    await rt2.close();
  });

  it('a start that fails midway undoes what it created', async () => {
    await appDir('broken');
    // logFile under a regular file: fails after cgroup + netns + veth were created
    await fsp.writeFile(path.join(ROOT, 'not-a-dir'), '');
    const s = spec('broken', { network: { mode: 'bridge' }, logFile: path.join(ROOT, 'not-a-dir', 'x.log') });
    await assert.rejects(rt.start(s));
    const meta = (await readMeta(s.stateDir))!;
    assert.equal(existsSync(`/run/netns/${meta.netns}`), false);
    for (const d of cgroupDirs(meta.cgroup!)) assert.equal(existsSync(d), false, `${d} removed`);
    const leases = JSON.parse(await fsp.readFile(path.join(ROOT, 'runtime', `ipam-${BRIDGE}.json`), 'utf8')).leases;
    assert.equal(leases[meta.netns!], undefined);
  });

  it('refuses bad specs without creating anything', async () => {
    await assert.rejects(rt.start(spec('Bad ID')), /invalid sandbox id/);
    await assert.rejects(rt.start(spec('rootuid', { uid: 0 })), /unprivileged/);
    await assert.rejects(rt.start(spec('shadow', { mounts: [{ source: '/tmp', target: '/usr/lib', readonly: false }] })), /system directory/);
    await assert.rejects(rt.start(spec('nosrc', { mounts: [{ source: '/nonexistent-xyz', target: '/app', readonly: true }] })), /does not exist/);
    await assert.rejects(createRuntime({ isolation: 'vm' as any }), /unknown isolation/);
  });

  it('refuses to start over a running sandbox with the same state', async () => {
    await appDir('dup');
    const s = spec('dup', { argv: ['sleep', '30'], env: { SECRET_TOKEN: 'hunter2-xyz' } });
    const h = await rt.start(s);
    const cmdline = await fsp.readFile(`/proc/${h.pid}/cmdline`, 'utf8');
    assert.ok(cmdline.includes('bwrap') && !cmdline.includes('hunter2-xyz'), 'env is not on the host command line');
    await assert.rejects(rt.start(s), /already running/);
    await h.kill('SIGKILL');
    await h.wait();
  });

  it('rootfs mode (OCI images): the image root is /, its ids live inside the user namespace only', async () => {
    const root = path.join(ROOT, 'images', 'img');
    for (const d of ['bin', 'proc', 'dev', 'tmp', 'srv']) await fsp.mkdir(path.join(root, d), { recursive: true });
    await fsp.copyFile('/bin/busybox', path.join(root, 'bin/busybox'));
    await fsp.symlink('busybox', path.join(root, 'bin/sh'));
    await prepareWritableDir(root, UID, UID);
    const script = 'echo "uid=$(busybox id -u) gid=$(busybox id -g) pwd=$(pwd)"; test -e /usr && echo SEES_USR || echo no-usr; echo hi > /srv/f && echo root-rw';
    const h = await rt.start(spec('rootfs', { argv: ['/bin/sh', '-c', script], env: { PATH: '/bin' }, cwd: '/srv', mounts: [], rootfs: { source: root, readonly: false }, insideUid: 0, insideGid: 0 }));
    const exit = await h.wait();
    const log = await readLog('rootfs');
    assert.deepEqual(exit, { exitCode: 0, signal: null, oomKilled: false }, log);
    assert.match(log, /uid=0 gid=0 pwd=\/srv/);
    assert.ok(log.includes('no-usr') && log.includes('root-rw'), log);
    assert.equal((await fsp.stat(path.join(root, 'srv/f'))).uid, UID, 'root inside is the unprivileged uid on the host');
    await assert.rejects(rt.start(spec('rootfs-bad', { mounts: [], rootfs: { source: '/nonexistent-root', readonly: true } })), /rootfs .* is not an existing absolute directory/);
  });
});
