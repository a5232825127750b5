/**
 * Node failure (split mode, two nodes on one machine over NATS): a node that loses power is marked
 * down after the heartbeat timeout and its instances are replaced on the other node, which serves
 * them — routes cross nodes. A node that was only cut off comes back to find its instances
 * replaced: its agent stops them, so nothing runs twice.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from './helpers/platform.ts';
import { appDir, knobApp } from './helpers/apps.ts';
import { splitSuite } from './helpers/split.ts';
import type { ExtraNode } from './helpers/split.ts';
import { LoadGenerator } from './helpers/load.ts';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

const suite = splitSuite({ isolation: 'sandbox', env: { SHELLWEGO_NODE_DOWN_AFTER_MS: '4000' } });
const { ok } = suite;

async function json<T = any>(args: string[]): Promise<T> {
  return JSON.parse((await ok([...args, '--json'])).stdout) as T;
}

const running = async (app: string) => (await json<any[]>(['ps', '--app', app])).filter((i) => i.state === 'running');

describe('node failure', () => {
  let second: ExtraNode;

  test('two nodes: replicas spread across them', async () => {
    second = await suite.p.addNode();
    await waitFor('two ready nodes', async () => (await json<any[]>(['nodes', 'list'])).filter((n) => n.state === 'ready').length === 2, 30_000, 300);
    await ok(['apps', 'create', 'ha']);
    await ok(['config', 'set', 'VERSION=v1', '--app', 'ha']);
    await ok(['deploy', await appDir(knobApp), '--app', 'ha']);
    await ok(['scale', 'web=2', '--app', 'ha']);
    const list = await waitFor('2 running', async () => { const r = await running('ha'); return r.length === 2 && r; }, 90_000, 300);
    assert.equal(new Set(list.map((i: any) => i.nodeId)).size, 2, 'one replica per node');
  });

  test('power loss of a node: it is marked down and its instance is replaced on the other node, which serves it', async () => {
    const [firstId, secondId] = [await nodeId(suite.p.nodeDir), await nodeId(second.dataDir)];
    // The second node's router, so the load survives the first node's death.
    const load = new LoadGenerator({ port: second.routerPort, host: 'ha.localhost', concurrency: 2 }).start();
    await load.succeeded(20);
    const lostAt = Date.now();
    await suite.p.powerOff({ daemon: suite.p.node, dataDir: suite.p.nodeDir });
    await waitFor('two running instances again, both on the surviving node', async () => {
      const r = await running('ha');
      return r.length === 2 && r.every((i: any) => i.nodeId === secondId);
    }, 60_000, 250);
    const recoveredMs = Date.now() - lostAt;
    assert.equal((await json<any[]>(['nodes', 'list'])).find((n) => n.id === firstId).state, 'down');
    const events = await json<any[]>(['events', '--app', 'ha']);
    assert.ok(events.some((e) => e.type === 'node.down'), 'the failover is an event');
    await load.succeeded(20);
    const res = await load.stop();
    // Requests in flight to the dead node's instance fail over inside the router (connect failures are retried).
    assert.equal(res.failed, 0, res.errors.join('\n'));
    console.log(`# failover: 2 instances serving from the other node ${recoveredMs} ms after the power loss (node-down timeout 4000 ms)`);
  });

  test('a node cut off and back finds its instances replaced: its agent stops them, nothing runs twice', async () => {
    const [firstId, secondId] = [await nodeId(suite.p.nodeDir), await nodeId(second.dataDir)];
    await suite.p.node.start();
    await waitFor('the first node is ready again', async () => (await json<any[]>(['nodes', 'list'])).find((n) => n.id === firstId).state === 'ready', 30_000, 300);
    // Cut off: the second node's agent dies; its app processes keep running without it.
    await second.daemon.kill9();
    await waitFor('the cut-off node is down and its instances replaced on the first', async () => {
      const r = await running('ha');
      return r.length === 2 && r.every((i: any) => i.nodeId === firstId);
    }, 60_000, 250);
    // Back, with its old instances still running: nobody assigns them any more, so its agent stops them.
    await second.daemon.start();
    await waitFor('the node is back and empty; the app has exactly 2 instances', async () => {
      const nodes = await json<any[]>(['nodes', 'list']);
      const back = nodes.find((n) => n.id === secondId);
      const all = await json<any[]>(['ps', '--app', 'ha']);
      return back.state === 'ready' && back.instances === 0 && all.length === 2 && all.every((i) => i.state === 'running' && i.nodeId === firstId);
    }, 60_000, 300);
    // And its processes are really gone: nothing under its sandbox directory runs the app.
    await waitFor('no app process of the cut-off node left', async () => !(await appProcessesUnder(second.dataDir)), 30_000, 300);
  });
});

async function nodeId(dataDir: string): Promise<string> {
  return (await readFile(join(dataDir, 'node-id'), 'utf8')).trim();
}

/** Whether any process (an app sandbox) was started from under `dir`. */
async function appProcessesUnder(dir: string): Promise<boolean> {
  const r = await new Promise<number>((resolve) => execFile('pgrep', ['-f', dir], (err) => resolve(err ? (err as { code?: number }).code ?? 1 : 0)));
  return r === 0;
}
