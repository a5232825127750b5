/**
 * Several hosts on one machine (test/helpers/netns.ts): three nodes, each in its own network
 * namespace with its own sandbox bridge, joined only by a test bridge; two control planes (HA) on
 * PostgreSQL and NATS in the root namespace, set up as an operator would across machines: the API
 * over https with the install CA, NATS authenticated (a user per node, issued at join) and over
 * TLS with JetStream, nodes joining with a token and the CA fingerprint `shellwego nodes token`
 * prints, fetching artifacts over https from either server. Instance addresses of one node are
 * not reachable from another (no routing between the hosts' bridges), so every cross-node request
 * here goes router → the other node's router → instance. One set-up for the whole file.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'nats';
import { subjects } from '@shellwego/core';
import { credsConnection } from '../packages/bus/src/nats-auth.ts';
import { suiteFor, waitFor } from './helpers/platform.ts';
import { MultiHostCluster } from './helpers/netns.ts';
import type { ClusterNode } from './helpers/netns.ts';
import { appDir, whoamiApp } from './helpers/apps.ts';

const suite = suiteFor(() => MultiHostCluster.start({ nodes: 3, isolation: 'sandbox', env: { SHELLWEGO_NODE_DOWN_AFTER_MS: '4000' } }));
const { ok } = suite;
const c = () => suite.p;

async function json<T = any>(args: string[]): Promise<T> {
  return JSON.parse((await ok([...args, '--json'])).stdout) as T;
}
const instances = async () => await json<any[]>(['ps', '--app', 'multi']);
const running = async (type = 'web') => (await instances()).filter((i) => i.type === type && i.state === 'running');
const nodeState = async (id: string) => (await json<any[]>(['nodes', 'list'])).find((n) => n.id === id)?.state;

/** Instance ids that answer through `node`'s router within `tries` requests (stops once `expect` are all seen). */
async function reachedVia(node: ClusterNode, expect: Set<string>, tries = 40): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < tries && [...expect].some((id) => !seen.has(id)); i++) {
    const r = await c().viaNode(node, 'multi');
    assert.equal(r.status, 200, `through ${node.host.ns}: ${r.status} ${r.body}`);
    seen.add((JSON.parse(r.body) as { instance: string }).instance);
  }
  return seen;
}

/** SHELLWEGO_INSTANCE of every live `worker.js` process of the app on this machine (all nodes). */
async function workerProcesses(): Promise<string[]> {
  const out = await new Promise<string>((resolve) => execFile('pgrep', ['-f', 'node worker.js'], (_err, stdout) => resolve(stdout ?? '')));
  const ids: string[] = [];
  for (const pid of out.split('\n').filter(Boolean)) {
    const env = (await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '')).split('\0');
    if (!env.includes('SHELLWEGO_APP=multi')) continue;
    const id = env.find((e) => e.startsWith('SHELLWEGO_INSTANCE='));
    if (id) ids.push(id.slice('SHELLWEGO_INSTANCE='.length));
  }
  return [...new Set(ids)].sort(); // a shell and the node it started count once
}

describe('several hosts (network namespaces)', () => {
  const ids = new Map<ClusterNode, string>();
  const nodeOf = (id: string) => [...ids].find(([, v]) => v === id)![0];

  test('an app with 4 instances spreads over the 3 nodes', async () => {
    for (const n of c().nodes) ids.set(n, await c().nodeId(n));
    await waitFor('three ready nodes', async () => (await json<any[]>(['nodes', 'list'])).filter((n) => n.state === 'ready').length === 3, 30_000, 300);
    await ok(['apps', 'create', 'multi']);
    await ok(['deploy', await appDir(whoamiApp), '--app', 'multi']);
    await ok(['scale', 'web=4', 'worker=1', '--app', 'multi']);
    const web = await waitFor('4 web instances running', async () => { const r = await running(); return r.length === 4 && r; }, 120_000, 300);
    assert.equal(new Set(web.map((i: any) => i.nodeId)).size, 3, `every node has one: ${web.map((i: any) => i.nodeId).join(' ')}`);
    await waitFor('the worker runs', async () => (await running('worker')).length === 1, 60_000, 300);
    // They joined as the printed command says: pinned CA, NATS user of their own, artifacts over https.
    for (const n of c().nodes) {
      assert.match(n.joinCommand, /--join https:\/\/\S+,https:\/\/\S+ --token swj_\S+ --ca-fingerprint sha256:[0-9a-f]{64}/);
      const creds = await c().nodeCredentials(n);
      assert.match(creds.natsCreds, /BEGIN NATS USER JWT/);
      assert.equal(creds.ca.pem.trim(), c().caPem.trim(), 'the install CA, pinned');
      assert.equal(creds.natsUsesInstallCa, true, 'NATS over TLS, verified against the pinned CA');
      assert.match(n.daemon.output, /Blobs: +https:\/\/\S+, ?https:\/\/\S+ \(joined/);
    }
  });

  test("a node's NATS user (from its data dir) cannot read another node's assignments", async () => {
    const [a, b] = c().nodes;
    const creds = await c().nodeCredentials(a);
    const rogue = await connect({ servers: c().natsUrl, tls: { ca: c().caPem }, ...credsConnection(creds.natsCreds, creds.nodeId) });
    try {
      const refused = new Promise<string>((resolve) => rogue.subscribe(subjects.assignments(ids.get(b)!), { callback: (err, m) => resolve(err ? String(err) : `got ${m.subject}`) }));
      await rogue.flush();
      assert.match(await refused, /permissions violation/i);
    } finally {
      await rogue.close();
    }
  });

  test("a request to any node's router reaches the instances of every node", async () => {
    const web = new Set<string>((await running()).map((i: any) => i.id));
    for (const n of c().nodes) {
      const seen = await reachedVia(n, web);
      assert.deepEqual([...seen].sort(), [...web].sort(), `through ${n.host.ns}`);
    }
    // The hosts really are apart: an instance address of one node is not reachable from another.
    const [a, b] = c().nodes;
    const onB = (await running()).find((i: any) => i.nodeId === ids.get(b));
    const [addr, port] = String(onB.address).split(':');
    const connectFrom = (ns: string) => new Promise<boolean>((resolve) => execFile('ip', ['netns', 'exec', ns, 'timeout', '3', 'bash', '-c', `exec 3<>/dev/tcp/${addr}/${port}`], (err) => resolve(!err)));
    assert.equal(await connectFrom(b.host.ns), true, `node ${b.host.ns} reaches its own instance at ${onB.address}`);
    assert.equal(await connectFrom(a.host.ns), false, `node ${a.host.ns} must not reach ${onB.address} on ${b.host.ns} directly`);
    // B's cluster port speaks mutual TLS only (ADR 0022): plain http and TLS without a node certificate get nothing; A's certificate gets an answer.
    const clusterAt = /reach this node's apps at (\S+) \(mutual TLS/.exec(b.daemon.output)?.[1];
    assert.ok(clusterAt, b.daemon.output.slice(-2000));
    const curlFrom = (ns: string, args: string[]) => new Promise<string>((resolve) => execFile('ip', ['netns', 'exec', ns, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', ...args], (_err, stdout) => resolve(String(stdout))));
    const tlsA = join(a.dataDir, 'cluster-tls');
    assert.equal(await curlFrom(a.host.ns, [`http://${clusterAt}/`]), '000', 'plain http');
    assert.equal(await curlFrom(a.host.ns, ['-k', `https://${clusterAt}/`]), '000', 'TLS without a client certificate');
    assert.equal(await curlFrom(a.host.ns, ['-k', '--cert', join(tlsA, 'cert.pem'), '--key', join(tlsA, 'key.pem'), `https://${clusterAt}/`]), '403', "a node's certificate without the cluster token: refused by the router");
  });

  test("drain a node under load through another node's router: zero failed requests", async () => {
    const web = await running();
    const target = nodeOf(web[0].nodeId);
    const id = ids.get(target)!;
    const via = c().nodes.find((n) => n !== target)!;
    const load = c().load(via, 'multi', { concurrency: 2 }).start();
    try {
      await load.succeeded(30);
      await ok(['nodes', 'drain', id]);
      await waitFor('the drained node holds nothing; 4 web instances run on the others', async () => {
        const list = await instances();
        return list.every((i) => i.nodeId !== id) && list.filter((i) => i.type === 'web' && i.state === 'running').length === 4;
      }, 120_000, 300);
      await load.succeeded(30);
    } finally {
      const res = await load.stop();
      assert.equal(res.failed, 0, res.errors.join('\n'));
    }
    await ok(['nodes', 'uncordon', id]);
    assert.equal(await nodeState(id), 'ready');
  });

  test('a volume lives on one node: its web instances go there and stay through a drain; destroyed, its directory goes from that node', async () => {
    await ok(['apps', 'create', 'vols']);
    await ok(['volumes', 'create', 'data', '--process', 'web', '--mount', '/data', '--app', 'vols']);
    await ok(['deploy', await appDir(whoamiApp), '--app', 'vols']);
    await ok(['scale', 'web=2', '--app', 'vols']);
    const vps = async () => await json<any[]>(['ps', '--app', 'vols']);
    const web = await waitFor('2 web instances of vols running', async () => { const r = (await vps()).filter((i) => i.type === 'web' && i.state === 'running'); return r.length === 2 && r; }, 120_000, 300);
    const vol = await json<any>(['volumes', 'info', 'data', '--app', 'vols']);
    assert.ok(vol.nodeId, 'pinned');
    assert.deepEqual(web.map((i: any) => i.nodeId), [vol.nodeId, vol.nodeId], 'both on the volume node, not spread');
    const home = nodeOf(vol.nodeId);
    const dir = join(home.dataDir, 'agent', 'volumes', vol.id);
    assert.equal((await stat(dir)).isDirectory(), true);
    for (const n of c().nodes.filter((x) => x !== home)) assert.equal(await stat(join(n.dataDir, 'agent', 'volumes', vol.id)).then(() => true, () => false), false);
    // Drain its node: they cannot move, so they keep running there and say why.
    await ok(['nodes', 'drain', vol.nodeId]);
    await waitFor('the web instances explain why they stay', async () => {
      const list = (await vps()).filter((i) => i.desired === 'running' && i.type === 'web');
      return list.length === 2 && list.every((i) => i.nodeId === vol.nodeId && /^kept on .*\(node is draining\): volume "data" lives there, so it cannot move$/.test(i.placement));
    }, 60_000, 300);
    assert.deepEqual((await vps()).filter((i) => i.type === 'web' && i.state === 'running').map((i) => i.id).sort(), web.map((i: any) => i.id).sort(), 'nothing was stopped');
    assert.match((await ok(['ps', '--app', 'vols', '--explain'])).stdout, /volume "data" lives there, so it cannot move/);
    await ok(['nodes', 'uncordon', vol.nodeId]);
    // Destroyed (once detached): the command reaches that node over its own NATS user, and the directory goes.
    await ok(['scale', 'web=0', '--app', 'vols']);
    await waitFor('no web instance of vols left', async () => (await vps()).length === 0, 60_000, 300);
    await ok(['volumes', 'destroy', 'data', '--confirm', 'data', '--app', 'vols']);
    await waitFor('the volume directory is gone from its node', async () => !(await stat(dir).then(() => true, () => false)), 60_000, 300);
    await ok(['apps', 'delete', 'vols', '--confirm', 'vols']);
  });

  test('a partitioned node: its instances are replaced elsewhere; healed, it stops them, so the singleton worker never stays twice', async () => {
    const worker = (await running('worker'))[0];
    const cut = nodeOf(worker.nodeId);
    const id = ids.get(cut)!;
    const others = c().nodes.filter((n) => n !== cut);
    await c().partition(cut);
    try {
      await waitFor('the cut-off node is down and its instances replaced on the others', async () => {
        if ((await nodeState(id)) !== 'down') return false;
        const [w, web] = [await running('worker'), await running()];
        return w.length === 1 && w[0].nodeId !== id && web.length === 4 && web.every((i: any) => i.nodeId !== id);
      }, 60_000, 300);
      const webIds = new Set<string>((await running()).map((i: any) => i.id));
      for (const n of others) assert.deepEqual([...(await reachedVia(n, webIds))].sort(), [...webIds].sort(), `through ${n.host.ns}`);
      // Cut off, the node cannot hear that its worker was replaced: it keeps it running meanwhile.
      const replacement = (await running('worker'))[0].id;
      assert.deepEqual(await waitFor('both workers run', async () => { const w = await workerProcesses(); return w.length === 2 && w; }, 30_000, 300),
        [worker.id, replacement].sort(), 'the stale worker on the cut-off node and its replacement');
    } finally {
      await c().heal(cut);
    }
    await waitFor('the node is back and holds nothing', async () => {
      const back = (await json<any[]>(['nodes', 'list'])).find((n) => n.id === id);
      return back.state === 'ready' && back.instances === 0;
    }, 60_000, 300);
    const [now] = await running('worker');
    await waitFor('the stale worker stopped: one worker process in the whole cluster', async () => JSON.stringify(await workerProcesses()) === JSON.stringify([now.id]), 30_000, 300);
  });

  test('power loss of a node: its instances run again on the others and serve through every surviving router', async () => {
    const victim = nodeOf((await running())[0].nodeId);
    const id = ids.get(victim)!;
    const survivors = c().nodes.filter((n) => n !== victim);
    // Load through a surviving router: requests bound for the dead node's instances (through its
    // router) fail over to the next backend inside the first router.
    const load = c().load(survivors[0], 'multi', { concurrency: 2 }).start();
    let web: any[];
    try {
      await load.succeeded(30);
      await c().powerOff(victim);
      web = await waitFor('the node is down; 4 web instances and the worker run on the other two', async () => {
        if ((await nodeState(id)) !== 'down') return false;
        const [w, r] = [await running('worker'), await running()];
        return w.length === 1 && r.length === 4 && [...w, ...r].every((i: any) => i.nodeId !== id) && r;
      }, 60_000, 300);
      await load.succeeded(30);
    } finally {
      const res = await load.stop();
      assert.equal(res.failed, 0, res.errors.join('\n'));
    }
    const webIds = new Set<string>(web.map((i: any) => i.id));
    for (const n of survivors) assert.deepEqual([...(await reachedVia(n, webIds))].sort(), [...webIds].sort(), `through ${n.host.ns}`);
  });

  test('two control planes on PostgreSQL: kill -9 the leader (the server nodes joined through), the other takes over; a scale and a new release work', async () => {
    // The first server leads: it was alone when it took the PostgreSQL lock.
    const [first, second] = c().servers;
    const via = async (args: string[]) => {
      const r = await c().cli(args, suite.token, { cwd: suite.cwd, apiUrl: second.apiUrl });
      assert.equal(r.code, 0, `shellwego ${args.join(' ')}: ${r.stdout}\n${r.stderr}\n${c().output}`);
      return r.stdout;
    };
    const list = async () => (JSON.parse(await via(['ps', '--app', 'multi', '--json'])) as any[]);
    await first.daemon.kill9();
    await via(['scale', 'web=3', '--app', 'multi']);
    await waitFor('3 web instances, scaled by the new leader', async () => {
      const web = (await list()).filter((i) => i.type === 'web');
      return web.length === 3 && web.every((i) => i.state === 'running');
    }, 60_000, 300);
    // A new build: no node has its artifact; each fetches it over https from the surviving server.
    await via(['deploy', await appDir({ ...whoamiApp, 'release.txt': 'after the leader died' }), '--app', 'multi']);
    const version = (JSON.parse(await via(['releases', '--app', 'multi', '--json'])) as { version: number }[])[0].version;
    const now = await waitFor('the new release runs: 3 web and the worker, on both surviving nodes', async () => {
      const r = (await list()).filter((i) => i.state === 'running' && i.releaseVersion === version);
      return r.filter((i) => i.type === 'web').length === 3 && r.some((i) => i.type === 'worker') && new Set(r.map((i) => i.nodeId)).size === 2 && r;
    }, 120_000, 300);
    // Each surviving node found the first server down and fetched from the second.
    for (const n of c().nodes.filter((x) => x.daemon.running())) {
      assert.match(n.daemon.output, new RegExp(`artifact [0-9a-f]{64} fetched from ${second.apiUrl.replace(/\./g, '\\.')}; before, ${first.apiUrl.replace(/\./g, '\\.')}: could not fetch artifact [0-9a-f]{64} from the control plane at ${first.apiUrl.replace(/\./g, '\\.')}`), n.host.ns);
    }
    const webIds = new Set<string>(now.filter((i: any) => i.type === 'web').map((i: any) => i.id));
    for (const n of c().nodes.filter((x) => x.daemon.running())) {
      assert.deepEqual([...(await reachedVia(n, webIds))].sort(), [...webIds].sort(), `through ${n.host.ns}`);
    }
  });
});

