// The agent with the real sandbox runtime: bwrap, cgroups, a test bridge. Needs root + bubblewrap.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { subjects } from '@shellwego/core';
import type { AssignmentsMessage, InstanceSpec } from '@shellwego/core';
import { InProcessBus } from '@shellwego/bus';
import { createRuntime, detectCgroups, removeBridge, removeCgroupRoot } from '@shellwego/sandbox';
import type { SandboxRuntime } from '@shellwego/sandbox';
import { createAgent } from './agent.ts';
import type { Agent } from './agent.ts';
import { appUid } from './identity.ts';
import { BusRecorder, DirBlobStore, buildArtifact, httpJson, makeSpec, pidAlive } from './testing.ts';

const skip =
  typeof process.getuid !== 'function' || process.getuid() !== 0
    ? 'agent sandbox tests need root'
    : !existsSync('/usr/bin/bwrap')
      ? 'agent sandbox tests need bubblewrap (/usr/bin/bwrap)'
      : false;
if (skip) console.log(`# SKIP agent sandbox tests: ${skip}`);

const rnd = randomBytes(3).toString('hex');
const BRIDGE = `swgt-${rnd}`;
const CIDR = `10.${100 + (parseInt(rnd.slice(0, 2), 16) % 100)}.0.0/16`;
const CG_ROOT = `swgt-agent-${rnd}`;
const ROOT = `/var/tmp/swgt-agent-${rnd}`;
const logger = pino({ level: 'silent' });
const HERE = path.dirname(fileURLToPath(import.meta.url));

let runtime: SandboxRuntime;
let blobs: DirBlobStore;
let digest = '';
const agents: Agent[] = [];

function newAgent(name: string, dataDir = path.join(ROOT, name), nodeId = `nod_${name}`, rt: SandboxRuntime = runtime) {
  const bus = new InProcessBus();
  const rec = new BusRecorder(bus);
  const agent = createAgent({ nodeId, name, bus, blobs, runtime: rt, dataDir, logger, heartbeatMs: 500, statusIntervalMs: 1000, stopGraceMs: 3000 });
  agents.push(agent);
  let generation = 0;
  const assign = async (instances: InstanceSpec[]) => {
    await bus.publish(subjects.assignments(nodeId), { nodeId, generation: ++generation, instances } satisfies AssignmentsMessage);
    await bus.drain();
  };
  return { agent, bus, rec, assign, dataDir, nodeId };
}

function diag(): string {
  const sh = (cmd: string) => {
    try {
      return execFileSync('sh', ['-c', cmd], { encoding: 'utf8' });
    } catch (e) {
      return String(e);
    }
  };
  return [
    sh(`ip -br link show master ${BRIDGE}`),
    sh(`ip neigh show dev ${BRIDGE}`),
    sh(`for n in $(ip netns list | awk '{print $1}' | grep ${CG_ROOT}); do echo "$n: $(ip -n $n -br addr | tr '\\n' ' ')"; done`),
    sh(`cat ${ROOT}/runtime/ipam-${BRIDGE}.json`),
    sh(`find /sys/fs/cgroup/pids/${CG_ROOT} -name cgroup.procs | while read f; do echo "$f $(cat $f | tr '\\n' ' ')"; done`),
  ].join('\n');
}

const pidOf = (agent: Agent, id: string) => agent.instances().find((i) => i.instanceId === id)?.pid ?? null;

describe('agent with the sandbox runtime', { skip }, () => {
  before(async () => {
    await fsp.mkdir(ROOT, { recursive: true, mode: 0o711 });
    blobs = new DirBlobStore(path.join(ROOT, 'blobs'));
    digest = await buildArtifact(ROOT, blobs);
    runtime = await createRuntime({ isolation: 'sandbox', bridge: { name: BRIDGE, cidr: CIDR }, cgroupRoot: CG_ROOT, stateRoot: path.join(ROOT, 'runtime') });
  });

  afterEach(async () => {
    for (const a of agents.splice(0)) await a.stop().catch(() => {});
  });

  after(async () => {
    for (const a of agents.splice(0)) await a.stop().catch(() => {});
    // Whatever a failed test left running (e.g. the instance of the killed agent process).
    for (const agentDir of await fsp.readdir(ROOT).catch(() => [] as string[])) {
      for (const instances of [path.join(ROOT, agentDir, 'instances'), path.join(ROOT, agentDir, 'data', 'instances')]) {
        for (const id of await fsp.readdir(instances).catch(() => [] as string[])) {
          await runtime?.cleanup(id, path.join(instances, id, 'sandbox')).catch(() => {});
        }
      }
    }
    await runtime?.close?.();
    const cg = await detectCgroups();
    if (cg.layout) await removeCgroupRoot(cg.layout, CG_ROOT).catch((e) => console.error('cgroup cleanup:', e));
    await removeBridge(BRIDGE).catch((e) => console.error('bridge cleanup:', e));
    for (const ns of execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n')) {
      const name = ns.split(' ')[0];
      if (name.startsWith(CG_ROOT)) execFileSync('ip', ['netns', 'delete', name]);
    }
    await fsp.rm(ROOT, { recursive: true, force: true });
  });

  it('runs two web instances on their own addresses, streams their logs, stops one cleanly', async () => {
    const { agent, rec, assign } = newAgent('two');
    await agent.start();
    const web1 = makeSpec('ins_web1', digest);
    const web2 = makeSpec('ins_web2', digest, { index: 2 });
    await assign([web1, web2]);
    const [a, b] = await Promise.all([
      rec.untilStatus('ins_web1', (s) => s.state === 'running'),
      rec.untilStatus('ins_web2', (s) => s.state === 'running'),
    ]);
    assert.notEqual(a.address, b.address);
    assert.match(a.address!, /^10\.\d+\.\d+\.\d+:5000$/);
    const r1 = await httpJson(a.address!);
    const r2 = await httpJson(b.address!);
    assert.equal(r1.dyno, 'web.1');
    assert.equal(r2.dyno, 'web.2');
    assert.equal(r1.greeting, 'hello from profile', '.profile.d scripts are sourced');
    assert.equal(r1.home, '/app');
    assert.equal(r1.uid, appUid(web1.appId), 'runs as the app user');

    const line = await rec.until('log line', () => rec.logs.find((l) => l.instanceId === 'ins_web1' && l.line === 'listening on 5000 as web.1'));
    assert.equal(line.source, 'app');
    assert.equal(line.type, 'web.1');

    const pid2 = pidOf(agent, 'ins_web2')!;
    assert.ok(await pidAlive(pid2));
    await assign([web1]);
    await rec.untilStatus('ins_web2', (s) => s.state === 'stopped');
    assert.deepEqual(rec.states('ins_web2').slice(-2), ['stopping', 'stopped']);
    assert.equal(await pidAlive(pid2), false, 'its process is gone');
    await assert.rejects(httpJson(b.address!, '/', 500));
    assert.equal((await httpJson(a.address!)).dyno, 'web.1', 'the other one keeps serving');
    assert.ok(rec.logs.some((l) => l.instanceId === 'ins_web2' && l.line === 'got SIGTERM'), 'SIGTERM first, output drained');
  });

  it('a dataDir below a 0700 directory (mktemp -d): instances start and serve, no permission changes', async () => {
    const closed = await fsp.mkdtemp(path.join(ROOT, 'closed-'));
    await fsp.chmod(closed, 0o700);
    const mode = async (d: string) => (await fsp.stat(d)).mode & 0o7777;
    const rootMode = await mode(ROOT);
    const { agent, rec, assign } = newAgent('closed', path.join(closed, 'data'), 'nod_closed');
    await agent.start();
    await assign([makeSpec('ins_closed', digest)]);
    const up = await rec.untilStatus('ins_closed', (s) => s.state === 'running');
    const r = await httpJson(up.address!);
    assert.equal(r.dyno, 'web.1');
    assert.equal(await mode(closed), 0o700, 'the 0700 parent stays 0700');
    assert.equal(await mode(ROOT), rootMode);
    await assign([]);
    await rec.untilStatus('ins_closed', (s) => s.state === 'stopped');
  });

  it('reports a crash with exit code and last output, then restarts it with backoff', async () => {
    const { agent, rec, assign } = newAgent('crash');
    await agent.start();
    await assign([makeSpec('ins_crash', digest, { processType: 'worker', command: 'echo "about to fail"; exit 3' })]);
    const crashed = await rec.untilStatus('ins_crash', (s) => s.state === 'crashed');
    assert.equal(crashed.exitCode, 3);
    assert.equal(crashed.signal, null);
    assert.equal(crashed.oomKilled, false);
    assert.ok(crashed.restarts >= 1);
    assert.deepEqual(crashed.lastLog, ['about to fail']);
    const again = await rec.untilStatus('ins_crash', (s) => s.state === 'crashed' && s.restarts >= 2);
    assert.equal(again.exitCode, 3);
    assert.ok(rec.states('ins_crash').join(',').startsWith('starting,running,crashed,starting'), rec.states('ins_crash').join(','));
  });

  it('a process over its memory limit is reported as OOM-killed', async () => {
    const { agent, rec, assign } = newAgent('oom');
    await agent.start();
    const hog = `node -e "const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1))"`;
    await assign([makeSpec('ins_oom', digest, { processType: 'worker', command: hog, limits: { memoryMb: 64, cpus: 1, pids: 64 } })]);
    const crashed = await rec.untilStatus('ins_oom', (s) => s.state === 'crashed');
    assert.equal(crashed.oomKilled, true);
    assert.equal(crashed.signal, 'SIGKILL');
  });

  it('a restart command (new restartGeneration) replaces the process', async () => {
    const { agent, rec, assign } = newAgent('restart');
    await agent.start();
    const spec = makeSpec('ins_rs', digest);
    await assign([spec]);
    const up = await rec.untilStatus('ins_rs', (s) => s.state === 'running');
    const first = await httpJson(up.address!);
    const n = rec.statuses.length;
    await assign([{ ...spec, restartGeneration: 1 }]);
    const again = await rec.untilStatus('ins_rs', (s) => s.state === 'running' && s.restartGeneration === 1, undefined, n);
    const second = await httpJson(again.address!);
    assert.notEqual(second.started, first.started);
    assert.equal(again.restarts, 0);
  });

  it('a restarted agent adopts running instances without restarting them, then manages them', async () => {
    const one = newAgent('adopt');
    await one.agent.start();
    const spec = makeSpec('ins_keep', digest);
    await one.assign([spec]);
    const up = await one.rec.untilStatus('ins_keep', (s) => s.state === 'running');
    const before = await httpJson(up.address!);
    const hostPid = pidOf(one.agent, 'ins_keep')!;
    await one.rec.until('first log line', () => one.rec.logs.find((l) => l.line.startsWith('listening')));
    // What `kill -9` of the platform would do to the agent: it just goes away.
    await one.agent.stop({ leaveRunning: true });
    assert.ok(await pidAlive(hostPid));
    assert.deepEqual(await httpJson(up.address!), { ...before }, 'still serving while no agent runs');

    const two = newAgent('adopt', one.dataDir, one.nodeId);
    await two.agent.start();
    const adopted = await two.rec.untilStatus('ins_keep', (s) => s.state === 'running');
    assert.equal(adopted.address, up.address);
    assert.equal(pidOf(two.agent, 'ins_keep'), hostPid, 'same process');
    await two.assign([spec]);
    await new Promise((r) => setTimeout(r, 300));
    const after = await httpJson(up.address!, '/after-adoption');
    assert.equal(after.started, before.started, 'not restarted');
    assert.equal(two.agent.instances()[0].state, 'running');
    // Logs continue from where agent one stopped: new lines arrive, old ones are not sent again.
    await two.rec.until('new log line', () => two.rec.logs.find((l) => l.line === 'request /after-adoption'));
    assert.ok(!two.rec.logs.some((l) => l.line.startsWith('listening')), 'old lines are not resent');

    await two.assign([]);
    await two.rec.untilStatus('ins_keep', (s) => s.state === 'stopped');
    assert.equal(await pidAlive(hostPid), false);
  });

  it('survives a real kill -9 of the process running the agent', async () => {
    const dataDir = path.join(ROOT, 'kill9');
    const nodeId = 'nod_kill9';
    const url = (p: string) => JSON.stringify(pathToFileURL(path.resolve(HERE, p)).href);
    const script = `
      import { createAgent } from ${url('agent.ts')};
      import { DirBlobStore, makeSpec } from ${url('testing.ts')};
      import { InProcessBus } from ${url('../../bus/src/index.ts')};
      import { createRuntime } from ${url('../../sandbox/src/index.ts')};
      import { pino } from 'pino';
      const runtime = await createRuntime(${JSON.stringify({ isolation: 'sandbox', bridge: { name: BRIDGE, cidr: CIDR }, cgroupRoot: CG_ROOT, stateRoot: path.join(ROOT, 'runtime') })});
      const bus = new InProcessBus();
      bus.subscribe('agent.*.status', (m) => { if (m.state === 'running') console.log('STATUS ' + JSON.stringify(m)); else console.error(JSON.stringify(m)); });
      const agent = createAgent({ nodeId: '${nodeId}', name: 'kill9', bus, blobs: new DirBlobStore(${JSON.stringify(path.join(ROOT, 'blobs'))}), runtime, dataDir: ${JSON.stringify(dataDir)}, logger: pino({ level: 'info' }, pino.destination(2)) });
      await agent.start();
      await bus.publish('agent.${nodeId}.assignments', { nodeId: '${nodeId}', generation: 1, instances: [makeSpec('ins_k9', '${digest}')] });
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: path.resolve(HERE, '../../..'), stdio: ['ignore', 'pipe', 'pipe'] });
    let childErr = '';
    child.stderr!.on('data', (d) => (childErr += String(d)));
    const running = await new Promise<{ address: string }>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => {
        reject(new Error(`agent process did not report running: ${childErr}\n${diag()}`));
        child.kill('SIGKILL');
      }, 20_000);
      child.stdout!.on('data', (d) => {
        out += String(d);
        const line = out.split('\n').find((l, i, all) => l.startsWith('STATUS ') && i < all.length - 1);
        if (!line) return;
        clearTimeout(timer);
        resolve(JSON.parse(line.slice(7)));
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`agent process exited early (${code}): ${childErr}`));
      });
    });
    const before = await httpJson(running.address).finally(() => child.kill('SIGKILL'));
    await new Promise((r) => child.once('exit', r));
    assert.deepEqual(await httpJson(running.address), before, 'the app outlives the agent');

    // The restarted platform builds a new runtime (which also reclaims what the dead one held).
    const runtime2 = await createRuntime({ isolation: 'sandbox', bridge: { name: BRIDGE, cidr: CIDR }, cgroupRoot: CG_ROOT, stateRoot: path.join(ROOT, 'runtime') });
    const { agent, rec, assign } = newAgent('kill9', dataDir, nodeId, runtime2);
    try {
      await agent.start();
      const adopted = await rec.untilStatus('ins_k9', (s) => s.state === 'running');
      assert.equal(adopted.address, running.address);
      await assign([makeSpec('ins_k9', digest)]);
      assert.equal((await httpJson(running.address)).started, before.started, 'same process, not restarted');
      await assign([]);
      await rec.untilStatus('ins_k9', (s) => s.state === 'stopped');
    } finally {
      await agent.stop();
      await runtime2.close?.();
    }
  });
});
