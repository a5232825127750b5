// `none` isolation: a plain detached process with the same log/status/adopt contract.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createRuntime, prepareWritableDir, readFinalExit } from './index.ts';
import type { SandboxRuntime, SandboxSpec } from './index.ts';
import { listPids, procStat } from './util.ts';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const UID = isRoot ? 100_077 : process.getuid!();
let ROOT = '';
let rt: SandboxRuntime;
const started: SandboxSpec[] = [];

function spec(id: string, over: Partial<SandboxSpec> = {}): SandboxSpec {
  const s: SandboxSpec = {
    id,
    argv: ['true'],
    env: {},
    cwd: '/app',
    mounts: [{ source: path.join(ROOT, 'app'), target: '/app', readonly: false }],
    uid: UID,
    gid: UID,
    limits: { memoryMb: 128, cpus: 1, pids: 64 },
    network: { mode: 'bridge' },
    logFile: path.join(ROOT, 'logs', `${id}.log`),
    stateDir: path.join(ROOT, 'state', id),
    ...over,
  };
  started.push(s);
  return s;
}

const readLog = (id: string) => fsp.readFile(path.join(ROOT, 'logs', `${id}.log`), 'utf8');

async function sessionMembers(sid: number): Promise<number[]> {
  const out: number[] = [];
  for (const p of await listPids()) {
    const st = await procStat(p);
    if (st && st.session === sid && st.state !== 'Z') out.push(p);
  }
  return out;
}

describe('none isolation (explicit, for developer machines)', () => {
  before(async () => {
    ROOT = await mkdtemp(path.join(tmpdir(), 'swg-none-'));
    await fsp.chmod(ROOT, 0o755);
    await fsp.mkdir(path.join(ROOT, 'app'));
    await prepareWritableDir(path.join(ROOT, 'app'), UID, UID);
    rt = await createRuntime({ isolation: 'none' });
  });

  after(async () => {
    for (const s of started) await rt.cleanup(s.id, s.stateDir).catch(() => {});
    await fsp.rm(ROOT, { recursive: true, force: true });
  });

  it('runs detached with cwd mapped through the mounts, env, uid, and reports the exit code', async () => {
    assert.equal(rt.isolation, 'none');
    const h = await rt.start(spec('e3', { argv: ['sh', '-c', 'echo "cwd=$PWD uid=$(id -u) foo=$FOO"; echo "fds=$(ls /proc/self/fd | tr "\\n" " ")"; echo err >&2; exit 3'], env: { FOO: 'bar' } }));
    assert.equal(h.ip, '127.0.0.1');
    assert.deepEqual(await h.wait(), { exitCode: 3, signal: null, oomKilled: false });
    const log = await readLog('e3');
    assert.match(log, new RegExp(`cwd=${path.join(ROOT, 'app')} uid=${UID} foo=bar`));
    assert.match(log, /err/);
    assert.match(log, /fds=0 1 2 3 \n/, 'no inherited fds besides stdio (3 is ls reading the dir)');
    assert.deepEqual(await readFinalExit(path.join(ROOT, 'state', 'e3')), { exitCode: 3, signal: null, oomKilled: false });
  });

  it('kill() reports the signal; adopt() from a new runtime object works', async () => {
    const s = spec('sl', { argv: ['sleep', '30'] });
    const h = await rt.start(s);
    const st = await h.stats();
    assert.ok(st.memoryBytes !== null && st.memoryBytes > 0);
    const rt2 = await createRuntime({ isolation: 'none' });
    const h2 = await rt2.adopt('sl', s.stateDir);
    assert.ok(h2);
    assert.equal(h2.pid, h.pid);
    await h2.kill();
    assert.deepEqual(await h2.wait(), { exitCode: 143, signal: 'SIGTERM', oomKilled: false });
    assert.deepEqual(await h.wait(), { exitCode: 143, signal: 'SIGTERM', oomKilled: false });
    assert.equal(await rt2.adopt('sl', s.stateDir), null);
  });

  it('as root: a working directory the uid cannot reach is refused with the reason (no mount namespace here)', { skip: !isRoot && 'needs root' }, async () => {
    const closed = path.join(ROOT, 'closed');
    await fsp.mkdir(path.join(closed, 'app'), { recursive: true });
    await fsp.chmod(closed, 0o700);
    const s = spec('closed', { mounts: [{ source: path.join(closed, 'app'), target: '/app', readonly: false }] });
    await assert.rejects(rt.start(s), new RegExp(`isolation "none" runs the process as uid ${UID} directly on the host, but ${closed} is not searchable`));
    assert.equal((await fsp.stat(closed)).mode & 0o777, 0o700, 'left as it was');
  });

  it('cleanup kills processes left behind in the session', async () => {
    const s = spec('bg', { argv: ['sh', '-c', 'sleep 30 & echo started'] });
    const h = await rt.start(s);
    assert.equal((await h.wait()).exitCode, 0);
    assert.equal((await sessionMembers(h.pid)).length, 1, 'orphaned sleep still running');
    await rt.cleanup('bg', s.stateDir);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(await sessionMembers(h.pid), []);
    await rt.cleanup('bg', s.stateDir); // idempotent
  });
});
