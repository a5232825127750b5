import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '@shellwego/store';
import type { RouteTableMessage } from '@shellwego/core';
import { clusterEndpointOf, clusterNodes, clusterToken, withNodes } from './route-nodes.ts';

const beat = (id: string, clusterEndpoint: string | null) => ({
  id, name: id, state: 'ready' as const, isolation: 'none', cpus: 2, memoryMb: 1024, lastHeartbeatAt: new Date().toISOString(), clusterEndpoint,
});

test('backends name their node; the table maps every node that reports an endpoint; one token for every store on the database', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-route-nodes-'));
  const [a, b] = [await openSqliteStore(join(dir, 'db.sqlite')), await openSqliteStore(join(dir, 'db.sqlite'))];
  try {
    await a.nodes.upsert(beat('nod_a', '10.0.0.1:8001'));
    await a.nodes.upsert(beat('nod_old', null)); // an agent that reports no endpoint
    await a.nodes.upsert(beat('nod_idle', '10.0.0.3:8001')); // nothing of this table runs there
    assert.equal((await a.nodes.byId('nod_a'))?.clusterEndpoint, '10.0.0.1:8001');

    const backends = withNodes(
      [{ instanceId: 'i1', address: '10.89.0.2:5000' }, { instanceId: 'i2', address: '10.89.0.3:5000', weight: 0 }, { instanceId: 'i3', address: '10.89.0.4:5000' }],
      [{ id: 'i1', nodeId: 'nod_a' }, { id: 'i2', nodeId: 'nod_old' }, { id: 'i3', nodeId: null }],
    );
    assert.deepEqual(backends, [
      { instanceId: 'i1', address: '10.89.0.2:5000', nodeId: 'nod_a' },
      { instanceId: 'i2', address: '10.89.0.3:5000', weight: 0, nodeId: 'nod_old' },
      { instanceId: 'i3', address: '10.89.0.4:5000' },
    ]);
    const routes: RouteTableMessage['routes'][string][] = [{ appId: 'app_1', appName: 'hello', backends }];
    const cluster = await clusterNodes(a, routes.map((route) => ({ route })));
    // Every node with an endpoint, backends there or not: routers take hops only from nodes in the map (ADR 0022).
    assert.deepEqual(cluster.nodes, { nod_a: '10.0.0.1:8001', nod_idle: '10.0.0.3:8001' }, 'the nodes with an endpoint');
    assert.ok(cluster.clusterToken && cluster.clusterToken.length >= 32);
    assert.equal(await clusterToken(b), cluster.clusterToken, 'another control plane on the same database publishes the same token');

    // No backend on a node (the all-in-one's table): nothing to add (routers go direct, as before).
    assert.deepEqual(await clusterNodes(a, [{ route: { appId: 'app_2', appName: 'x', backends: [backends[2]] } }]), {});

    // The endpoint moves with the heartbeats, and goes away when a heartbeat has none.
    await a.nodes.upsert(beat('nod_a', null));
    assert.equal((await a.nodes.byId('nod_a'))?.clusterEndpoint, null);
  } finally {
    await a.close();
    await b.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a heartbeat cluster endpoint is taken only when it is host:port', () => {
  for (const ok of ['10.1.2.3:8001', '[fd00::1]:8001', 'node-1.internal:7000']) assert.equal(clusterEndpointOf({ clusterEndpoint: ok }), ok);
  for (const bad of [undefined, '', '10.1.2.3', '10.1.2.3:0', '10.1.2.3:70000', 'a b:1', 'http://x:1', 'x'.repeat(400) + ':1']) {
    assert.equal(clusterEndpointOf({ clusterEndpoint: bad }), null, String(bad));
  }
});
