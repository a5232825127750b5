// Integration tests of the pre-built slot pool (netns + veth + IP + cgroup + zygote): reuse,
// refill, reclaim after a crash, close(). Real bwrap, cgroups and network namespaces: need root.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, promises as fsp, readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRuntime, detectCgroups, prepareWritableDir, readMeta, removeBridge, removeCgroupRoot } from './index.ts';
import type { ManagedSandboxRuntime, SandboxSpec } from './index.ts';
import { cgroupDirs, hierarchyRoots } from './cgroups.ts';
import type { CgroupLayout } from './cgroups.ts';
import { hasNeighbor, vethName } from './net.ts';
import type { NetPool } from './pool.ts';
import { pidAlive } from './util.ts';

const skip =
  typeof process.getuid !== 'function' || process.getuid() !== 0
    ? 'pool integration tests need root'
    : !existsSync('/usr/bin/bwrap')
      ? 'pool integration tests need bubblewrap (/usr/bin/bwrap)'
      : false;
if (skip) console.log(`# SKIP pool integration tests: ${skip}`);

const rnd = randomBytes(3).toString('hex');
const BRIDGE = `swgp-${rnd}`;
const CIDR = `10.${150 + (parseInt(rnd.slice(0, 2), 16) % 40)}.${parseInt(rnd.slice(2, 4), 16)}.0/24`;
const ROOTS = { main: `swgpool-${rnd}`, crash: `swgpoolc-${rnd}`, off: `swgpoolz-${rnd}`, other: `swgpoolo-${rnd}` };
const UID = 100_000 + (parseInt(rnd, 16) % 50_000);
const ROOT = `/var/tmp/swgp-${rnd}`;
const STATE_ROOT = path.join(ROOT, 'runtime'); // shared: one IP allocation file per bridge
const INDEX = path.join(path.dirname(fileURLToPath(import.meta.url)), 'index.ts');
const SERVER = `require('http').createServer((q, r) => r.end(require('os').hostname())).listen(5000, () => console.log('listening'))`;

let layout: CgroupLayout;
const runtimes: ManagedSandboxRuntime[] = [];
const started: Array<{ rt: ManagedSandboxRuntime; id: string; stateDir: string }> = [];

const poolOf = (rt: ManagedSandboxRuntime) => (rt as unknown as { pool: NetPool }).pool;
const poolNetns = (root: string) => readdirSync('/run/netns').filter((n) => n.startsWith(`${root}-Pool.`));
const poolCgroups = (root: string) => readdirSync(hierarchyRoots(layout, root)[0]).filter((n) => n.startsWith('Pool.'));
const leases = async () => JSON.parse(await fsp.readFile(path.join(STATE_ROOT, `ipam-${BRIDGE}.json`), 'utf8')).leases as Record<string, { id: string; ip: string }>;

async function runtime(root: string, netPoolSize?: number): Promise<ManagedSandboxRuntime> {
  const rt = await createRuntime({ isolation: 'sandbox', bridge: { name: BRIDGE, cidr: CIDR }, cgroupRoot: root, stateRoot: STATE_ROOT, netPoolSize });
  runtimes.push(rt);
  return rt;
}

/** `rt`: the runtime that cleans it up in after() (null: the test does it itself) */
async function spec(rt: ManagedSandboxRuntime | null, id: string, over: Partial<SandboxSpec> = {}): Promise<SandboxSpec> {
  const app = path.join(ROOT, 'apps', id);
  await fsp.mkdir(app, { recursive: true });
  await prepareWritableDir(app, UID, UID);
  const s: SandboxSpec = {
    id,
    argv: ['node', '-e', SERVER],
    env: {},
    cwd: '/app',
    mounts: [{ source: app, target: '/app', readonly: false }],
    uid: UID,
    gid: UID,
    limits: { memoryMb: 256, cpus: 1, pids: 64 },
    network: { mode: 'bridge' },
    logFile: path.join(ROOT, 'logs', `${id}.log`),
    stateDir: path.join(ROOT, 'state', id),
    ...over,
  };
  if (rt) started.push({ rt, id, stateDir: s.stateDir });
  return s;
}

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

async function waitForLog(id: string, re: RegExp, ms = 8000): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    const t = await fsp.readFile(path.join(ROOT, 'logs', `${id}.log`), 'utf8').catch(() => '');
    if (re.test(t)) return t;
    if (Date.now() > deadline) throw new Error(`log of ${id} never matched ${re}: ${t}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('sandbox slot pool', { skip }, () => {
  before(async () => {
    layout = (await detectCgroups()).layout!;
    // traversable by the sandbox uid (the IP allocator would create it 0700)
    await fsp.mkdir(ROOT, { recursive: true, mode: 0o755 });
  });

  after(async () => {
    const problems: string[] = [];
    for (const s of started) await s.rt.cleanup(s.id, s.stateDir).catch((e) => problems.push(String(e)));
    for (const rt of runtimes) await rt.close().catch((e) => problems.push(String(e)));
    for (const root of Object.values(ROOTS)) {
      for (const n of poolNetns(root)) {
        problems.push(`leftover netns ${n}`);
        try {
          execFileSync('ip', ['netns', 'del', n]);
        } catch {}
      }
      if (layout) await removeCgroupRoot(layout, root).catch((e) => problems.push(String(e)));
    }
    await removeBridge(BRIDGE).catch((e) => problems.push(String(e)));
    if (!process.env.SWG_KEEP) await fsp.rm(ROOT, { recursive: true, force: true });
    assert.deepEqual(problems, []);
  });

  it('starts from a pre-built slot (its netns, cgroup and zygote), isolated as ever, and refills', async () => {
    const rt = await runtime(ROOTS.main, 2);
    const pool = poolOf(rt);
    await pool.idle();
    assert.equal(pool.available, 2);
    const before = poolNetns(ROOTS.main);
    assert.equal(before.length, 2);
    assert.equal(poolCgroups(ROOTS.main).length, 2);

    const script = [
      'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) pid=$$ host=$(hostname)"',
      'grep -E "^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)" /proc/self/status | tr "\\t\\n" "  "; echo',
      'echo "fds=$(ls /proc/self/fd | tr "\\n" " ")"',
      'echo "env=$FOO"',
      `exec node -e "${SERVER.replace(/"/g, '\\"')}"`,
    ].join('; ');
    const s = await spec(rt, 'pooled', { argv: ['sh', '-c', script], env: { FOO: 'bar-secret' } });
    const h = await rt.start(s);
    const meta = (await readMeta(s.stateDir))!;
    assert.ok(before.includes(meta.netns!), `uses a pooled netns: ${meta.netns} of ${before}`);
    assert.equal(meta.hostIf, vethName(meta.netns!));
    assert.match(meta.cgroup!.memory, /\/Pool\.[0-9.]+$/, 'runs in the slot cgroup');
    assert.equal(meta.pid, h.pid);
    assert.equal(await getWithRetry(`http://${h.ip}:5000/`), 'pooled');
    const log = await waitForLog('pooled', /listening/);
    assert.match(log, new RegExp(`uid=${UID} gid=${UID} groups=${UID} pid=\\d+ host=pooled`));
    assert.ok(Number(/pid=(\d+)/.exec(log)![1]) <= 3, 'own pid namespace');
    for (const c of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) assert.match(log, new RegExp(`${c}:\\s+0000000000000000`), `${c} empty:\n${log}`);
    assert.match(log, /NoNewPrivs:\s+1/);
    assert.match(log, /fds=0 1 2 3 \n/, 'no fd of the runtime or the zygote leaks in (3 is ls reading the dir)');
    assert.match(log, /env=bar-secret/);
    const cmdline = await fsp.readFile(`/proc/${h.pid}/cmdline`, 'utf8');
    assert.ok(cmdline.includes('bwrap') && !cmdline.includes('bar-secret'), 'the monitor is bwrap, env not on its command line');
    assert.ok((await h.stats()).memoryBytes! > 1_000_000, 'accounted in the slot cgroup');
    assert.equal((await leases())[meta.netns!]?.ip, h.ip);

    // refilled in the background with new names; the lease follows the sandbox
    await pool.idle();
    assert.equal(pool.available, 2);
    const now = poolNetns(ROOTS.main);
    assert.equal(now.length, 3);
    assert.equal(now.filter((n) => !before.includes(n)).length, 1, 'one new slot, names never reused');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await leases())[meta.netns!]?.id, 'pooled', 'lease relabelled to the sandbox');

    // kill() reaches the command; cleanup removes the slot's netns, veth, cgroup and lease
    await h.kill();
    assert.deepEqual(await h.wait(), { exitCode: 143, signal: 'SIGTERM', oomKilled: false });
    await rt.cleanup('pooled', s.stateDir);
    assert.equal(existsSync(`/run/netns/${meta.netns}`), false);
    assert.equal(existsSync(`/sys/class/net/${meta.hostIf}`), false);
    for (const d of cgroupDirs(meta.cgroup!)) assert.equal(existsSync(d), false, `${d} removed`);
    assert.equal((await leases())[meta.netns!], undefined);
  });

  it('two runtimes of one process (same cgroupRoot) never share a slot', async () => {
    const rt1 = runtimes[0];
    await poolOf(rt1).idle();
    const before = poolNetns(ROOTS.main).sort();
    const rt2 = await runtime(ROOTS.main, 2);
    await poolOf(rt2).idle();
    assert.equal(poolNetns(ROOTS.main).length, before.length + 2, 'two more slots, none taken over');
    const h = await rt2.start(await spec(rt2, 'second'));
    assert.equal(await getWithRetry(`http://${h.ip}:5000/`), 'second');
    assert.ok(!before.includes((await readMeta(path.join(ROOT, 'state', 'second')))!.netns!));
    await h.kill('SIGKILL');
    await h.wait();
    await rt2.cleanup('second', path.join(ROOT, 'state', 'second'));
    await rt2.close();
    assert.deepEqual(poolNetns(ROOTS.main).sort(), before, "the first runtime's slots are intact");
    assert.equal(poolOf(rt1).available, 2);
  });

  it('a refused start hands its slot back', async () => {
    const rt = runtimes[0];
    const pool = poolOf(rt);
    await pool.idle();
    const names = poolNetns(ROOTS.main).sort();
    const s = await spec(rt, 'refused', { mounts: [{ source: '/nonexistent-swg', target: '/app', readonly: true }] });
    await assert.rejects(rt.start(s), /does not exist/);
    assert.equal(pool.available, 2);
    assert.deepEqual(poolNetns(ROOTS.main).sort(), names);
  });

  it('a start that fails after taking a slot deletes the slot', async () => {
    const rt = runtimes[0];
    const pool = poolOf(rt);
    await pool.idle();
    await fsp.mkdir(ROOT, { recursive: true });
    await fsp.writeFile(path.join(ROOT, 'not-a-dir'), '');
    const s = await spec(rt, 'failing', { logFile: path.join(ROOT, 'not-a-dir', 'x.log') });
    await assert.rejects(rt.start(s));
    const meta = (await readMeta(s.stateDir))!;
    assert.match(meta.netns!, /-Pool\./);
    assert.equal(existsSync(`/run/netns/${meta.netns}`), false);
    for (const d of cgroupDirs(meta.cgroup!)) assert.equal(existsSync(d), false, `${d} removed`);
    assert.equal((await leases())[meta.netns!], undefined);
  });

  it('a slot whose bridge port is gone is not used: the start builds its own network', async () => {
    const rt = runtimes[0];
    const pool = poolOf(rt);
    await pool.idle();
    // the bridge deleted and recreated behind the runtime's back: old veths are not on it anymore
    await removeBridge(BRIDGE);
    const s = await spec(rt, 'rebuilt');
    const h = await rt.start(s);
    const meta = (await readMeta(s.stateDir))!;
    assert.equal(meta.netns, `${ROOTS.main}-rebuilt`, 'id-derived network, built on the spot');
    assert.equal(await getWithRetry(`http://${h.ip}:5000/`), 'rebuilt');
    await h.kill('SIGKILL');
    await h.wait();
    await rt.cleanup('rebuilt', s.stateDir);
    await pool.idle();
    assert.equal(pool.available, 2, 'refilled with usable slots');
  });

  it('netPoolSize 0 disables the pool', async () => {
    const rt = await runtime(ROOTS.off, 0);
    assert.equal(poolOf(rt), null);
    const s = await spec(rt, 'nopool');
    const h = await rt.start(s);
    const meta = (await readMeta(s.stateDir))!;
    assert.equal(meta.netns, `${ROOTS.off}-nopool`);
    assert.match(meta.cgroup!.memory, new RegExp(`/${ROOTS.off}/nopool$`));
    assert.equal(await getWithRetry(`http://${h.ip}:5000/`), 'nopool');
    assert.deepEqual(poolNetns(ROOTS.off), []);
    await h.kill('SIGKILL');
    await h.wait();
  });

  it('drops the host ARP entry of a released address, so its next sandbox is reachable at once', async () => {
    // no pool: the lowest free address is reused at once
    const rt = runtimes.find((r) => poolOf(r) === null) ?? (await runtime(ROOTS.off, 0));
    for (const r of runtimes) await poolOf(r)?.idle();
    const a = await rt.start(await spec(rt, 'reuse-a'));
    assert.equal(await getWithRetry(`http://${a.ip}:5000/`), 'reuse-a');
    assert.equal(hasNeighbor(a.ip!, BRIDGE), true, 'the host learnt the MAC of a');
    await a.kill('SIGKILL');
    await a.wait();
    await rt.cleanup('reuse-a', path.join(ROOT, 'state', 'reuse-a'));
    assert.equal(hasNeighbor(a.ip!, BRIDGE), false, 'cleanup dropped it');
    // A wrong entry that would never be corrected by itself (e.g. left by a crash): the next start
    // with that address drops it too.
    execFileSync('ip', ['neigh', 'replace', a.ip!, 'lladdr', '02:00:00:00:00:01', 'dev', BRIDGE, 'nud', 'permanent']);
    const b = await rt.start(await spec(rt, 'reuse-b'));
    assert.equal(b.ip, a.ip);
    assert.equal(await getWithRetry(`http://${b.ip}:5000/`, 3000), 'reuse-b');
    await b.kill('SIGKILL');
    await b.wait();
  });

  it('reclaims the slots of a crashed runtime (from any cgroupRoot), but not one a running sandbox uses', async () => {
    const keep = await spec(null, 'survivor', { argv: ['sleep', '60'] });
    // A runtime in another process builds its pool, starts a sandbox from it, then is SIGKILLed.
    const script = `
      import { createRuntime } from ${JSON.stringify(INDEX)};
      const rt = await createRuntime(${JSON.stringify({ isolation: 'sandbox', bridge: { name: BRIDGE, cidr: CIDR }, cgroupRoot: ROOTS.crash, stateRoot: STATE_ROOT, netPoolSize: 2 })});
      await rt.pool.idle();
      const h = await rt.start(${JSON.stringify(keep)});
      await rt.pool.idle();
      console.log(JSON.stringify({ pid: h.pid }));
      process.kill(process.pid, 'SIGKILL');`;
    const file = path.join(ROOT, 'crasher.mts');
    await fsp.writeFile(file, script);
    const out = await new Promise<string>((resolve) => {
      const p = spawn(process.execPath, ['--import', 'tsx', file], { cwd: path.dirname(INDEX), stdio: ['ignore', 'pipe', 'inherit'] });
      let o = '';
      p.stdout.on('data', (d) => (o += d));
      p.on('exit', () => resolve(o));
    });
    const { pid } = JSON.parse(out.trim().split('\n').pop()!);
    const used = (await readMeta(keep.stateDir))!;
    const leaked = poolNetns(ROOTS.crash).filter((n) => n !== used.netns);
    assert.equal(leaked.length, 2, `two slots leaked: ${poolNetns(ROOTS.crash)}`);
    assert.equal(poolCgroups(ROOTS.crash).length, 3);
    const before = await leases();
    for (const n of leaked) assert.ok(before[n], `lease of ${n} leaked`);

    // the next runtime reclaims them, also one with another cgroupRoot (throwaway roots of tests)
    const rt = await runtime(ROOTS.other, 0);
    started.push({ rt, id: 'survivor', stateDir: keep.stateDir });
    assert.deepEqual(poolNetns(ROOTS.crash), [used.netns], 'leaked netns deleted, the used one kept');
    for (const n of leaked) assert.equal(existsSync(`/sys/class/net/${vethName(n)}`), false, 'veth deleted');
    assert.deepEqual(poolCgroups(ROOTS.crash), [path.basename(used.cgroup!.memory)], 'leaked cgroups deleted');
    const afterLeases = await leases();
    for (const n of leaked) assert.equal(afterLeases[n], undefined, 'lease released');
    assert.ok(await pidAlive(pid), 'the sandbox started from the pool still runs');

    // and it is adopted and cleaned up as usual
    const h = await rt.adopt('survivor', keep.stateDir);
    assert.ok(h);
    await h.kill('SIGKILL');
    assert.equal((await h.wait()).signal, 'SIGKILL');
    await rt.cleanup('survivor', keep.stateDir);
    assert.deepEqual(poolNetns(ROOTS.crash), []);
    assert.deepEqual(poolCgroups(ROOTS.crash), []);
    assert.equal((await leases())[used.netns!], undefined);
  });

  it('close() releases the pooled slots (and stops refilling)', async () => {
    const rt = runtimes[0];
    const pool = poolOf(rt);
    await pool.idle();
    const zygotes = (await fsp.readdir('/proc')).filter((p) => /^\d+$/.test(p));
    assert.equal(poolNetns(ROOTS.main).length, 2);
    await rt.close();
    assert.deepEqual(poolNetns(ROOTS.main), []);
    assert.deepEqual(poolCgroups(ROOTS.main), []);
    const l = await leases();
    assert.deepEqual(Object.keys(l).filter((n) => n.startsWith(`${ROOTS.main}-Pool.`)), []);
    // no zygote of this runtime is left
    for (const p of zygotes) {
      const cmd = await fsp.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
      assert.ok(!(cmd.includes('swg-zygote') && cmd.includes(`/${ROOTS.main}/`)), `zygote ${p} still running`);
    }
    // still usable, without a pool
    const s = await spec(rt, 'afterclose', { argv: ['true'], network: { mode: 'bridge' } });
    const h = await rt.start(s);
    assert.equal((await h.wait()).exitCode, 0);
    assert.equal((await readMeta(s.stateDir))!.netns, `${ROOTS.main}-afterclose`);
    assert.deepEqual(poolNetns(ROOTS.main), []);
  });
});
