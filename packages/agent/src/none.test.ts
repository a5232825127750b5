// The agent with isolation `none`: plain processes sharing the host network, so each web
// instance gets its own port picked by the agent.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { subjects } from '@shellwego/core';
import type { AssignmentsMessage } from '@shellwego/core';
import { InProcessBus } from '@shellwego/bus';
import { createRuntime } from '@shellwego/sandbox';
import { createAgent } from './agent.ts';
import type { Agent } from './agent.ts';
import { BusRecorder, DirBlobStore, buildArtifact, httpJson, makeSpec, pidAlive } from './testing.ts';

let root = '';
let agent: Agent | null = null;

describe('agent with isolation none', () => {
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'swg-agent-none-'));
    await fsp.chmod(root, 0o711);
  });
  after(async () => {
    await agent?.stop().catch(() => {});
    await fsp.rm(root, { recursive: true, force: true });
  });

  it('runs web instances as plain processes on distinct ports of 127.0.0.1', async () => {
    const blobs = new DirBlobStore(path.join(root, 'blobs'));
    const digest = await buildArtifact(root, blobs, {}, false);
    const runtime = await createRuntime({ isolation: 'none' });
    const bus = new InProcessBus();
    const rec = new BusRecorder(bus);
    const nodeId = 'nod_none';
    agent = createAgent({ nodeId, name: 'none', bus, blobs, runtime, dataDir: path.join(root, 'agent'), logger: pino({ level: 'silent' }), stopGraceMs: 3000 });
    await agent.start();
    const web1 = makeSpec('ins_n1', digest);
    const web2 = makeSpec('ins_n2', digest, { index: 2 });
    await bus.publish(subjects.assignments(nodeId), { nodeId, generation: 1, instances: [web1, web2] } satisfies AssignmentsMessage);
    const [a, b] = await Promise.all([rec.untilStatus('ins_n1', (s) => s.state === 'running'), rec.untilStatus('ins_n2', (s) => s.state === 'running')]);
    assert.match(a.address!, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(a.address, b.address);
    const r1 = await httpJson(a.address!);
    const r2 = await httpJson(b.address!);
    assert.equal(r1.dyno, 'web.1');
    assert.equal(r2.dyno, 'web.2');
    assert.equal(String(r1.port), a.address!.split(':')[1], '$PORT is the port the agent picked');
    assert.equal(r1.greeting, 'hello from profile');
    assert.equal(r1.home, path.join(root, 'agent', 'instances', 'ins_n1', 'app'), 'no /app without a sandbox: HOME is the host path');

    const pid2 = agent.instances().find((i) => i.instanceId === 'ins_n2')!.pid!;
    await bus.publish(subjects.assignments(nodeId), { nodeId, generation: 2, instances: [web1] } satisfies AssignmentsMessage);
    await rec.untilStatus('ins_n2', (s) => s.state === 'stopped');
    assert.equal(await pidAlive(pid2), false);
    assert.equal((await httpJson(a.address!)).dyno, 'web.1');
  });
});
