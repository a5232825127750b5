// The agent's control loop against a small fake runtime (no processes): ordering, idempotence,
// crash backoff, replacement, invalid input, hand-over between agents. Real processes are
// exercised in sandbox.test.ts and none.test.ts.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { splitAssignments, subjects } from '@shellwego/core';
import type { AssignmentsMessage, InstanceSpec } from '@shellwego/core';
import { InProcessBus } from '@shellwego/bus';
import type { SandboxExit, SandboxHandle, SandboxRuntime, SandboxSpec } from '@shellwego/sandbox';
import { createAgent } from './agent.ts';
import { defaultSecretsDir } from './secrets.ts';
import type { Agent } from './agent.ts';
import { BusRecorder, DirBlobStore, buildArtifact, makeSpec } from './testing.ts';

/** A pretend process: `listen` serves $PORT, `crash N` exits N, `hang` does nothing. */
class FakeProcess {
  exit: SandboxExit | null = null;
  private resolveExit!: (e: SandboxExit) => void;
  readonly exited = new Promise<SandboxExit>((r) => (this.resolveExit = r));
  server: net.Server | null = null;

  constructor(
    readonly spec: SandboxSpec,
    readonly pid: number,
  ) {}

  end(e: SandboxExit): void {
    if (this.exit) return;
    this.exit = e;
    this.server?.close();
    this.resolveExit(e);
  }
}

class FakeRuntime implements SandboxRuntime {
  readonly isolation = 'none' as const;
  /** Survives agents, like real processes do. */
  procs = new Map<string, FakeProcess>();
  starts: SandboxSpec[] = [];
  private nextPid = 1000;

  async start(spec: SandboxSpec): Promise<SandboxHandle> {
    const running = this.procs.get(spec.id);
    if (running && !running.exit) throw new Error(`sandbox ${spec.id} is already running`);
    this.starts.push(spec);
    const p = new FakeProcess(spec, this.nextPid++);
    this.procs.set(spec.id, p);
    const command = spec.argv[2].slice(spec.argv[2].lastIndexOf('done; ') + 6).replace(/^exec /, '');
    await fsp.appendFile(spec.logFile, `start ${command}\n`);
    const [verb, arg] = command.split(' ');
    if (verb === 'listen') {
      p.server = net.createServer((s) => s.end());
      await new Promise<void>((r) => p.server!.listen(Number(spec.env.PORT), '127.0.0.1', () => r()));
    } else if (verb === 'crash') {
      setTimeout(() => {
        void fsp.appendFile(spec.logFile, `dying with ${arg}\n`).then(() => p.end({ exitCode: Number(arg), signal: null, oomKilled: false }));
      }, 20);
    }
    return this.handle(p);
  }

  private handle(p: FakeProcess): SandboxHandle {
    return {
      id: p.spec.id,
      pid: p.pid,
      ip: '127.0.0.1',
      startedAt: new Date().toISOString(),
      wait: () => p.exited,
      kill: async (signal: NodeJS.Signals = 'SIGTERM') => {
        p.end({ exitCode: signal === 'SIGKILL' ? 137 : 143, signal, oomKilled: false });
      },
      stats: async () => ({ memoryBytes: null, cpuUsageNs: null }),
    };
  }

  async adopt(id: string): Promise<SandboxHandle | null> {
    const p = this.procs.get(id);
    return p && !p.exit ? this.handle(p) : null;
  }

  async cleanup(id: string): Promise<void> {
    this.procs.get(id)?.end({ exitCode: 137, signal: 'SIGKILL', oomKilled: false });
  }

  alive(): FakeProcess[] {
    return [...this.procs.values()].filter((p) => !p.exit);
  }
}

const logger = pino({ level: 'silent' });
let work = '';
let digest = '';
let blobs: DirBlobStore;
const agents: Agent[] = [];

before(async () => {
  // 0700, as mkdtemp makes it: the agent must not mind (the sandbox reaches /app on its own).
  work = await mkdtemp(path.join(tmpdir(), 'swg-agent-fake-'));
  blobs = new DirBlobStore(path.join(work, 'blobs'));
  digest = await buildArtifact(work, blobs);
});
after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});
afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop().catch(() => {});
});

function setup(name: string, runtime = new FakeRuntime(), extra: Partial<Parameters<typeof createAgent>[0]> = {}) {
  const bus = new InProcessBus();
  const rec = new BusRecorder(bus);
  const nodeId = `nod_${name}`;
  const dataDir = path.join(work, name);
  const secretsDir = path.join(work, `${name}-secrets`);
  const agent = createAgent({
    nodeId, name, bus, blobs, runtime, dataDir, secretsDir, logger, heartbeatMs: 200, stopGraceMs: 500, statusIntervalMs: 300,
    backoff: { initialMs: 100, maxMs: 400, resetAfterMs: 60_000 }, ...extra,
  });
  agents.push(agent);
  let generation = 0;
  const assign = async (instances: InstanceSpec[], gen = ++generation) => {
    await bus.publish(subjects.assignments(nodeId), { nodeId, generation: gen, instances } satisfies AssignmentsMessage);
    await bus.drain();
  };
  return { bus, rec, agent, runtime, assign, dataDir, secretsDir, nodeId };
}

describe('agent (fake runtime)', () => {
  it('starts assigned instances, reports starting → running with an address, heartbeats', async () => {
    const { rec, agent, assign } = setup('basic');
    await agent.start();
    await assign([makeSpec('ins_a', digest, { command: 'listen' }), makeSpec('ins_w', digest, { command: 'hang', processType: 'worker' })]);
    const up = await rec.untilStatus('ins_a', (s) => s.state === 'running');
    assert.match(up.address!, /^127\.0\.0\.1:\d+$/);
    assert.deepEqual(rec.states('ins_a').slice(0, 2), ['starting', 'running']);
    const worker = await rec.untilStatus('ins_w', (s) => s.state === 'running');
    assert.equal(worker.address, null, 'only web processes have an address');
    await rec.until('heartbeat', () => rec.heartbeats >= 2);
    assert.deepEqual(agent.instances().map((i) => i.state).sort(), ['running', 'running']);
  });

  it('starts with a dataDir below a 0700 directory and changes no directory above its own', async () => {
    const closed = await mkdtemp(path.join(work, 'closed-'));
    await fsp.chmod(closed, 0o700);
    const ancestors = (d: string): string[] => (d === '/' ? ['/'] : [d, ...ancestors(path.dirname(d))]);
    const modes = async () => Promise.all(ancestors(closed).map(async (d) => [d, (await fsp.stat(d)).mode & 0o7777]));
    const before = await modes();
    const { rec, agent, assign } = setup('closed', undefined, { dataDir: path.join(closed, 'data') });
    await agent.start();
    await assign([makeSpec('ins_c', digest, { command: 'listen' })]);
    await rec.untilStatus('ins_c', (s) => s.state === 'running');
    assert.deepEqual(await modes(), before);
    assert.equal((await fsp.stat(closed)).mode & 0o777, 0o700);
  });

  it('acts on an assignment set that came in chunks only once every chunk arrived', async () => {
    const { bus, rec, agent, runtime, nodeId } = setup('chunks');
    await agent.start();
    const specs = ['ins_c1', 'ins_c2', 'ins_c3'].map((id) => makeSpec(id, digest, { command: 'listen' }));
    // A tiny limit makes three instances three chunks, as thousands would be at the real one.
    const parts = splitAssignments({ nodeId, generation: 1, instances: specs }, Buffer.byteLength(JSON.stringify(specs[0])) + 400);
    assert.equal(parts.length, 3);
    for (const p of parts.slice(0, 2)) await bus.publish(subjects.assignments(nodeId), p);
    await bus.drain();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(runtime.starts.length, 0, 'nothing runs from part of a set');
    await bus.publish(subjects.assignments(nodeId), parts[2]);
    await bus.drain();
    for (const s of specs) await rec.untilStatus(s.instanceId, (x) => x.state === 'running');
    assert.equal(runtime.alive().length, 3);
  });

  it('ignores stale generations and duplicate messages', async () => {
    const { rec, agent, runtime, assign } = setup('gens');
    await agent.start();
    const a = makeSpec('ins_a', digest, { command: 'listen' });
    await assign([a], 10);
    await rec.untilStatus('ins_a', (s) => s.state === 'running');
    await assign([a], 10);
    await assign([a], 10);
    await assign([], 5); // older: must not stop anything
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(runtime.starts.length, 1);
    assert.equal(runtime.alive().length, 1);
    await assign([], 11);
    await rec.untilStatus('ins_a', (s) => s.state === 'stopped');
    assert.equal(runtime.alive().length, 0);
  });

  it('a crashing instance is reported with exit code and last log lines, restarted with growing backoff', async () => {
    const { rec, agent, runtime, assign } = setup('crash');
    await agent.start();
    await assign([makeSpec('ins_c', digest, { command: 'crash 3', processType: 'worker' })]);
    const first = await rec.untilStatus('ins_c', (s) => s.state === 'crashed');
    assert.equal(first.exitCode, 3);
    assert.equal(first.restarts, 1);
    assert.deepEqual(first.lastLog, ['start crash 3', 'dying with 3']);
    await rec.untilStatus('ins_c', (s) => s.state === 'crashed' && s.restarts >= 4);
    const starts = runtime.starts.filter((s) => s.id === 'ins_c').length;
    assert.ok(starts >= 4);
    // Backoff: 100, 200, 400, 400 ms between crash and restart.
    // First report of each crash (the periodic full report repeats them).
    const crashes = [1, 2, 3].map((n) => Date.parse(rec.of('ins_c').find((s) => s.state === 'crashed' && s.restarts === n)!.at));
    const restarts = rec.of('ins_c').filter((s) => s.state === 'starting').map((s) => Date.parse(s.at));
    const gaps = crashes.map((c) => restarts.find((r) => r >= c)! - c);
    assert.ok(gaps[0] >= 90 && gaps[1] >= 190 && gaps[2] >= 390, `backoff gaps ${gaps}`);
  });

  it('replaces the process when restartGeneration changes, and not otherwise', async () => {
    const { rec, agent, runtime, assign } = setup('replace');
    await agent.start();
    const a = makeSpec('ins_r', digest, { command: 'listen' });
    await assign([a]);
    await rec.untilStatus('ins_r', (s) => s.state === 'running');
    const n = rec.statuses.length;
    await assign([{ ...a, appName: 'renamed' }]);
    await assign([{ ...a, restartGeneration: 1 }]);
    const up = await rec.untilStatus('ins_r', (s) => s.state === 'running', undefined, n);
    assert.equal(up.restartGeneration, 1);
    assert.equal(up.restarts, 0, 'a restart command is not a crash');
    assert.equal(runtime.starts.filter((s) => s.id === 'ins_r').length, 2);
    assert.equal(runtime.alive().length, 1);
    assert.deepEqual(rec.states('ins_r'), ['starting', 'running', 'starting', 'running']);
  });

  it('stops unassigned instances (stopping → stopped, directory removed) and keeps re-reporting them', async () => {
    const { rec, agent, runtime, assign, dataDir } = setup('stop');
    await agent.start();
    await assign([makeSpec('ins_s', digest, { command: 'listen' })]);
    await rec.untilStatus('ins_s', (s) => s.state === 'running');
    await assign([]);
    const stopped = await rec.untilStatus('ins_s', (s) => s.state === 'stopped');
    assert.equal(stopped.signal, 'SIGTERM');
    assert.deepEqual(rec.states('ins_s').slice(-2), ['stopping', 'stopped']);
    assert.equal(runtime.alive().length, 0);
    await assert.rejects(fsp.stat(path.join(dataDir, 'instances', 'ins_s')));
    const n = rec.statuses.length;
    await rec.untilStatus('ins_s', (s) => s.state === 'stopped', 2000, n); // periodic full report
    assert.equal(agent.instances().length, 0);
  });

  it('web process that never listens is killed after the boot timeout and counted as a crash', async () => {
    const { rec, agent, assign } = setup('boot', undefined, { bootTimeoutMs: 300 });
    await agent.start();
    await assign([makeSpec('ins_b', digest, { command: 'hang' })]);
    const crashed = await rec.untilStatus('ins_b', (s) => s.state === 'crashed');
    assert.match(crashed.lastLog!.at(-1)!, /web\.1 did not listen on \$PORT within 0.3s/);
    assert.equal(crashed.signal, 'SIGKILL');
    await rec.until('boot log line', () => rec.logs.find((l) => l.source === 'platform' && /did not listen/.test(l.line)));
  });

  it('refuses unsafe assignments with a crashed report, without touching the disk', async () => {
    const { rec, agent, runtime, assign, dataDir } = setup('bad');
    await agent.start();
    await assign([makeSpec('ins_bad', '../../etc', { command: 'listen' })]);
    const s = await rec.untilStatus('ins_bad', (x) => x.state === 'crashed');
    assert.match(s.lastLog![0], /artifactDigest/);
    assert.equal(runtime.starts.length, 0);
    assert.deepEqual(await fsp.readdir(path.join(dataDir, 'instances')), []);
  });

  it('an artifact that cannot be fetched is a crash with the reason, retried with backoff', async () => {
    const { rec, agent, assign } = setup('noartifact');
    await agent.start();
    await assign([makeSpec('ins_x', 'f'.repeat(64), { command: 'listen' })]);
    const s = await rec.untilStatus('ins_x', (x) => x.state === 'crashed' && x.restarts >= 2);
    assert.match(s.lastLog!.join('\n'), /failed to start: cannot fetch artifact f{64}/);
  });

  it('hands over to a new agent: leaveRunning keeps processes, the next agent adopts them without a restart', async () => {
    const runtime = new FakeRuntime();
    const one = setup('handover', runtime);
    await one.agent.start();
    await one.assign([makeSpec('ins_h', digest, { command: 'listen' }), makeSpec('ins_gone', digest, { command: 'listen', index: 2 })]);
    const before = await one.rec.untilStatus('ins_h', (s) => s.state === 'running');
    await one.rec.untilStatus('ins_gone', (s) => s.state === 'running');
    await one.agent.stop({ leaveRunning: true });
    assert.equal(runtime.alive().length, 2);
    // While nobody watched, one of them died.
    runtime.procs.get('ins_gone')!.end({ exitCode: 1, signal: null, oomKilled: false });

    const bus = new InProcessBus();
    const rec = new BusRecorder(bus);
    const two = createAgent({ nodeId: one.nodeId, name: 'handover', bus, blobs, runtime, dataDir: one.dataDir, secretsDir: one.secretsDir, logger, heartbeatMs: 200, statusIntervalMs: 300, backoff: { initialMs: 100, maxMs: 400, resetAfterMs: 60_000 } });
    agents.push(two);
    await two.start();
    const adopted = await rec.untilStatus('ins_h', (s) => s.state === 'running');
    assert.equal(adopted.address, before.address);
    assert.equal(two.instances().find((i) => i.instanceId === 'ins_h')!.pid, runtime.procs.get('ins_h')!.pid);
    assert.equal(runtime.starts.filter((s) => s.id === 'ins_h').length, 1, 'not restarted');
    const crashed = await rec.untilStatus('ins_gone', (s) => s.state === 'crashed');
    assert.equal(crashed.restarts, 1);
    await rec.untilStatus('ins_gone', (s) => s.state === 'running');
    assert.deepEqual(rec.states('ins_gone').slice(0, 3), ['crashed', 'starting', 'running'], 'the first report is already the truth');
    await bus.publish(subjects.assignments(one.nodeId), { nodeId: one.nodeId, generation: 1, instances: [makeSpec('ins_gone', digest, { command: 'listen', index: 2 })] });
    await rec.untilStatus('ins_h', (s) => s.state === 'stopped');
    assert.equal(runtime.alive().length, 1);
  });
});

describe('instance env (secrets) never on disk with the record', () => {
  const CANARY = 'canary-6b1f0c9e2d';
  const secretSpec = (id: string) => makeSpec(id, digest, { command: 'listen', env: { NODE_ENV: 'production', SECRET_TOKEN: CANARY } });
  const recordFile = (dataDir: string, id: string) => path.join(dataDir, 'instances', id, 'instance.json');
  const envFile = (secretsDir: string, id: string) => path.join(secretsDir, 'env', `${id}.json`);

  /** Agent one runs `id`, then goes away leaving it running; returns what agent two needs. */
  async function runThenLeave(name: string, id: string) {
    const runtime = new FakeRuntime();
    const one = setup(name, runtime);
    await one.agent.start();
    await one.assign([secretSpec(id)]);
    await one.rec.untilStatus(id, (s) => s.state === 'running');
    await one.agent.stop({ leaveRunning: true });
    const next = () => setup(name, runtime, { secretsDir: one.secretsDir });
    return { one, runtime, next };
  }

  it('the default secrets directory is per agent under /run/shellwego', () => {
    assert.match(defaultSecretsDir('/var/lib/shellwego/agent'), /^\/run\/shellwego\/agent-[0-9a-f]{16}$/);
    assert.notEqual(defaultSecretsDir('/a'), defaultSecretsDir('/b'));
  });

  it('instance.json holds no env; the env is a 0600 file in a 0700 secretsDir, removed on stop', async () => {
    const { rec, agent, assign, dataDir, secretsDir, runtime } = setup('envfile');
    await agent.start();
    await assign([secretSpec('ins_e')]);
    await rec.untilStatus('ins_e', (s) => s.state === 'running');
    assert.equal(runtime.starts[0].env.SECRET_TOKEN, CANARY, 'the process gets its env');
    const text = await fsp.readFile(recordFile(dataDir, 'ins_e'), 'utf8');
    assert.ok(!text.includes(CANARY), 'instance.json holds no value');
    assert.equal(JSON.parse(text).spec.env, undefined);
    const st = await fsp.stat(envFile(secretsDir, 'ins_e'));
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal((await fsp.stat(path.join(secretsDir, 'env'))).mode & 0o777, 0o700);
    assert.equal((await fsp.stat(secretsDir)).mode & 0o777, 0o700);
    assert.deepEqual(JSON.parse(await fsp.readFile(envFile(secretsDir, 'ins_e'), 'utf8')), secretSpec('ins_e').env);
    await assign([]);
    await rec.untilStatus('ins_e', (s) => s.state === 'stopped');
    await assert.rejects(fsp.stat(envFile(secretsDir, 'ins_e')), 'env file removed with the instance');
  });

  it('a restarted agent restores the env: the adopted instance equals its assignment and is not replaced', async () => {
    const { runtime, next } = await runThenLeave('envadopt', 'ins_a');
    const two = next();
    await two.agent.start();
    await two.rec.untilStatus('ins_a', (s) => s.state === 'running');
    await two.assign([secretSpec('ins_a')]);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(runtime.starts.length, 1, 'not restarted');
    // It crashes: restarted at once with its restored env, no assignment needed.
    runtime.procs.get('ins_a')!.end({ exitCode: 1, signal: null, oomKilled: false });
    await two.rec.untilStatus('ins_a', (s) => s.state === 'running' && s.restarts === 1);
    assert.equal(runtime.starts.length, 2);
    assert.equal(runtime.starts[1].env.SECRET_TOKEN, CANARY);
  });

  it('env file gone (reboot cleared /run): never started with an empty env, waits for its assignment', async () => {
    const { one, runtime, next } = await runThenLeave('envlost', 'ins_l');
    runtime.procs.get('ins_l')!.end({ exitCode: null, signal: 'SIGKILL', oomKilled: false });
    await fsp.rm(path.join(one.secretsDir, 'env'), { recursive: true });
    const two = next();
    await two.agent.start();
    await two.rec.untilStatus('ins_l', (s) => s.state === 'crashed');
    await new Promise((r) => setTimeout(r, 600)); // several backoff periods
    assert.equal(runtime.starts.length, 1, 'not restarted without its env');
    await two.assign([secretSpec('ins_l')]);
    await two.rec.untilStatus('ins_l', (s) => s.state === 'running');
    assert.equal(runtime.starts.length, 2);
    assert.equal(runtime.starts[1].env.SECRET_TOKEN, CANARY, 'started with the assigned env');
    assert.equal(JSON.parse(await fsp.readFile(envFile(one.secretsDir, 'ins_l'), 'utf8')).SECRET_TOKEN, CANARY);
  });

  it('env file gone but the process still runs: adopted, then kept (not replaced) when its assignment arrives', async () => {
    const { one, runtime, next } = await runThenLeave('envlostlive', 'ins_v');
    await fsp.rm(envFile(one.secretsDir, 'ins_v'));
    const two = next();
    await two.agent.start();
    await two.rec.untilStatus('ins_v', (s) => s.state === 'running');
    await two.assign([secretSpec('ins_v')]);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(runtime.starts.length, 1, 'not replaced');
    assert.equal(JSON.parse(await fsp.readFile(envFile(one.secretsDir, 'ins_v'), 'utf8')).SECRET_TOKEN, CANARY);
  });

  it('loads a record of the previous version (env inline) and moves the env out of it', async () => {
    const { one, runtime, next } = await runThenLeave('envlegacy', 'ins_o');
    const file = recordFile(one.dataDir, 'ins_o');
    const legacy = JSON.parse(await fsp.readFile(file, 'utf8'));
    legacy.spec.env = secretSpec('ins_o').env;
    await fsp.writeFile(file, JSON.stringify(legacy, null, 2), { mode: 0o600 });
    await fsp.rm(path.join(one.secretsDir, 'env'), { recursive: true });
    const two = next();
    await two.agent.start();
    await two.rec.untilStatus('ins_o', (s) => s.state === 'running');
    assert.ok(!(await fsp.readFile(file, 'utf8')).includes(CANARY), 'rewritten without the env');
    assert.deepEqual(JSON.parse(await fsp.readFile(envFile(one.secretsDir, 'ins_o'), 'utf8')), secretSpec('ins_o').env);
    await two.assign([secretSpec('ins_o')]);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(runtime.starts.length, 1, 'not replaced');
  });

  it('drops env files of instances that no longer exist', async () => {
    const { secretsDir, agent } = setup('envorphan');
    await fsp.mkdir(path.join(secretsDir, 'env'), { recursive: true, mode: 0o700 });
    await fsp.writeFile(envFile(secretsDir, 'ins_ghost'), JSON.stringify({ SECRET_TOKEN: CANARY }), { mode: 0o600 });
    await agent.start();
    await assert.rejects(fsp.stat(envFile(secretsDir, 'ins_ghost')));
  });
});
