// A route table larger than NATS's max_payload (1 MB by default) reaches a router whole: the
// real deployer publishes it in chunks over a real nats-server (JetStream on, as in split mode),
// changes follow as deltas, and a router that sees a gap asks for the full table.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { newId, subjects } from '@shellwego/core';
import type { RouteTableMessage } from '@shellwego/core';
import { connectNatsBus, defaultDurableStreams } from '@shellwego/bus';
import type { NatsBus } from '@shellwego/bus';
import { NatsServerProcess } from '../packages/bus/src/testing.ts';
import { openSqliteStore } from '@shellwego/store';
import type { Store } from '@shellwego/store';
import { EventRecorder } from '../packages/control-plane/src/events.ts';
import { LogStore } from '../packages/control-plane/src/logs.ts';
import { FileKeyProvider, SecretBox } from '../packages/control-plane/src/secrets.ts';
import { Deployer } from '../packages/control-plane/src/controllers/deployer.ts';
import { createRouter } from '@shellwego/router';
import type { Router } from '@shellwego/router';
import { waitFor } from './helpers/platform.ts';

const APPS = 12_000;
let server: NatsServerProcess;
let dir: string;
let store: Store;
let cpBus: NatsBus;
let routerBus: NatsBus;
let watch: NatsBus;
let deployer: Deployer;
let router: Router;
const seen: RouteTableMessage[] = [];
let requests = 0;
let sizes: number[] = [];

/** Until `fn` holds, polled every 50 ms. */
const until = (what: string, fn: () => boolean) => waitFor(what, async () => fn(), 60_000, 50);

before(async () => {
  server = await NatsServerProcess.start({ jetstream: true });
  dir = await mkdtemp(join(tmpdir(), 'swg-routes-nats-'));
  store = await openSqliteStore(':memory:');
  const org = await store.organizations.create({ id: newId('org'), name: 'acme' });
  for (let i = 0; i < APPS; i++) await store.apps.create({ id: newId('app'), organizationId: org.id, name: `route-table-scale-${String(i).padStart(5, '0')}`, plan: 'standard' });
  const durable = { streams: defaultDurableStreams(), consumerName: 'routes-test' };
  cpBus = await connectNatsBus({ servers: server.url, name: 'routes-cp', durable });
  routerBus = await connectNatsBus({ servers: server.url, name: 'routes-router', durable });
  watch = await connectNatsBus({ servers: server.url, name: 'routes-watch' });
  watch.subscribe<RouteTableMessage>(subjects.routes, (m) => { seen.push(m); });
  cpBus.subscribe(subjects.routesRequest, () => { requests++; });
  deployer = new Deployer({
    store, bus: cpBus, secrets: new SecretBox(FileKeyProvider.fromKey(Buffer.alloc(32, 5)), store), events: new EventRecorder(store, cpBus),
    logs: new LogStore(join(dir, 'logs')), logger: pino({ level: 'silent' }),
    settings: { baseDomain: 'localhost', routerPort: 8000, routerScheme: 'http', dataDir: dir, maxUploadBytes: 1 << 20, version: 'test' },
  }, 600_000);
  deployer.start();
  router = await createRouter({ bus: routerBus, host: '127.0.0.1', port: 0 });
});

after(async () => {
  await router?.close();
  await deployer?.stop();
  await routerBus?.close();
  await watch?.close();
  await cpBus?.close();
  await store?.close();
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('a table over 1 MB arrives whole in chunks, never half; a change follows as a delta', async () => {
  await deployer.publishRoutes(true);
  const sizesOf = (ms: RouteTableMessage[]) => ms.map((m) => Buffer.byteLength(JSON.stringify(m)));
  // The router's own requests at start are answered with full tables too (each a new version), and
  // this watcher may be behind the router: wait until it saw every chunk of the version the router holds.
  const chunksHeld = () => {
    const v = router.routesVersion();
    const parts = seen.filter((m) => m.chunk && m.version === v);
    return parts.length > 0 && parts.length === parts[0].chunk!.count ? parts : null;
  };
  await until('the router holds a full table the watcher saw whole', () => chunksHeld() !== null);
  const full = chunksHeld()!;
  sizes = sizesOf(full);
  assert.ok(sizes.reduce((a, b) => a + b, 0) > 1024 * 1024, 'the table is larger than one NATS message may be');
  assert.ok(Math.max(...sizes) <= 256 * 1024, 'each chunk stays under the limit');
  const held = router.table();
  assert.equal(Object.keys(held.routes).length, APPS);
  assert.equal(full.length, full[0].chunk!.count);
  assert.ok(held.routes['route-table-scale-11999.localhost']);

  const app = await store.apps.create({ id: newId('app'), organizationId: (await store.apps.listAll())[0].organizationId, name: 'newcomer', plan: 'standard' });
  const before = seen.length;
  await deployer.publishRoutes(false);
  await until('the router holds the new app', () => router.table().routes['newcomer.localhost']?.appId === app.id);
  // (Full tables may still be in flight: the router's own request at start is answered too.)
  const sent = seen.slice(before).filter((m) => m.delta);
  assert.equal(sent.length, 1, 'one delta for one change');
  assert.deepEqual(Object.keys(sent[0].routes), ['newcomer.localhost']);
  assert.ok(Buffer.byteLength(JSON.stringify(sent[0])) < 4096, 'the delta is small');
  assert.equal(Object.keys(router.table().routes).length, APPS + 1);
});

test('a router that missed a delta keeps its table and asks for the full one', async () => {
  const held = router.table();
  const asked = requests;
  await cpBus.publish(subjects.routes, { version: held.version + 10, routes: {}, delta: { base: held.version + 9, removed: ['newcomer.localhost'] } } satisfies RouteTableMessage);
  await until('the router asks for the full table', () => requests > asked);
  // The deployer answers the request with the full table (a new version): the router takes it whole.
  await until('the router holds the answer', () => router.table().version > held.version);
  assert.equal(Object.keys(router.table().routes).length, APPS + 1);
});
