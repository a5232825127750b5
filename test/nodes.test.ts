/**
 * Node scheduling on the real all-in-one platform (one node): cordon keeps a scale-up pending
 * with the reason in `ps --explain` until uncordon; a label constraint no node satisfies and an
 * untolerated taint keep instances pending with the reason; draining the only node keeps its
 * instances running (nowhere to go) and says why; `remove` refuses while instances run there;
 * operators only (403 for others); bad transitions 409 and bad input 400/404 change nothing.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { platformSuite, waitFor } from './helpers/platform.ts';
import { appDir, knobApp } from './helpers/apps.ts';

const suite = platformSuite({ isolation: 'sandbox' });
const { ok, run } = suite;
const APP = `sched-${Math.random().toString(36).slice(2, 7)}`;

async function json<T = any>(args: string[]): Promise<T> {
  return JSON.parse((await ok([...args, '--json'])).stdout) as T;
}
const ps = () => json<any[]>(['ps', '--app', APP]);
const running = async () => (await ps()).filter((i) => i.desired === 'running' && i.state === 'running');
async function theNode(): Promise<any> {
  const list = await json<any[]>(['nodes', 'list']);
  assert.equal(list.length, 1, JSON.stringify(list));
  return list[0];
}
/** A pending instance whose placement matches `re`; also checks `ps --explain` prints it. */
async function pendingWith(re: RegExp): Promise<any> {
  const i = await waitFor(`a pending instance explained by ${re}`, async () => (await ps()).find((x) => x.desired === 'running' && x.nodeId === null && re.test(x.placement ?? '')), 30_000);
  const text = (await ok(['ps', '--app', APP, '--explain'])).stdout;
  assert.match(text, re, text);
  return i;
}
async function fails(args: string[], status: RegExp): Promise<string> {
  const r = await run(args);
  assert.notEqual(r.code, 0, `${args.join(' ')} should fail:\n${r.stdout}`);
  assert.match(r.stderr, status, r.stderr);
  return r.stderr;
}

describe('node scheduling', () => {
  let node: any;

  test('an app runs on the only node, placed with an explanation', async () => {
    await ok(['apps', 'create', APP]);
    await ok(['config', 'set', 'VERSION=v1', '--app', APP]);
    await ok(['deploy', await appDir(knobApp), '--app', APP]);
    await waitFor('1 running', async () => (await running()).length === 1, 90_000);
    node = await theNode();
    assert.equal(node.state, 'ready');
    assert.ok(node.allocated.memoryMb > 0 && node.capacity.memoryMb > 0, JSON.stringify(node));
    const [i] = await running();
    assert.match(i.placement, new RegExp(`^on ${node.name}: score`));
    assert.match((await ok(['ps', '--app', APP, '--explain'])).stdout, /placement: on /);
    const info = (await ok(['nodes', 'info', node.name])).stdout;
    assert.match(info, /state:\s+ready/);
  });

  test('non-operators get 403 and change nothing', async () => {
    const admin = await suite.p.client(suite.token);
    const added = await admin.call('addMember', { body: { email: `dev-${APP}@example.com`, role: 'admin' } });
    const devToken = await suite.p.token(`dev-${APP}@example.com`, added.initialPassword!);
    for (const [method, path, body] of [
      ['GET', '/v1/nodes', undefined], ['GET', `/v1/nodes/${node.id}`, undefined], ['POST', `/v1/nodes/${node.id}/state`, { state: 'cordoned' }],
      ['PATCH', `/v1/nodes/${node.id}/labels`, { labels: { zone: 'x' } }], ['PATCH', `/v1/nodes/${node.id}/taints`, { add: [{ key: 'a', value: 'b', effect: 'NoSchedule' }] }],
      ['DELETE', `/v1/nodes/${node.id}`, undefined],
    ] as const) {
      const r = await fetch(`${suite.p.apiUrl}${path}`, {
        method, headers: { authorization: `Bearer ${devToken}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined,
      });
      assert.equal(r.status, 403, `${method} ${path}`);
    }
    const r = await suite.p.cli(['nodes', 'cordon', node.name], devToken, { cwd: suite.cwd });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /platform operator/);
    const after = await theNode();
    assert.deepEqual([after.state, after.operatorLabels, after.taints], ['ready', {}, []]);
  });

  test('bad input: 404 unknown node, 409 bad transitions, 400 bad labels/taints — nothing changes', async () => {
    await fails(['nodes', 'cordon', 'no-such-node'], /not found|no node|404/i);
    await fails(['nodes', 'uncordon', node.name], /already ready/);
    await fails(['nodes', 'label', node.name, 'Bad Key=1'], /not a label/);
    const c = await suite.p.client(suite.token);
    await assert.rejects(c.call('setNodeLabels', { params: { node: node.id }, body: { labels: { 'UPPER': 'x' } } }), (e: { status: number }) => e.status === 400);
    await assert.rejects(c.call('setNodeLabels', { params: { node: node.id }, body: { labels: { missing: null } } }), (e: { status: number; message: string }) => e.status === 400 && /no label 'missing'/.test(e.message));
    await assert.rejects(c.call('setNodeTaints', { params: { node: node.id }, body: { remove: ['nope'] } }), (e: { status: number; message: string }) => e.status === 400 && /no taint/.test(e.message));
    await assert.rejects(c.call('setNodeTaints', { params: { node: node.id }, body: { add: [{ key: 'k', value: 'v', effect: 'Sometimes' as never }] } }), (e: { status: number }) => e.status === 400);
    await assert.rejects(c.call('setNodeState', { params: { node: node.id }, body: { state: 'down' as never } }), (e: { status: number }) => e.status === 400);
    await fails(['nodes', 'taint', node.name, 'gpu=true:Sometimes'], /effect must be one of NoSchedule, NoExecute/);
    const after = await theNode();
    assert.deepEqual([after.state, after.operatorLabels, after.taints], ['ready', {}, []]);
  });

  test('cordon: a scale-up stays pending with the reason; uncordon: it runs', async () => {
    assert.match((await ok(['nodes', 'cordon', node.name])).stdout, /Cordoned/);
    await fails(['nodes', 'cordon', node.name], /already cordoned/);
    assert.equal((await theNode()).state, 'cordoned');
    await ok(['scale', 'web=2', '--app', APP]);
    await pendingWith(new RegExp(`no node fits: ${node.name} is cordoned`));
    assert.equal((await running()).length, 1, 'the running instance stays');
    await ok(['nodes', 'uncordon', node.name]);
    await waitFor('2 running', async () => (await running()).length === 2, 60_000);
  });

  test('a label constraint no node satisfies keeps new instances pending; labelling the node fixes it', async () => {
    await ok(['placement', '--app', APP, '--require', 'zone=mars']);
    await ok(['scale', 'web=3', '--app', APP]);
    await pendingWith(new RegExp(`no node fits: ${node.name} lacks label zone=mars`));
    assert.equal((await running()).length, 2, 'running instances stay where they are');
    const labelled = await json<any>(['nodes', 'label', node.name, 'zone=mars']);
    assert.deepEqual(labelled.operatorLabels, { zone: 'mars' });
    await waitFor('3 running', async () => (await running()).length === 3, 60_000);
    await ok(['nodes', 'label', node.name, 'zone-']);
    await ok(['placement', '--app', APP, '--clear']);
  });

  test('a taint the app does not tolerate keeps new instances off; a toleration lets them in', async () => {
    const tainted = await json<any>(['nodes', 'taint', node.name, 'gpu=true:NoSchedule']);
    assert.deepEqual(tainted.taints, ['gpu=true:NoSchedule']);
    await ok(['scale', 'web=4', '--app', APP]);
    await pendingWith(new RegExp(`no node fits: ${node.name} taint gpu=true:NoSchedule not tolerated`));
    await ok(['placement', '--app', APP, '--tolerate', 'gpu=true:NoSchedule']);
    await waitFor('4 running', async () => (await running()).length === 4, 60_000);
    await ok(['nodes', 'taint', node.name, 'gpu-']);
    await ok(['placement', '--app', APP, '--clear']);
    await ok(['scale', 'web=2', '--app', APP]);
    await waitFor('2 running', async () => (await ps()).filter((i) => i.desired === 'running').length === 2, 60_000);
  });

  test('drain of the only node: instances stay (nowhere to go) with the reason; remove refuses; uncordon ends it', async () => {
    const before = (await running()).map((i) => i.id).sort();
    assert.equal(before.length, 2);
    assert.match((await ok(['nodes', 'drain', node.name])).stdout, /Draining/);
    assert.equal((await theNode()).state, 'draining');
    // The replacement waits for a node; the old instances keep serving and say why.
    await pendingWith(new RegExp(`no node fits: ${node.name} is draining`));
    await waitFor('old instances explain the drain', async () => {
      const list = await ps();
      return before.every((id) => /^leaving .* \(node is draining\): keeps running until a replacement is ready elsewhere$/.test(list.find((i) => i.id === id)?.placement ?? ''));
    }, 30_000);
    const text = (await ok(['ps', '--app', APP, '--explain'])).stdout;
    assert.match(text, /keeps running until a replacement is ready elsewhere/);
    assert.deepEqual((await running()).map((i) => i.id).sort(), before, 'nothing was stopped');
    assert.equal((await suite.p.viaRouter(APP, '/')).status, 200);
    await fails(['nodes', 'remove', node.name], /still has 2 instance\(s\) assigned: wait until the drain has moved them/);
    await fails(['nodes', 'drain', node.name], /already draining/);
    await ok(['nodes', 'uncordon', node.name]);
    await waitFor('back to 2 running, nothing pending', async () => {
      const live = (await ps()).filter((i) => i.desired === 'running');
      return live.length === 2 && live.every((i) => i.state === 'running' && i.nodeId !== null && !i.placement.startsWith('leaving '));
    }, 60_000);
  });

  test('remove: a node without instances is forgotten (a live agent joins again with its next heartbeat)', async () => {
    await ok(['scale', 'web=0', '--app', APP]);
    await waitFor('no instances on the node', async () => (await theNode()).instances === 0, 60_000);
    await ok(['nodes', 'cordon', node.name]);
    assert.match((await ok(['nodes', 'remove', node.name])).stdout, /Removed/);
    await waitFor('the node is back, ready, operator state gone', async () => {
      const list = await json<any[]>(['nodes', 'list']);
      return list.length === 1 && list[0].state === 'ready';
    }, 30_000);
  });
});
