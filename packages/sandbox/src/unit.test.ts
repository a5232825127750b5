// Pure unit tests (no root needed): parsing, CIDR math, IP allocation, cgroup detection.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { detectCgroups, cgroupRef, cgroupDirs, procsFiles, cpuQuotaUs, validateCgroupRoot } from './cgroups.ts';
import { Ipam, POOL_LEASE, bridgeMac, parseCidr, intToIp, vethName } from './net.ts';
import { parseStatus, signalFromStatus } from './util.ts';

describe('status file parsing', () => {
  it('reads child-pid and exit-code from the bwrap json stream', () => {
    const t = '{ "child-pid": 3618, "pid-namespace": 4026532181 }\n{ "exit-code": 3 }\n';
    assert.deepEqual(parseStatus(t), { childPid: 3618, exitCode: 3 });
  });
  it('tolerates a partially written record', () => {
    assert.deepEqual(parseStatus('{ "child-pid": 12 }\n{ "exit-co'), { childPid: 12, exitCode: null });
    assert.deepEqual(parseStatus(''), { childPid: null, exitCode: null });
  });
  it('maps 128+N to signal names', () => {
    assert.equal(signalFromStatus(137), 'SIGKILL');
    assert.equal(signalFromStatus(143), 'SIGTERM');
    assert.equal(signalFromStatus(3), null);
    assert.equal(signalFromStatus(128), null);
    assert.equal(signalFromStatus(null), null);
  });
});

describe('CIDR math', () => {
  it('computes gateway and host range', () => {
    const c = parseCidr('10.89.3.7/16');
    assert.equal(c.cidr, '10.89.0.0/16');
    assert.equal(intToIp(c.gateway), '10.89.0.1');
    assert.equal(intToIp(c.first), '10.89.0.2');
    assert.equal(intToIp(c.last), '10.89.255.254');
  });
  it('rejects nonsense', () => {
    assert.throws(() => parseCidr('10.89.0.0'), /invalid CIDR/);
    assert.throws(() => parseCidr('10.89.0.0/31'), /prefix/);
    assert.throws(() => parseCidr('300.1.1.1/24'), /invalid IPv4/);
  });
  it('derives a stable, locally administered unicast MAC for the bridge', () => {
    assert.equal(bridgeMac('swg0'), bridgeMac('swg0'));
    assert.notEqual(bridgeMac('swg0'), bridgeMac('swg1'));
    assert.match(bridgeMac('swg0'), /^02(:[0-9a-f]{2}){5}$/);
  });
  it('derives short deterministic veth names', () => {
    assert.equal(vethName('shellwego-i1'), vethName('shellwego-i1'));
    assert.notEqual(vethName('shellwego-i1'), vethName('shellwego-i2'));
    assert.ok(vethName('x'.repeat(200)).length <= 15);
  });
});

describe('IP allocation', () => {
  it('allocates distinct addresses, persists them and reuses released/stale ones', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'swg-ipam-'));
    try {
      const live = new Set<string>(['ns-a', 'ns-b', 'ns-c']);
      const isLive = async (n: string) => live.has(n);
      const ipam = new Ipam(dir, 'br0', '10.50.0.0/29', isLive);
      assert.equal(await ipam.allocate('ns-a', 'a'), '10.50.0.2');
      assert.equal(await ipam.allocate('ns-b', 'b'), '10.50.0.3');
      assert.equal(await ipam.allocate('ns-a', 'a'), '10.50.0.2', 'same netns keeps its address');
      // a new Ipam object (restarted process) sees the persisted leases
      const again = new Ipam(dir, 'br0', '10.50.0.0/29', isLive);
      assert.equal(await again.allocate('ns-c', 'c'), '10.50.0.4');
      await again.release('ns-b');
      live.add('ns-d');
      assert.equal(await again.allocate('ns-d', 'd'), '10.50.0.3', 'released address is reused');
      // a lease whose netns vanished (crash between netns delete and release) is reclaimed
      live.delete('ns-a');
      live.add('ns-e');
      assert.equal(await again.allocate('ns-e', 'e'), '10.50.0.2');
      // concurrent allocations never collide
      const names = ['p1', 'p2'];
      for (const n of names) live.add(n);
      const ips = await Promise.all(names.map((n) => again.allocate(n, n)));
      assert.equal(new Set(ips).size, 2);
      live.add('p3');
      await assert.rejects(again.allocate('p3', 'p3'), /no free address/);
      // pooled networks: leased as POOL_LEASE, relabelled when handed to a sandbox
      await again.release('p1');
      live.add('pool-1');
      const ip = await again.allocate('pool-1', POOL_LEASE);
      await again.relabel('pool-1', 'web');
      assert.deepEqual((await again.leases())['pool-1'], { ...(await again.leases())['pool-1'], id: 'web', ip });
      await again.release('pool-1');
      await again.relabel('pool-1', 'late'); // after release: must not resurrect the lease
      assert.equal((await again.leases())['pool-1'], undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('cgroup detection', () => {
  const files = (m: Record<string, string>) => async (p: string) => m[p] ?? null;

  it('pure v2', async () => {
    const mounts = 'cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n';
    const r = await detectCgroups(mounts, files({ '/sys/fs/cgroup/cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma\n' }));
    assert.equal(r.version, 'v2');
    const ref = cgroupRef(r.layout!, 'shellwego', 'i1');
    assert.deepEqual(cgroupDirs(ref), ['/sys/fs/cgroup/shellwego/i1']);
    assert.deepEqual(procsFiles(ref), ['/sys/fs/cgroup/shellwego/i1/cgroup.procs']);
  });

  it('v2 without the pids controller is reported, not used', async () => {
    const mounts = 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n';
    const r = await detectCgroups(mounts, files({ '/sys/fs/cgroup/cgroup.controllers': 'cpu memory\n' }));
    assert.equal(r.version, 'none');
    assert.match(r.reason!, /pids/);
  });

  it('hybrid (v1 controllers + empty unified mount) is v1, separate cpu/cpuacct', async () => {
    const mounts = [
      'tmpfs /sys/fs/cgroup tmpfs rw 0 0',
      'cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0',
      'cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0',
      'cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0',
      'cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0',
      'cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0',
    ].join('\n');
    const r = await detectCgroups(mounts + '\ncgroup /sys/fs/cgroup/systemd cgroup rw,xattr,name=systemd 0 0', files({ '/sys/fs/cgroup/unified/cgroup.controllers': '\n' }));
    assert.equal(r.version, 'v1');
    const ref = cgroupRef(r.layout!, 'shellwego', 'i1');
    assert.deepEqual(cgroupDirs(ref).sort(), [
      '/sys/fs/cgroup/cpu/shellwego/i1',
      '/sys/fs/cgroup/cpuacct/shellwego/i1',
      '/sys/fs/cgroup/memory/shellwego/i1',
      '/sys/fs/cgroup/pids/shellwego/i1',
      '/sys/fs/cgroup/systemd/shellwego/i1', // placement only: leave the agent's service cgroup
      '/sys/fs/cgroup/unified/shellwego/i1',
    ]);
  });

  it('co-mounted cpu,cpuacct v1 shares one directory', async () => {
    const mounts = [
      'cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0',
      'cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0',
      'cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0',
    ].join('\n');
    const r = await detectCgroups(mounts, files({}));
    assert.equal(r.version, 'v1');
    assert.equal(cgroupDirs(cgroupRef(r.layout!, 'a/b', 'x')).length, 3);
  });

  it('v1 without pids is reported as missing', async () => {
    const mounts = 'cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n';
    const r = await detectCgroups(mounts, files({}));
    assert.equal(r.version, 'none');
    assert.match(r.reason!, /pids/);
  });

  it('cpu quota and root validation', () => {
    assert.equal(cpuQuotaUs(0.5), 50_000);
    assert.equal(cpuQuotaUs(2), 200_000);
    assert.equal(cpuQuotaUs(0.001), 1000);
    assert.equal(validateCgroupRoot('shellwego/x'), 'shellwego/x');
    assert.throws(() => validateCgroupRoot('../etc'), /invalid cgroupRoot/);
    assert.throws(() => validateCgroupRoot(''), /invalid cgroupRoot/);
  });
});
