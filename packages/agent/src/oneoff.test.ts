// One-off processes on the agent: validation (pure) and real runs in the sandbox (root + bubblewrap).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { pino } from 'pino';
import { subjects } from '@shellwego/core';
import type { OneOffInputMessage, OneOffOutputMessage, OneOffStartMessage } from '@shellwego/core';
import { InProcessBus } from '@shellwego/bus';
import { createRuntime, detectCgroups, removeBridge, removeCgroupRoot } from '@shellwego/sandbox';
import type { ManagedSandboxRuntime } from '@shellwego/sandbox';
import { createAgent } from './agent.ts';
import type { Agent } from './agent.ts';
import { oneOffArgv, startProblem } from './oneoff.ts';
import { DirBlobStore, buildArtifact, makeSpec } from './testing.ts';

function startMsg(sessionId: string, digest: string, command: string, over: Partial<OneOffStartMessage> = {}): OneOffStartMessage {
  return {
    sessionId, tty: false, cols: 80, rows: 24, idleTimeoutMs: 30_000,
    spec: makeSpec(sessionId, digest, { processType: 'run', command, env: { SOMECONFIG: 'configured-value' } }),
    ...over,
  };
}

describe('one-off start messages', () => {
  it('accepts a valid message and names what is wrong with a bad one', () => {
    const ok = startMsg('run-abcdef012345', 'a'.repeat(64), 'echo hi');
    assert.equal(startProblem(ok), null);
    assert.match(startProblem({ ...ok, sessionId: 'Bad.Id' })!, /invalid session id/);
    assert.match(startProblem({ ...ok, spec: { ...ok.spec, instanceId: 'run-other0000000' } })!, /session id/);
    assert.match(startProblem({ ...ok, cols: 0 })!, /terminal size/);
    assert.match(startProblem({ ...ok, idleTimeoutMs: 10 })!, /idleTimeoutMs/);
    assert.match(startProblem({ ...ok, spec: { ...ok.spec, command: '' } })!, /command/);
  });

  it('runs the command after the profile scripts, under `script` on a terminal', () => {
    assert.deepEqual(oneOffArgv('echo hi', false, '/app'), ['/bin/sh', '-c', 'for f in /app/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; exec echo hi']);
    const t = oneOffArgv('bash', true, '/app');
    assert.match(t[2], /exec script -q -e -c "\$1" \/dev\/null$/);
    assert.equal(t[4], 'exec bash');
  });
});

const skip =
  typeof process.getuid !== 'function' || process.getuid() !== 0
    ? 'one-off sandbox tests need root'
    : !existsSync('/usr/bin/bwrap')
      ? 'one-off sandbox tests need bubblewrap (/usr/bin/bwrap)'
      : false;

const rnd = randomBytes(3).toString('hex');
const BRIDGE = `swgo-${rnd}`;
const CIDR = `10.${100 + (parseInt(rnd.slice(0, 2), 16) % 100)}.0.0/16`;
const CG_ROOT = `swgt-oneoff-${rnd}`;
const ROOT = `/var/tmp/swgt-oneoff-${rnd}`;

/** Drives one session over the bus like the control plane does. */
class Session {
  out = Buffer.alloc(0);
  err = Buffer.alloc(0);
  started = false;
  readonly end: Promise<OneOffOutputMessage>;
  private wake: () => void = () => {};

  constructor(private readonly bus: InProcessBus, readonly id: string, readonly nodeId = 'nod_oneoff') {
    let done!: (m: OneOffOutputMessage) => void;
    this.end = new Promise((r) => (done = r));
    bus.subscribe<OneOffOutputMessage>(subjects.oneOffOutput(nodeId, id), (m) => {
      if (m.type === 'started') this.started = true;
      if (m.type === 'output') {
        const b = Buffer.from(m.data, 'base64');
        if (m.stream === 'stdout') this.out = Buffer.concat([this.out, b]);
        else this.err = Buffer.concat([this.err, b]);
      }
      if (m.type === 'exit' || m.type === 'error') done(m);
      this.wake();
    });
  }

  send(m: OneOffInputMessage): Promise<void> {
    return this.bus.publish(subjects.oneOffInput(this.nodeId, this.id), m);
  }

  type(text: string): Promise<void> {
    return this.send({ type: 'data', data: Buffer.from(text).toString('base64') });
  }

  async waitOutput(re: RegExp, ms = 20_000): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const text = this.out.toString('utf8');
      if (re.test(text)) return text;
      if (Date.now() > deadline) throw new Error(`output never matched ${re}: ${JSON.stringify(text)}`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 200);
      });
    }
  }
}

describe('one-off processes in the sandbox', { skip }, () => {
  let runtime: ManagedSandboxRuntime;
  let agent: Agent;
  let bus: InProcessBus;
  let digest = '';
  const nodeId = 'nod_oneoff';

  before(async () => {
    await fsp.mkdir(ROOT, { recursive: true, mode: 0o711 });
    const blobs = new DirBlobStore(path.join(ROOT, 'blobs'));
    digest = await buildArtifact(ROOT, blobs);
    runtime = await createRuntime({ isolation: 'sandbox', bridge: { name: BRIDGE, cidr: CIDR }, cgroupRoot: CG_ROOT, stateRoot: path.join(ROOT, 'runtime'), netPoolSize: 0 });
    bus = new InProcessBus();
    agent = createAgent({ nodeId, name: 'oneoff', bus, blobs, runtime, dataDir: path.join(ROOT, 'agent'), logger: pino({ level: 'silent' }) });
    await agent.start();
  });

  after(async () => {
    await agent?.stop().catch(() => {});
    await runtime?.close();
    const cg = await detectCgroups();
    if (cg.layout) await removeCgroupRoot(cg.layout, CG_ROOT).catch((e) => console.error('cgroup cleanup:', e));
    await removeBridge(BRIDGE).catch((e) => console.error('bridge cleanup:', e));
    for (const ns of execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n')) {
      const name = ns.split(' ')[0];
      if (name.startsWith(CG_ROOT)) execFileSync('ip', ['netns', 'delete', name]);
    }
    await fsp.rm(ROOT, { recursive: true, force: true });
  });

  const sid = () => `run-${randomBytes(8).toString('hex')}`;

  it('runs a command with the release env and profile, streams stdout/stderr/stdin, passes the exit code', async () => {
    const s = new Session(bus, sid());
    await bus.publish(subjects.oneOffStart(nodeId), startMsg(s.id, digest, 'echo "$SOMECONFIG $GREETING"; echo oops >&2; read line; echo "got $line"; exit 3'));
    await s.type('typed-line\n');
    const end = await s.end;
    assert.deepEqual(end, { type: 'exit', exitCode: 3, signal: null });
    assert.equal(s.out.toString(), 'configured-value hello from profile\ngot typed-line\n');
    assert.equal(s.err.toString(), 'oops\n');
    assert.equal(s.started, true);
  });

  it('gives a terminal session its own /dev/pts, job control and its exit code; host files stay invisible', async () => {
    const s = new Session(bus, sid());
    await bus.publish(subjects.oneOffStart(nodeId), startMsg(s.id, digest, '/bin/sh', { tty: true, cols: 100, rows: 30 }));
    await s.type('echo hi-$((40+2))\n');
    await s.waitOutput(/hi-42/);
    await s.type('tty; stty size; ls /root /work 2>&1 | head -3; echo done-$((1+1))\n');
    const text = await s.waitOutput(/done-2/);
    assert.match(text, /\/dev\/pts\/\d+/);
    assert.match(text, /30 100/);
    assert.match(text, /No such file or directory/);
    await s.send({ type: 'resize', cols: 120, rows: 40 });
    await s.type('stty size; echo sized\n');
    await s.waitOutput(/40 120\r?\n.*sized/s);
    await s.type('exit 5\n');
    assert.deepEqual(await s.end, { type: 'exit', exitCode: 5, signal: null });
  });

  it('kills the process (and everything it started) on kill, and when input stops', async () => {
    const s = new Session(bus, sid());
    await bus.publish(subjects.oneOffStart(nodeId), startMsg(s.id, digest, 'sleep 300 & echo started; sleep 300'));
    await s.waitOutput(/started/);
    await s.send({ type: 'kill' });
    const end = await s.end;
    assert.equal(end.type, 'exit');
    assert.equal((end as { signal: string | null }).signal, 'SIGKILL');
    // Cleaned up right after the exit was reported: sandbox, processes, working directory.
    const dirs = path.join(ROOT, 'agent', 'oneoffs');
    for (let i = 0; i < 100 && (await fsp.readdir(dirs)).includes(s.id); i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await fsp.readdir(dirs), []);

    const idle = new Session(bus, sid());
    await bus.publish(subjects.oneOffStart(nodeId), startMsg(idle.id, digest, 'echo waiting; sleep 300', { idleTimeoutMs: 1500 }));
    await idle.waitOutput(/waiting/);
    const idleEnd = await idle.end;
    assert.equal(idleEnd.type, 'exit');
    assert.notEqual((idleEnd as { exitCode: number | null }).exitCode, 0);
  });

  it('refuses a malformed start with an error', async () => {
    const s = new Session(bus, sid());
    await bus.publish(subjects.oneOffStart(nodeId), startMsg(s.id, 'not/a-digest', 'true'));
    const end = await s.end;
    assert.equal(end.type, 'error');
    assert.match((end as { message: string }).message, /artifactDigest/);
  });
});

describe('one-off processes without isolation', () => {
  let agent: Agent;
  let bus: InProcessBus;
  let digest = '';
  const dir = `/var/tmp/swgt-oneoff-none-${rnd}`;
  const nodeId = 'nod_none';

  before(async () => {
    await fsp.mkdir(dir, { recursive: true, mode: 0o711 });
    const blobs = new DirBlobStore(path.join(dir, 'blobs'));
    digest = await buildArtifact(dir, blobs);
    bus = new InProcessBus();
    agent = createAgent({ nodeId, name: 'none', bus, blobs, runtime: await createRuntime({ isolation: 'none' }), dataDir: path.join(dir, 'agent'), logger: pino({ level: 'silent' }) });
    await agent.start();
  });

  after(async () => {
    await agent?.stop().catch(() => {});
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('runs as the app user (when root) with the release env, on pipes and on a terminal', async () => {
    const s = new Session(bus, `run-${randomBytes(8).toString('hex')}`, nodeId);
    await bus.publish(subjects.oneOffStart(nodeId), startMsg(s.id, digest, 'echo "$SOMECONFIG $(id -u)"; exit 4'));
    assert.deepEqual(await s.end, { type: 'exit', exitCode: 4, signal: null });
    const [value, uid] = s.out.toString().trim().split(' ');
    assert.equal(value, 'configured-value');
    if (process.getuid?.() === 0) assert.notEqual(uid, '0');

    const t = new Session(bus, `run-${randomBytes(8).toString('hex')}`, nodeId);
    await bus.publish(subjects.oneOffStart(nodeId), startMsg(t.id, digest, '/bin/sh', { tty: true }));
    await t.type('tty; exit 6\n');
    assert.deepEqual(await t.end, { type: 'exit', exitCode: 6, signal: null });
    assert.match(t.out.toString(), /\/dev\/pts\/\d+/);
  });
});
