/**
 * The Store contract as tests, written once and run against every implementation
 * (`sqlite.test.ts`, and `postgres.test.ts` against a real PostgreSQL it starts).
 * `open` must return a fresh, empty, migrated store each time.
 */
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_DEPLOY_SETTINGS, newId } from '@shellwego/core';
import type { AppRow, InstanceRow, OrganizationRow, PassPage, ReleaseRow, Store, UserRow } from './types.ts';
import { CONSTRAINTS } from './schema.ts';
import { StoreConflictError, StoreMisuseError, StoreReferenceError } from './errors.ts';
import { migrations } from './migrations/index.ts';

interface Tenant { org: OrganizationRow; user: UserRow; app: AppRow }

async function tenant(store: Store, name: string): Promise<Tenant> {
  const user = await store.users.create({ id: newId('usr'), email: `${name}@example.com`, passwordHash: 'h', platformAdmin: false });
  const org = await store.organizations.create({ id: newId('org'), name });
  await store.memberships.add({ id: newId('mem'), organizationId: org.id, userId: user.id, role: 'owner' });
  const app = await store.apps.create({ id: newId('app'), organizationId: org.id, name: `${name}-app`, plan: 'standard' });
  return { org, user, app };
}

function release(t: Tenant, buildId: string, extra: Partial<ReleaseRow> = {}) {
  return {
    id: newId('rel'), appId: t.app.id, organizationId: t.org.id, buildId, description: 'Deploy', processTypes: { web: 'node server.js' },
    artifactDigest: 'a'.repeat(64), configSealed: 'sealed', configKeys: ['A'], createdBy: t.user.email, ...extra,
  };
}

function instance(t: Tenant, rel: ReleaseRow, extra: Partial<Omit<InstanceRow, 'stopAfter'>> = {}): Omit<InstanceRow, 'createdAt' | 'updatedAt' | 'stopAfter' | 'placement'> {
  return {
    id: newId('ins'), appId: t.app.id, organizationId: t.org.id, releaseId: rel.id, releaseVersion: rel.version, processType: 'web',
    index: 0, nodeId: 'nod_1', desired: 'running', state: 'pending', exitCode: null, signal: null, oomKilled: false, restarts: 0,
    address: null, startedAt: null, restartGeneration: 0, lastLog: [], ...extra,
  };
}

async function build(store: Store, t: Tenant) {
  return store.builds.create({ id: newId('bld'), appId: t.app.id, organizationId: t.org.id, sourceDigest: 'b'.repeat(64), createdBy: t.user.email });
}

function conflict(constraint: string) {
  return (err: unknown) => {
    assert.ok(err instanceof StoreConflictError, `expected StoreConflictError, got ${String(err)}`);
    assert.equal(err.constraint, constraint);
    assert.equal(err.status, 409);
    assert.equal(err.code, 'already_exists');
    return true;
  };
}

const notFoundRef = (err: unknown) => err instanceof StoreReferenceError && err.status === 404;

export function storeSuite(name: string, open: () => Promise<Store>): void {
  describe(`store contract: ${name}`, () => {
    let store: Store;
    beforeEach(async () => {
      store = await open();
    });
    afterEach(async () => {
      await store.close();
    });

    it('reports its applied migrations', async () => {
      assert.deepEqual(await store.migrations(), Object.keys(migrations).sort());
    });

    it('organization keys: first writer wins, per organization, whole org row only', async () => {
      const a = await tenant(store, 'acme');
      const b = await tenant(store, 'globex');
      assert.equal(await store.organizationKeys.get(a.org.id), undefined);
      const first = await store.organizationKeys.createIfAbsent({ organizationId: a.org.id, provider: 'file', keyId: 'k1', wrappedKey: 'wrapped-a' });
      assert.deepEqual({ ...first, createdAt: '' }, { organizationId: a.org.id, provider: 'file', keyId: 'k1', wrappedKey: 'wrapped-a', createdAt: '' });
      assert.match(first.createdAt, /^\d{4}-\d\d-\d\dT/);
      // A second (racing) creator gets the stored key back, not its own.
      const again = await store.organizationKeys.createIfAbsent({ organizationId: a.org.id, provider: 'file', keyId: 'k2', wrappedKey: 'wrapped-other' });
      assert.deepEqual(again, first);
      assert.deepEqual(await store.organizationKeys.get(a.org.id), first);
      // Concurrent first uses agree on one key.
      const racers = await Promise.all(['x', 'y', 'z'].map((w) => store.organizationKeys.createIfAbsent({ organizationId: b.org.id, provider: 'file', keyId: 'k1', wrappedKey: w })));
      assert.equal(new Set(racers.map((r) => r.wrappedKey)).size, 1);
      assert.equal((await store.organizationKeys.get(b.org.id))!.wrappedKey, racers[0].wrappedKey);
      // Inside a transaction that rolls back, the key is gone with it.
      const c = await store.organizations.create({ id: newId('org'), name: 'initech' });
      await assert.rejects(store.transaction(async (tx) => {
        await tx.organizationKeys.createIfAbsent({ organizationId: c.id, provider: 'file', keyId: 'k1', wrappedKey: 'w' });
        assert.ok(await tx.organizationKeys.get(c.id));
        throw new Error('roll back');
      }), /roll back/);
      assert.equal(await store.organizationKeys.get(c.id), undefined);
      // Only for an existing organization.
      await assert.rejects(store.organizationKeys.createIfAbsent({ organizationId: 'org_missing', provider: 'file', keyId: 'k1', wrappedKey: 'w' }));
    });

    it('users: create, look up, count, change password, unique email', async () => {
      assert.equal(await store.users.count(), 0);
      const u = await store.users.create({ id: newId('usr'), email: 'ada@example.com', passwordHash: 'h1', platformAdmin: true });
      assert.equal(u.platformAdmin, true);
      assert.match(u.createdAt, /^\d{4}-\d\d-\d\dT/);
      assert.deepEqual(await store.users.byId(u.id), u);
      assert.deepEqual(await store.users.byEmail('ada@example.com'), u);
      assert.equal(await store.users.byEmail('nobody@example.com'), undefined);
      await store.users.setPassword(u.id, 'h2');
      assert.equal((await store.users.byId(u.id))!.passwordHash, 'h2');
      assert.equal(await store.users.count(), 1);
      await assert.rejects(
        store.users.create({ id: newId('usr'), email: 'ada@example.com', passwordHash: 'x', platformAdmin: false }),
        conflict(CONSTRAINTS.userEmail),
      );
      assert.equal(await store.users.count(), 1);
    });

    it('organizations: create, look up, list for a user with role, unique name', async () => {
      const a = await tenant(store, 'acme');
      const other = await store.organizations.create({ id: newId('org'), name: 'other' });
      await store.memberships.add({ id: newId('mem'), organizationId: other.id, userId: a.user.id, role: 'viewer' });
      assert.deepEqual(await store.organizations.byId(a.org.id), a.org);
      assert.deepEqual(await store.organizations.byName('other'), other);
      assert.equal(await store.organizations.byName('missing'), undefined);
      const list = await store.organizations.listForUser(a.user.id);
      assert.deepEqual(list.map((o) => [o.name, o.role]).sort(), [['acme', 'owner'], ['other', 'viewer']]);
      await assert.rejects(store.organizations.create({ id: newId('org'), name: 'acme' }), conflict(CONSTRAINTS.organizationName));
    });

    it('memberships: add, get, list, change role, count owners, remove, unique per org', async () => {
      const a = await tenant(store, 'acme');
      const bob = await store.users.create({ id: newId('usr'), email: 'bob@example.com', passwordHash: 'h', platformAdmin: false });
      const m = await store.memberships.add({ id: newId('mem'), organizationId: a.org.id, userId: bob.id, role: 'developer' });
      assert.equal(m.email, 'bob@example.com');
      assert.equal(m.role, 'developer');
      assert.deepEqual(await store.memberships.get(a.org.id, bob.id), m);
      assert.deepEqual((await store.memberships.list(a.org.id)).map((x) => x.email).sort(), ['acme@example.com', 'bob@example.com']);
      assert.equal(await store.memberships.countOwners(a.org.id), 1);
      const up = await store.memberships.updateRole(a.org.id, bob.id, 'owner');
      assert.equal(up!.role, 'owner');
      assert.equal(await store.memberships.countOwners(a.org.id), 2);
      await assert.rejects(
        store.memberships.add({ id: newId('mem'), organizationId: a.org.id, userId: bob.id, role: 'viewer' }),
        conflict(CONSTRAINTS.membership),
      );
      assert.equal(await store.memberships.remove(a.org.id, bob.id), true);
      assert.equal(await store.memberships.remove(a.org.id, bob.id), false);
      assert.equal(await store.memberships.get(a.org.id, bob.id), undefined);
      assert.equal(await store.memberships.updateRole(a.org.id, bob.id, 'admin'), undefined);
    });

    it('memberships need a real user and organization', async () => {
      const a = await tenant(store, 'acme');
      await assert.rejects(store.memberships.add({ id: newId('mem'), organizationId: a.org.id, userId: 'usr_missing', role: 'viewer' }), notFoundRef);
    });

    it('tokens: create, by hash, list API tokens only, touch, delete, unique hash', async () => {
      const a = await tenant(store, 'acme');
      const base = { userId: a.user.id, organizationId: a.org.id, scopes: ['apps:read', 'apps:deploy'], expiresAt: null };
      const api = await store.tokens.create({ ...base, id: newId('tok'), name: 'ci', tokenHash: 'hash-1', kind: 'api' });
      await store.tokens.create({ ...base, id: newId('tok'), name: 'session', tokenHash: 'hash-2', kind: 'session', expiresAt: '2030-01-01T00:00:00.000Z' });
      assert.deepEqual(api.scopes, ['apps:read', 'apps:deploy']);
      assert.equal(api.lastUsedAt, null);
      assert.deepEqual(await store.tokens.byHash('hash-1'), api);
      assert.equal((await store.tokens.byHash('hash-2'))!.expiresAt, '2030-01-01T00:00:00.000Z');
      assert.deepEqual((await store.tokens.listForUser(a.org.id, a.user.id)).map((t) => t.name), ['ci']);
      await store.tokens.touch(api.id, '2026-01-01T00:00:00.000Z');
      assert.equal((await store.tokens.byHash('hash-1'))!.lastUsedAt, '2026-01-01T00:00:00.000Z');
      await assert.rejects(store.tokens.create({ ...base, id: newId('tok'), name: 'dup', tokenHash: 'hash-1', kind: 'api' }), conflict(CONSTRAINTS.tokenHash));
      assert.equal(await store.tokens.delete(a.org.id, a.user.id, api.id), true);
      assert.equal(await store.tokens.byHash('hash-1'), undefined);
      assert.equal(await store.tokens.delete(a.org.id, a.user.id, api.id), false);
    });

    it('apps: create, get by name or id, list, update; names are unique across organizations', async () => {
      const a = await tenant(store, 'acme');
      const b = await tenant(store, 'beta');
      assert.equal(a.app.currentReleaseId, null);
      assert.equal(a.app.restartGeneration, 0);
      assert.deepEqual(await store.apps.get(a.org.id, 'acme-app'), a.app);
      assert.deepEqual(await store.apps.get(a.org.id, a.app.id), a.app);
      assert.equal(await store.apps.get(a.org.id, 'nope'), undefined);
      assert.equal(await store.apps.nameTaken('acme-app'), true);
      assert.equal(await store.apps.nameTaken('free-name'), false);
      const second = await store.apps.create({ id: newId('app'), organizationId: a.org.id, name: 'aardvark', plan: 'free' });
      assert.deepEqual((await store.apps.list(a.org.id)).map((x) => x.name), ['aardvark', 'acme-app']);
      assert.deepEqual((await store.apps.listAll()).map((x) => x.id).sort(), [a.app.id, b.app.id, second.id].sort());
      const up = await store.apps.update(a.org.id, a.app.id, { plan: 'performance', restartGeneration: 3, currentReleaseId: 'rel_x' });
      assert.equal(up!.plan, 'performance');
      assert.equal(up!.restartGeneration, 3);
      assert.equal(up!.currentReleaseId, 'rel_x');
      assert.ok(up!.updatedAt >= a.app.updatedAt);
      await assert.rejects(store.apps.create({ id: newId('app'), organizationId: b.org.id, name: 'acme-app', plan: 'free' }), conflict(CONSTRAINTS.appName));
      await assert.rejects(store.apps.create({ id: newId('app'), organizationId: 'org_missing', name: 'orphan', plan: 'free' }), notFoundRef);
    });

    it('config: set, overwrite and remove keys in one call', async () => {
      const a = await tenant(store, 'acme');
      assert.deepEqual(await store.config.get(a.org.id, a.app.id), {});
      await store.config.apply(a.org.id, a.app.id, { A: 's1', B: 's2' });
      await store.config.apply(a.org.id, a.app.id, { A: null, B: 's3', C: 's4', MISSING: null });
      assert.deepEqual(await store.config.get(a.org.id, a.app.id), { B: 's3', C: 's4' });
      await store.config.apply(a.org.id, a.app.id, {});
      await assert.rejects(store.config.apply(a.org.id, 'app_missing', { A: 'x' }), notFoundRef);
    });

    it('text sorts by bytes (case and punctuation count), the same in every dialect', async () => {
      const a = await tenant(store, 'acme');
      await store.config.apply(a.org.id, a.app.id, { a: '1', B: '2', AC: '3', A_B: '4' });
      assert.deepEqual(Object.keys(await store.config.get(a.org.id, a.app.id)), ['AC', 'A_B', 'B', 'a']);
      for (const name of ['b-x', 'bx', 'b-a', 'ba']) await store.apps.create({ id: newId('app'), organizationId: a.org.id, name, plan: 'free' });
      assert.deepEqual((await store.apps.list(a.org.id)).map((x) => x.name), ['acme-app', 'b-a', 'b-x', 'ba', 'bx']);
      // Pages follow the same order: after a name (present or not), at most `limit`.
      assert.deepEqual((await store.apps.list(a.org.id, { limit: 2 })).map((x) => x.name), ['acme-app', 'b-a']);
      assert.deepEqual((await store.apps.list(a.org.id, { after: 'b-a', limit: 2 })).map((x) => x.name), ['b-x', 'ba']);
      assert.deepEqual((await store.apps.list(a.org.id, { after: 'b-y', limit: 2 })).map((x) => x.name), ['ba', 'bx']);
      assert.deepEqual((await store.apps.list(a.org.id, { after: 'bx' })).map((x) => x.name), []);
    });

    it('formation: upsert creates with defaults and patches only the given fields', async () => {
      const a = await tenant(store, 'acme');
      const web = await store.formation.upsert(a.org.id, a.app.id, 'web', { command: 'node server.js' });
      assert.deepEqual([web.quantity, web.command], [0, 'node server.js']);
      await store.formation.upsert(a.org.id, a.app.id, 'web', { quantity: 3 });
      await store.formation.upsert(a.org.id, a.app.id, 'worker', { quantity: 1, command: null });
      let list = await store.formation.list(a.org.id, a.app.id);
      assert.deepEqual(list.map((f) => [f.type, f.quantity, f.command]), [['web', 3, 'node server.js'], ['worker', 1, null]]);
      assert.equal(list[0].appId, a.app.id);
      await store.formation.remove(a.org.id, a.app.id, 'worker');
      list = await store.formation.list(a.org.id, a.app.id);
      assert.deepEqual(list.map((f) => f.type), ['web']);
    });

    it('builds: create pending, get, list newest first, unfinished, update', async () => {
      const a = await tenant(store, 'acme');
      const b1 = await build(store, a);
      assert.equal(b1.state, 'pending');
      assert.deepEqual(b1.processTypes, {});
      assert.equal(b1.cacheHit, null);
      assert.equal(b1.finishedAt, null);
      await new Promise((r) => setTimeout(r, 3));
      const b2 = await build(store, a);
      assert.deepEqual(await store.builds.get(a.org.id, a.app.id, b1.id), b1);
      assert.deepEqual(await store.builds.byId(b2.id), b2);
      assert.deepEqual((await store.builds.list(a.org.id, a.app.id)).map((b) => b.id), [b2.id, b1.id]);
      assert.deepEqual((await store.builds.list(a.org.id, a.app.id, 1)).map((b) => b.id), [b2.id]);
      const done = await store.builds.update(b1.id, {
        state: 'succeeded', stack: 'node', artifactDigest: 'c'.repeat(64), processTypes: { web: 'npm start' }, cacheHit: false,
        releaseId: 'rel_1', finishedAt: '2026-01-01T00:00:00.000Z',
      });
      assert.deepEqual(
        [done!.state, done!.stack, done!.processTypes, done!.cacheHit, done!.releaseId, done!.error],
        ['succeeded', 'node', { web: 'npm start' }, false, 'rel_1', null],
      );
      await store.builds.update(b2.id, { state: 'building' });
      assert.deepEqual((await store.builds.listUnfinished()).map((b) => b.id), [b2.id]);
      assert.equal(await store.builds.update('bld_missing', { state: 'failed' }), undefined);
    });

    it('releases: versions 1, 2, 3 in order; look up by id and version; list newest first', async () => {
      const a = await tenant(store, 'acme');
      const b = await build(store, a);
      const r1 = await store.releases.create(release(a, b.id));
      const r2 = await store.releases.create(release(a, b.id));
      const r3 = await store.releases.create(release(a, b.id, { configKeys: ['A', 'B'], processTypes: { web: 'x', worker: 'y' } }));
      assert.deepEqual([r1.version, r2.version, r3.version], [1, 2, 3]);
      assert.deepEqual(r3.configKeys, ['A', 'B']);
      assert.deepEqual(r3.processTypes, { web: 'x', worker: 'y' });
      assert.deepEqual(await store.releases.byId(a.org.id, r2.id), r2);
      assert.deepEqual(await store.releases.byVersion(a.org.id, a.app.id, 3), r3);
      assert.equal(await store.releases.byVersion(a.org.id, a.app.id, 4), undefined);
      assert.deepEqual((await store.releases.list(a.org.id, a.app.id)).map((r) => r.version), [3, 2, 1]);
      assert.deepEqual((await store.releases.list(a.org.id, a.app.id, 2)).map((r) => r.version), [3, 2]);
      assert.deepEqual(await store.releases.versionsByIds(a.org.id, [r1.id, r3.id, 'rel_missing']), new Map([[r1.id, 1], [r3.id, 3]]));
      // Versions are per app.
      const other = await store.apps.create({ id: newId('app'), organizationId: a.org.id, name: 'second', plan: 'free' });
      const ob = await store.builds.create({ id: newId('bld'), appId: other.id, organizationId: a.org.id, sourceDigest: 'd', createdBy: null });
      assert.equal((await store.releases.create({ ...release(a, ob.id), appId: other.id })).version, 1);
    });

    it('releases: concurrent creates get distinct, gap-free versions', async () => {
      const a = await tenant(store, 'acme');
      const b = await build(store, a);
      const rs = await Promise.all(Array.from({ length: 12 }, () => store.releases.create(release(a, b.id))));
      assert.deepEqual(rs.map((r) => r.version).sort((x, y) => x - y), Array.from({ length: 12 }, (_, i) => i + 1));
      const more = await Promise.all(Array.from({ length: 4 }, () => store.transaction((tx) => tx.releases.create(release(a, b.id)))));
      assert.deepEqual(more.map((r) => r.version).sort((x, y) => x - y), [13, 14, 15, 16]);
    });

    it('instances: create, look up, list by app / node / active, update, delete', async () => {
      const a = await tenant(store, 'acme');
      const b = await build(store, a);
      const rel = await store.releases.create(release(a, b.id));
      const i0 = await store.instances.create(instance(a, rel, { index: 0 }));
      const i1 = await store.instances.create(instance(a, rel, { index: 1, nodeId: 'nod_2' }));
      const gone = await store.instances.create(instance(a, rel, { processType: 'worker', desired: 'stopped', state: 'stopped' }));
      assert.deepEqual(i0.lastLog, []);
      assert.equal(i0.oomKilled, false);
      assert.deepEqual(await store.instances.get(a.org.id, i0.id), i0);
      assert.deepEqual(await store.instances.byId(i1.id), i1);
      assert.deepEqual((await store.instances.listByApp(a.org.id, a.app.id)).map((i) => i.id), [i0.id, i1.id, gone.id]);
      assert.deepEqual((await store.instances.listByNode('nod_2')).map((i) => i.id), [i1.id]);
      assert.deepEqual((await store.instances.listActive()).map((i) => i.id).sort(), [i0.id, i1.id].sort());
      const up = await store.instances.update(i0.id, {
        state: 'crashed', exitCode: 137, signal: 'SIGKILL', oomKilled: true, restarts: 2, lastLog: ['a', 'b'], address: '10.0.0.2:5000',
        startedAt: '2026-01-01T00:00:00.000Z', nodeId: null,
      });
      assert.deepEqual(
        [up!.state, up!.exitCode, up!.signal, up!.oomKilled, up!.restarts, up!.lastLog, up!.address, up!.nodeId],
        ['crashed', 137, 'SIGKILL', true, 2, ['a', 'b'], '10.0.0.2:5000', null],
      );
      assert.equal(up!.releaseId, rel.id);
      await store.instances.delete(i1.id);
      assert.equal(await store.instances.byId(i1.id), undefined);
      assert.equal(await store.instances.update(i1.id, { state: 'running' }), undefined);
    });

    it('events: append, list newest first, by app, with a limit', async () => {
      const a = await tenant(store, 'acme');
      for (let i = 0; i < 5; i++) {
        await store.events.append({
          id: newId('evt'), organizationId: a.org.id, appId: i % 2 ? a.app.id : null, type: 't', message: `m${i}`,
          data: { i, nested: { ok: true } }, createdAt: `2026-01-01T00:00:0${i}.000Z`,
        });
      }
      const fresh = await store.events.append({ id: newId('evt'), organizationId: a.org.id, appId: null, type: 'now', message: 'x', data: {} });
      assert.match(fresh.createdAt, /^\d{4}-/);
      const all = await store.events.list(a.org.id);
      assert.deepEqual(all.map((e) => e.message), ['x', 'm4', 'm3', 'm2', 'm1', 'm0']);
      assert.deepEqual(all[1].data, { i: 4, nested: { ok: true } });
      assert.deepEqual((await store.events.list(a.org.id, { appId: a.app.id })).map((e) => e.message), ['m3', 'm1']);
      assert.deepEqual((await store.events.list(a.org.id, { limit: 2 })).map((e) => e.message), ['x', 'm4']);
    });

    it('nodes: upsert inserts then updates (keeping createdAt), list, set state', async () => {
      const n = await store.nodes.upsert({ id: 'nod_1', name: 'alpha', state: 'ready', isolation: 'process', cpus: 2, memoryMb: 4096, lastHeartbeatAt: null });
      await store.nodes.upsert({ id: 'nod_0', name: 'zeta', state: 'ready', isolation: 'runc', cpus: 0.5, memoryMb: 512, lastHeartbeatAt: null });
      const again = await store.nodes.upsert({ ...n, cpus: 4, lastHeartbeatAt: '2026-01-01T00:00:00.000Z' });
      assert.equal(again.createdAt, n.createdAt);
      assert.equal(again.cpus, 4);
      assert.equal(again.lastHeartbeatAt, '2026-01-01T00:00:00.000Z');
      await store.nodes.setState('nod_1', 'down');
      assert.equal((await store.nodes.byId('nod_1'))!.state, 'down');
      assert.equal((await store.nodes.byId('nod_0'))!.cpus, 0.5);
      assert.deepEqual((await store.nodes.list()).map((x) => x.name), ['alpha', 'zeta']);
      assert.equal(await store.nodes.byId('nod_missing'), undefined);
    });

    it('nodes: scheduling fields — heartbeats write capacity and agent labels, operator labels/taints/state survive them', async () => {
      const hb = { id: 'nod_s', name: 'sched', state: 'ready' as const, isolation: 'sandbox', cpus: 2, memoryMb: 2048, lastHeartbeatAt: null };
      const n = await store.nodes.upsert({ ...hb, diskMb: 10_000, agentLabels: { zone: 'a' } });
      assert.deepEqual([n.diskMb, n.agentLabels, n.labels, n.taints, n.operatorState], [10_000, { zone: 'a' }, {}, [], null]);
      const spec = await store.nodes.updateSpec('nod_s', { labels: { disk: 'ssd' }, taints: [{ key: 'gpu', value: 'true', effect: 'NoSchedule' }], operatorState: 'cordoned' });
      assert.deepEqual([spec!.labels, spec!.taints, spec!.operatorState], [{ disk: 'ssd' }, [{ key: 'gpu', value: 'true', effect: 'NoSchedule' }], 'cordoned']);
      // A heartbeat (also one without the optional fields) keeps what the operator set.
      const after = await store.nodes.upsert({ ...hb, lastHeartbeatAt: '2026-01-01T00:00:00.000Z' });
      assert.deepEqual([after.diskMb, after.agentLabels, after.labels, after.operatorState, after.taints.length], [null, {}, { disk: 'ssd' }, 'cordoned', 1]);
      await store.nodes.setState('nod_s', 'down');
      assert.deepEqual(await store.nodes.byId('nod_s').then((x) => [x!.state, x!.operatorState]), ['down', 'cordoned']);
      assert.equal((await store.nodes.updateSpec('nod_s', { operatorState: null }))!.operatorState, null);
      assert.equal((await store.nodes.updateSpec('nod_s', {}))!.id, 'nod_s');
      assert.equal(await store.nodes.updateSpec('nod_missing', { labels: {} }), undefined);
      assert.equal(await store.nodes.delete('nod_s'), true);
      assert.equal(await store.nodes.delete('nod_s'), false);
      assert.equal(await store.nodes.byId('nod_s'), undefined);
    });

    it('cluster routing: heartbeats write the node\'s cluster endpoint; a shared secret is created once', async () => {
      const hb = { id: 'nod_c', name: 'cluster', state: 'ready' as const, isolation: 'sandbox', cpus: 2, memoryMb: 2048, lastHeartbeatAt: null };
      assert.equal((await store.nodes.upsert({ ...hb, clusterEndpoint: '10.0.0.7:8001' })).clusterEndpoint, '10.0.0.7:8001');
      assert.equal((await store.nodes.list()).find((n) => n.id === 'nod_c')!.clusterEndpoint, '10.0.0.7:8001');
      assert.equal((await store.nodes.upsert(hb)).clusterEndpoint, null, 'an agent reporting none (older) clears it');
      const first = await store.clusterSecrets.getOrCreate('suite-secret', () => 'one');
      assert.equal(first, 'one');
      assert.equal(await store.clusterSecrets.getOrCreate('suite-secret', () => 'two'), 'one', 'the first value stays');
    });

    it("NATS users: a removed node's users are revoked, and stay on the revocation list", async () => {
      await store.natsUsers.add({ userKey: 'UNATSSUITE1', nodeId: 'nod_nats' });
      await store.natsUsers.add({ userKey: 'UNATSSUITE2', nodeId: 'nod_nats_other' });
      assert.deepEqual((await store.natsUsers.byNode('nod_nats')).map((u) => [u.userKey, u.revokedAt]), [['UNATSSUITE1', null]]);
      assert.equal(await store.natsUsers.revokeNode('nod_nats', '2026-01-02T00:00:00.000Z'), 1);
      assert.equal(await store.natsUsers.revokeNode('nod_nats', '2026-01-03T00:00:00.000Z'), 0, 'revoked once: the first time stays');
      const revoked = (await store.natsUsers.revoked()).filter((u) => u.userKey.startsWith('UNATSSUITE'));
      assert.deepEqual(revoked.map((u) => [u.userKey, u.revokedAt]), [['UNATSSUITE1', '2026-01-02T00:00:00.000Z']]);
    });

    it('scheduling: placement is a compare-and-set — two placers racing for one node place exactly what it holds, the rest wait with a reason', async () => {
      const t = await tenant(store, 'cas'); // plan standard: 512 MB, 1 CPU
      const rel = await store.releases.create(release(t, (await build(store, t)).id));
      // Room for 3 instances by memory; CPUs (2 × overcommit 4) would take 8.
      await store.nodes.upsert({ id: 'nod_cas', name: 'cas', state: 'ready', isolation: 'process', cpus: 2, memoryMb: 3 * 512, lastHeartbeatAt: null });
      const waiting = await Promise.all(Array.from({ length: 10 }, (_, i) => store.instances.create(instance(t, rel, { index: i + 1, nodeId: null }))));
      const claim = (id: string) => store.transaction((tx) =>
        tx.scheduling.claim({ instanceId: id, nodeId: 'nod_cas', memoryMb: 512, cpus: 1, cpuOvercommit: 4, placement: 'on cas' }));
      // Two control planes, each placing five at once (PostgreSQL: concurrent transactions on the pool).
      const [a, b] = await Promise.all([Promise.all(waiting.slice(0, 5).map((i) => claim(i.id))), Promise.all(waiting.slice(5).map((i) => claim(i.id)))]);
      const results = [...a, ...b];
      assert.equal(results.filter((r) => r.placed).length, 3);
      for (const r of results.filter((x) => !x.placed)) assert.match(r.placed ? '' : r.reason, /^cas needs 512 MB, has 0 MB free/);
      const rows = await store.instances.listByApp(t.org.id, t.app.id);
      assert.equal(rows.filter((i) => i.nodeId === 'nod_cas').length, 3);
      assert.deepEqual(rows.filter((i) => i.nodeId === 'nod_cas').map((i) => i.placement), ['on cas', 'on cas', 'on cas']);
      assert.deepEqual((await store.scheduling.allocations()).get('nod_cas'), { nodeId: 'nod_cas', memoryMb: 1536, cpus: 3, instances: 3 });

      // A placed instance is never moved by a claim; a node that is not ready takes nothing.
      const placed = rows.find((i) => i.nodeId === 'nod_cas')!;
      await store.nodes.upsert({ id: 'nod_big', name: 'big', state: 'ready', isolation: 'process', cpus: 64, memoryMb: 65_536, lastHeartbeatAt: null });
      assert.deepEqual(await claim(placed.id).then((r) => r.placed), false);
      const moved = await store.transaction((tx) => tx.scheduling.claim({ instanceId: placed.id, nodeId: 'nod_big', memoryMb: 512, cpus: 1, cpuOvercommit: 4, placement: 'x' }));
      assert.equal(moved.placed ? '' : moved.reason, 'the instance is no longer waiting for a node');
      await store.nodes.updateSpec('nod_big', { operatorState: 'cordoned' });
      const left = rows.find((i) => i.nodeId === null)!;
      const cordoned = await store.scheduling.claim({ instanceId: left.id, nodeId: 'nod_big', memoryMb: 512, cpus: 1, cpuOvercommit: 4, placement: 'x' });
      assert.equal(cordoned.placed ? '' : cordoned.reason, 'big is cordoned');
      assert.equal((await store.scheduling.claim({ instanceId: left.id, nodeId: 'nod_gone', memoryMb: 512, cpus: 1, cpuOvercommit: 4, placement: 'x' })).placed, false);
      // A node is marked down only if no heartbeat came since the one judged too old.
      const beat = await store.nodes.upsert({ id: 'nod_hb', name: 'hb', state: 'ready', isolation: 'process', cpus: 1, memoryMb: 512, lastHeartbeatAt: '2026-01-01T00:00:00.000Z' });
      await store.nodes.upsert({ ...beat, lastHeartbeatAt: '2026-01-01T00:00:02.000Z' });
      assert.equal(await store.scheduling.markDown('nod_hb', '2026-01-01T00:00:00.000Z'), false);
      assert.equal((await store.nodes.byId('nod_hb'))!.state, 'ready');
      assert.equal(await store.scheduling.markDown('nod_hb', '2026-01-01T00:00:02.000Z'), true);
      assert.equal((await store.nodes.byId('nod_hb'))!.state, 'down');
      // Stopping frees the room: allocations count instances desired running only.
      await store.instances.update(placed.id, { desired: 'stopped' });
      assert.equal((await store.scheduling.allocations()).get('nod_cas')?.memoryMb, 1024);
      assert.equal((await claim(left.id)).placed, true);
    });

    it('volumes: create, get by name or id, unique name and mount path per app, tenant walls, deleted with the app', async () => {
      const t = await tenant(store, 'vol');
      const other = await tenant(store, 'vol-other');
      const v = await store.volumes.create({ id: newId('vol'), organizationId: t.org.id, appId: t.app.id, name: 'data', processType: 'web', mountPath: '/data', sizeMb: 1024 });
      assert.equal(v.nodeId, null);
      assert.equal((await store.volumes.get(t.org.id, t.app.id, 'data'))?.id, v.id);
      assert.equal((await store.volumes.get(t.org.id, t.app.id, v.id))?.name, 'data');
      assert.equal(await store.volumes.get(other.org.id, t.app.id, 'data'), undefined);
      assert.equal(await store.volumes.delete(other.org.id, t.app.id, v.id), false);
      await assert.rejects(store.volumes.create({ id: newId('vol'), organizationId: t.org.id, appId: t.app.id, name: 'data', processType: 'worker', mountPath: '/x', sizeMb: 1 }), conflict(CONSTRAINTS.volumeName));
      await assert.rejects(store.volumes.create({ id: newId('vol'), organizationId: t.org.id, appId: t.app.id, name: 'two', processType: 'web', mountPath: '/data', sizeMb: 1 }), conflict(CONSTRAINTS.volumeMountPath));
      // Another organization's app cannot get a volume (the foreign key includes the organization).
      await assert.rejects(store.volumes.create({ id: newId('vol'), organizationId: other.org.id, appId: t.app.id, name: 'x', processType: 'web', mountPath: '/x', sizeMb: 1 }), notFoundRef);
      await store.volumes.create({ id: newId('vol'), organizationId: t.org.id, appId: t.app.id, name: 'cache', processType: 'worker', mountPath: '/data', sizeMb: 10 });
      assert.deepEqual((await store.volumes.list(t.org.id, t.app.id)).map((x) => x.name), ['cache', 'data']);
      assert.deepEqual(await store.volumes.listPinned(), []);
      assert.equal(await store.apps.delete(t.org.id, t.app.id), true);
      assert.deepEqual(await store.volumes.list(t.org.id, t.app.id), []);
    });

    it('scheduling: a volume is pinned in the placement claim — two placements racing for one unpinned volume on two nodes, one pin wins', async () => {
      const t = await tenant(store, 'pin');
      const rel = await store.releases.create(release(t, (await build(store, t)).id));
      for (const [id, name] of [['nod_pa', 'pa'], ['nod_pb', 'pb']]) {
        await store.nodes.upsert({ id, name, state: 'ready', isolation: 'process', cpus: 8, memoryMb: 8192, lastHeartbeatAt: null });
      }
      const vol = await store.volumes.create({ id: newId('vol'), organizationId: t.org.id, appId: t.app.id, name: 'data', processType: 'web', mountPath: '/data', sizeMb: 1024 });
      const [i1, i2] = await Promise.all([1, 2].map((index) => store.instances.create(instance(t, rel, { index, nodeId: null }))));
      const claim = (instanceId: string, nodeId: string) => store.transaction((tx) =>
        tx.scheduling.claim({ instanceId, nodeId, memoryMb: 512, cpus: 1, cpuOvercommit: 4, placement: `on ${nodeId}`, volumeIds: [vol.id] }));
      // Two control planes choose different nodes for the same volume at once.
      const [a, b] = await Promise.all([claim(i1.id, 'nod_pa'), claim(i2.id, 'nod_pb')]);
      assert.equal([a, b].filter((r) => r.placed).length, 1, 'exactly one placement wins');
      const winner = a.placed ? 'nod_pa' : 'nod_pb';
      const loser = a.placed ? { r: b, i: i2 } : { r: a, i: i1 };
      assert.equal(loser.r.placed ? '' : loser.r.reason, `volume "data" lives on node ${winner === 'nod_pa' ? 'pa' : 'pb'} (pinned meanwhile)`);
      assert.deepEqual(loser.r.placed ? null : loser.r.pinned, { [vol.id]: winner });
      assert.equal((await store.volumes.get(t.org.id, t.app.id, 'data'))?.nodeId, winner);
      // The refused instance is untouched: still waiting, and placed when it asks for the volume's node.
      assert.equal((await store.instances.byId(loser.i.id))?.nodeId, null);
      assert.equal((await claim(loser.i.id, winner)).placed, true);
      assert.deepEqual((await store.volumes.byNode(winner)).map((v) => v.id), [vol.id]);
      assert.deepEqual((await store.volumes.listPinned()).map((v) => v.id), [vol.id]);
      // A refused claim writes nothing: a third instance refused for capacity leaves a new volume unpinned.
      const fresh = await store.volumes.create({ id: newId('vol'), organizationId: t.org.id, appId: t.app.id, name: 'more', processType: 'web', mountPath: '/more', sizeMb: 1 });
      const i3 = await store.instances.create(instance(t, rel, { index: 3, nodeId: null }));
      const tooBig = await store.scheduling.claim({ instanceId: i3.id, nodeId: winner, memoryMb: 100_000, cpus: 1, cpuOvercommit: 4, placement: 'x', volumeIds: [vol.id, fresh.id] });
      assert.equal(tooBig.placed, false);
      assert.equal((await store.volumes.get(t.org.id, t.app.id, 'more'))?.nodeId, null);
      // A volume stays pinned: no claim moves it.
      assert.match((await store.scheduling.claim({ instanceId: i3.id, nodeId: winner === 'nod_pa' ? 'nod_pb' : 'nod_pa', memoryMb: 512, cpus: 1, cpuOvercommit: 4, placement: 'x', volumeIds: [vol.id, fresh.id] }) as { reason: string }).reason, /^volume "data" lives on node p[ab]/);
      assert.equal((await store.volumes.get(t.org.id, t.app.id, 'more'))?.nodeId, null);
    });

    it('scheduling: a pass over every app page by page, and process types in bulk', async () => {
      const t = await tenant(store, 'ovw');
      const rel = await store.releases.create(release(t, (await build(store, t)).id, { processTypes: { web: 'a', worker: 'b' } }));
      await store.formation.upsert(t.org.id, t.app.id, 'web', { quantity: 2 });
      await store.formation.upsert(t.org.id, t.app.id, 'worker', { quantity: 1 });
      await store.deployments.setSettings(t.org.id, t.app.id, { ...DEFAULT_DEPLOY_SETTINGS, drainSeconds: 7 });
      await store.instances.create(instance(t, rel, { desired: 'stopped', state: 'stopped' }));
      const deployment = await store.deployments.create({
        organizationId: t.org.id, appId: t.app.id, strategy: 'rolling', settings: DEFAULT_DEPLOY_SETTINGS, reason: null, step: 0, stepStartedAt: null,
        progressAt: new Date().toISOString(), createdBy: t.user.email, id: newId('dep'), fromReleaseId: null, fromVersion: null, toReleaseId: rel.id, toVersion: rel.version,
        state: 'in_progress', phase: 'starting',
      });
      /** Every page from the start, two apps each (other tests' apps are in this store too). */
      const pages = async () => {
        const out: PassPage[] = [];
        for (let after: string | null = null; ;) {
          const page = await store.scheduling.passPage(after, 2);
          if (page.apps.length === 0) return out;
          assert.ok(page.apps.length <= 2);
          out.push(page);
          after = page.apps[page.apps.length - 1].id;
        }
      };
      let all = await pages();
      // Every app exactly once, in id order; each page carries only its own apps' rows.
      assert.deepEqual(all.flatMap((p) => p.apps.map((a) => a.id)), (await store.apps.listAll()).map((a) => a.id).sort());
      for (const p of all) {
        const ids = new Set(p.apps.map((a) => a.id));
        for (const appId of [...p.formations.keys(), ...p.settings.keys(), ...p.withStoppedRows, ...p.instances.map((i) => i.appId), ...p.deployments.map((d) => d.appId)]) assert.ok(ids.has(appId));
      }
      const mine = () => all.find((p) => p.apps.some((a) => a.id === t.app.id))!;
      let o = mine();
      assert.deepEqual(o.formations.get(t.app.id)?.map((f) => [f.type, f.quantity]), [['web', 2], ['worker', 1]]);
      assert.equal(o.settings.get(t.app.id)?.drainSeconds, 7);
      assert.ok(o.withStoppedRows.has(t.app.id));
      assert.deepEqual(o.instances.filter((i) => i.appId === t.app.id), [], 'rows stopped for good are not read');
      assert.deepEqual(o.deployments.filter((d) => d.appId === t.app.id).map((d) => d.id), [deployment.id]);
      const live = await store.instances.create(instance(t, rel, { index: 2, lastLog: ['up'] }));
      await store.instances.update(live.id, { placement: 'on n1: score 100' });
      all = await pages();
      o = mine();
      assert.deepEqual(o.instances.filter((i) => i.appId === t.app.id), [{ ...(await store.instances.byId(live.id))!, lastLog: [], placement: null }]);
      await store.instances.update(live.id, { placement: 'leaving n1 (node is draining): …' });
      all = await pages();
      assert.deepEqual(mine().instances.filter((i) => i.appId === t.app.id).map((i) => i.placement), ['leaving n1 (node is draining): …']);
      assert.deepEqual([...(await store.scheduling.processTypes([rel.id, 'rel_missing'])).entries()], [[rel.id, { web: 'a', worker: 'b' }]]);
    });

    it('placements: per app, tenant-walled, replaced whole, gone with the app; instances keep a placement note', async () => {
      const a = await tenant(store, 'place-a');
      const b = await tenant(store, 'place-b');
      assert.equal(await store.placements.get(a.org.id, a.app.id), undefined);
      await store.placements.set(a.org.id, a.app.id, { requiredLabels: { zone: 'x' }, tolerations: [{ key: 'gpu', effect: 'NoSchedule' }] });
      await store.placements.set(a.org.id, a.app.id, { requiredLabels: { zone: 'y' }, tolerations: [] });
      assert.deepEqual(await store.placements.get(a.org.id, a.app.id), { requiredLabels: { zone: 'y' }, tolerations: [] });
      assert.equal(await store.placements.get(b.org.id, a.app.id), undefined);
      const rel = await store.releases.create(release(a, (await build(store, a)).id));
      const i = await store.instances.create({ ...instance(a, rel), nodeId: null, placement: 'no node fits: n1 is cordoned' });
      assert.equal(i.placement, 'no node fits: n1 is cordoned');
      assert.equal((await store.instances.create(instance(a, rel, { index: 2 }))).placement, null);
      assert.equal((await store.instances.update(i.id, { placement: 'on n1: score 1' }))!.placement, 'on n1: score 1');
      assert.equal(await store.apps.delete(a.org.id, a.app.id), true);
      assert.equal(await store.placements.get(a.org.id, a.app.id), undefined);
    });

    it("tenant walls: organization B can't read, change or delete organization A's data", async () => {
      const a = await tenant(store, 'acme');
      const b = await tenant(store, 'beta');
      const bld = await build(store, a);
      const rel = await store.releases.create(release(a, bld.id));
      const ins = await store.instances.create(instance(a, rel));
      await store.config.apply(a.org.id, a.app.id, { SECRET: 'sealed-a' });
      await store.formation.upsert(a.org.id, a.app.id, 'web', { quantity: 2, command: 'web' });
      await store.events.append({ id: newId('evt'), organizationId: a.org.id, appId: a.app.id, type: 't', message: 'a only', data: {} });
      const tok = await store.tokens.create({ id: newId('tok'), userId: a.user.id, organizationId: a.org.id, name: 't', tokenHash: 'h-a', scopes: [], kind: 'api', expiresAt: null });
      const B = b.org.id;

      // apps
      assert.equal(await store.apps.get(B, a.app.id), undefined);
      assert.equal(await store.apps.get(B, a.app.name), undefined);
      assert.deepEqual((await store.apps.list(B)).map((x) => x.id), [b.app.id]);
      assert.equal(await store.apps.update(B, a.app.id, { plan: 'free' }), undefined);
      assert.equal(await store.apps.delete(B, a.app.id), false);
      assert.equal((await store.apps.get(a.org.id, a.app.id))!.plan, 'standard');
      // builds
      assert.equal(await store.builds.get(B, a.app.id, bld.id), undefined);
      assert.deepEqual(await store.builds.list(B, a.app.id), []);
      await assert.rejects(store.builds.create({ id: newId('bld'), appId: a.app.id, organizationId: B, sourceDigest: 'x', createdBy: null }), notFoundRef);
      // releases
      assert.equal(await store.releases.byId(B, rel.id), undefined);
      assert.equal(await store.releases.byVersion(B, a.app.id, 1), undefined);
      assert.deepEqual(await store.releases.list(B, a.app.id), []);
      assert.equal((await store.releases.versionsByIds(B, [rel.id])).size, 0);
      await assert.rejects(store.releases.create({ ...release(a, bld.id), organizationId: B }), notFoundRef);
      assert.deepEqual((await store.releases.list(a.org.id, a.app.id)).map((r) => r.version), [1]);
      // instances
      assert.equal(await store.instances.get(B, ins.id), undefined);
      assert.deepEqual(await store.instances.listByApp(B, a.app.id), []);
      await assert.rejects(store.instances.create({ ...instance(a, rel), organizationId: B }), notFoundRef);
      // config
      assert.deepEqual(await store.config.get(B, a.app.id), {});
      await assert.rejects(store.config.apply(B, a.app.id, { SECRET: 'evil', OTHER: 'x' }), notFoundRef);
      await assert.rejects(store.config.apply(B, a.app.id, { SECRET: null }), notFoundRef);
      assert.deepEqual(await store.config.get(a.org.id, a.app.id), { SECRET: 'sealed-a' });
      // formation
      assert.deepEqual(await store.formation.list(B, a.app.id), []);
      await assert.rejects(store.formation.upsert(B, a.app.id, 'web', { quantity: 100 }), notFoundRef);
      await store.formation.remove(B, a.app.id, 'web');
      assert.deepEqual((await store.formation.list(a.org.id, a.app.id)).map((f) => f.quantity), [2]);
      // events
      assert.deepEqual(await store.events.list(B, { appId: a.app.id }), []);
      assert.ok((await store.events.list(B)).every((e) => e.organizationId === B));
      // memberships and tokens
      assert.equal(await store.memberships.get(B, a.user.id), undefined);
      assert.equal(await store.memberships.updateRole(B, a.user.id, 'viewer'), undefined);
      assert.equal(await store.memberships.remove(B, a.user.id), false);
      assert.deepEqual(await store.tokens.listForUser(B, a.user.id), []);
      assert.equal(await store.tokens.delete(B, a.user.id, tok.id), false);
      assert.ok(await store.tokens.byHash('h-a'));
    });

    it('transaction: commits, returns the value, and exposes writes to later reads', async () => {
      const result = await store.transaction(async (tx) => {
        const u = await tx.users.create({ id: newId('usr'), email: 'tx@example.com', passwordHash: 'h', platformAdmin: false });
        const o = await tx.organizations.create({ id: newId('org'), name: 'txorg' });
        await tx.memberships.add({ id: newId('mem'), organizationId: o.id, userId: u.id, role: 'owner' });
        assert.ok(await tx.users.byEmail('tx@example.com'));
        return o.id;
      });
      assert.equal((await store.organizations.byId(result))!.name, 'txorg');
      assert.equal(await store.memberships.countOwners(result), 1);
    });

    it('transaction: a throw rolls everything back', async () => {
      const a = await tenant(store, 'acme');
      const boom = new Error('boom');
      await assert.rejects(
        store.transaction(async (tx) => {
          await tx.users.create({ id: newId('usr'), email: 'ghost@example.com', passwordHash: 'h', platformAdmin: false });
          await tx.apps.create({ id: newId('app'), organizationId: a.org.id, name: 'ghost', plan: 'free' });
          await tx.config.apply(a.org.id, a.app.id, { GHOST: 'x' });
          await tx.apps.update(a.org.id, a.app.id, { plan: 'free' });
          // A nested transaction joins the outer one and is rolled back with it.
          await tx.transaction(async (inner) => {
            await inner.events.append({ id: newId('evt'), organizationId: a.org.id, appId: null, type: 'ghost', message: 'x', data: {} });
          });
          throw boom;
        }),
        (err) => err === boom,
      );
      assert.equal(await store.users.byEmail('ghost@example.com'), undefined);
      assert.equal(await store.apps.nameTaken('ghost'), false);
      assert.deepEqual(await store.config.get(a.org.id, a.app.id), {});
      assert.equal((await store.apps.get(a.org.id, a.app.id))!.plan, 'standard');
      assert.deepEqual(await store.events.list(a.org.id), []);
    });

    it('transaction: a constraint failure inside surfaces as StoreConflictError and rolls back', async () => {
      const a = await tenant(store, 'acme');
      await assert.rejects(
        store.transaction(async (tx) => {
          await tx.apps.create({ id: newId('app'), organizationId: a.org.id, name: 'first', plan: 'free' });
          await tx.apps.create({ id: newId('app'), organizationId: a.org.id, name: 'acme-app', plan: 'free' });
        }),
        conflict(CONSTRAINTS.appName),
      );
      assert.equal(await store.apps.nameTaken('first'), false);
    });

    it('transaction: using the outer store inside the callback fails loudly instead of hanging', async () => {
      await assert.rejects(
        store.transaction(async () => {
          await store.users.count();
        }),
        (err) => err instanceof StoreMisuseError,
      );
      await assert.rejects(store.transaction(() => store.transaction(async () => 1)), (err) => err instanceof StoreMisuseError);
      // The store still works afterwards, and concurrent transactions each complete.
      const ids = await Promise.all([1, 2, 3].map((i) => store.transaction(async (tx) => (await tx.organizations.create({ id: newId('org'), name: `o${i}` })).id)));
      assert.equal(ids.length, 3);
    });

    it('deployments: create, active, list newest first, compare-and-set transitions, history, tenant walls', async () => {
      const t = await tenant(store, 'dep');
      const other = await tenant(store, 'dep-other');
      const b = await build(store, t);
      const r1 = await store.releases.create(release(t, b.id));
      const r2 = await store.releases.create(release(t, b.id));
      const base = {
        organizationId: t.org.id, appId: t.app.id, strategy: 'rolling' as const, settings: DEFAULT_DEPLOY_SETTINGS, reason: null, step: 0,
        stepStartedAt: null, progressAt: new Date().toISOString(), createdBy: t.user.email,
      };
      const d1 = await store.deployments.create({ ...base, id: newId('dep'), fromReleaseId: null, fromVersion: null, toReleaseId: r1.id, toVersion: r1.version, state: 'succeeded', phase: 'done' });
      const d2 = await store.deployments.create({ ...base, id: newId('dep'), fromReleaseId: r1.id, fromVersion: r1.version, toReleaseId: r2.id, toVersion: r2.version, state: 'in_progress', phase: 'starting', history: [{ at: 'x', message: 'created' }] });
      await assert.rejects(
        store.deployments.create({ ...base, id: d1.id, fromReleaseId: null, fromVersion: null, toReleaseId: r1.id, toVersion: r1.version, state: 'failed', phase: 'done' }),
        conflict('deployments(id)'),
      );
      assert.equal(d2.settings.strategy, 'rolling');
      assert.equal((await store.deployments.active(t.org.id, t.app.id))?.id, d2.id);
      assert.deepEqual((await store.deployments.listActive()).map((d) => d.id), [d2.id]);
      assert.deepEqual((await store.deployments.list(t.org.id, t.app.id)).map((d) => d.id), [d2.id, d1.id]);

      // Compare-and-set: only the first of two racing transitions from in_progress wins.
      const [won, lost] = await Promise.all([
        store.deployments.transition(d2.id, 'in_progress', { state: 'succeeded', finishedAt: 'now' }, 'all ready'),
        store.deployments.transition(d2.id, 'in_progress', { state: 'rolling_back', reason: 'late' }, 'should not apply'),
      ]);
      assert.equal(won?.state, 'succeeded');
      assert.equal(lost, undefined);
      const after = await store.deployments.get(t.org.id, t.app.id, d2.id);
      assert.equal(after?.state, 'succeeded');
      assert.deepEqual(after?.history.map((h) => h.message), ['created', 'all ready']);
      assert.equal(await store.deployments.active(t.org.id, t.app.id), undefined);

      // Another organization sees nothing.
      assert.equal(await store.deployments.get(other.org.id, t.app.id, d2.id), undefined);
      assert.deepEqual(await store.deployments.list(other.org.id, t.app.id), []);

      // Settings: absent until set; upsert; per organization.
      assert.equal(await store.deployments.getSettings(t.org.id, t.app.id), undefined);
      await store.deployments.setSettings(t.org.id, t.app.id, { ...DEFAULT_DEPLOY_SETTINGS, strategy: 'canary' });
      await store.deployments.setSettings(t.org.id, t.app.id, { ...DEFAULT_DEPLOY_SETTINGS, strategy: 'blue-green' });
      assert.equal((await store.deployments.getSettings(t.org.id, t.app.id))?.strategy, 'blue-green');
      assert.equal(await store.deployments.getSettings(other.org.id, t.app.id), undefined);
    });

    it('formation health checks and instance drain deadlines round-trip', async () => {
      const t = await tenant(store, 'hc');
      const hc = { type: 'http' as const, path: '/health', intervalSeconds: 1, timeoutSeconds: 1, healthyThreshold: 2, unhealthyThreshold: 3 };
      assert.equal((await store.formation.upsert(t.org.id, t.app.id, 'web', { quantity: 2 })).healthcheck, null);
      assert.deepEqual((await store.formation.upsert(t.org.id, t.app.id, 'web', { healthcheck: hc })).healthcheck, hc);
      assert.equal((await store.formation.upsert(t.org.id, t.app.id, 'web', { quantity: 3 })).healthcheck?.path, '/health');
      assert.equal((await store.formation.upsert(t.org.id, t.app.id, 'web', { healthcheck: null })).healthcheck, null);
      const b = await build(store, t);
      const rel = await store.releases.create(release(t, b.id));
      const i = await store.instances.create(instance(t, rel));
      assert.equal(i.stopAfter, null);
      assert.equal((await store.instances.update(i.id, { stopAfter: '2026-01-01T00:00:00.000Z' }))?.stopAfter, '2026-01-01T00:00:00.000Z');
    });

    it('apps.delete removes the app and everything that belongs to it, and nothing else', async () => {
      const a = await tenant(store, 'acme');
      const keep = await store.apps.create({ id: newId('app'), organizationId: a.org.id, name: 'keep', plan: 'free' });
      const k = { ...a, app: keep };
      for (const t of [a, k]) {
        const b = await build(store, t);
        const rel = await store.releases.create(release(t, b.id));
        await store.apps.update(t.org.id, t.app.id, { currentReleaseId: rel.id });
        await store.instances.create(instance(t, rel));
        await store.config.apply(t.org.id, t.app.id, { A: 'x' });
        await store.formation.upsert(t.org.id, t.app.id, 'web', { quantity: 1 });
        await store.events.append({ id: newId('evt'), organizationId: t.org.id, appId: t.app.id, type: 't', message: t.app.name, data: {} });
      }
      await store.events.append({ id: newId('evt'), organizationId: a.org.id, appId: null, type: 'org', message: 'org-level', data: {} });

      assert.equal(await store.apps.delete(a.org.id, a.app.id), true);
      assert.equal(await store.apps.get(a.org.id, a.app.id), undefined);
      assert.equal(await store.apps.nameTaken(a.app.name), false);
      assert.deepEqual(await store.builds.list(a.org.id, a.app.id), []);
      assert.deepEqual(await store.releases.list(a.org.id, a.app.id), []);
      assert.deepEqual(await store.instances.listByApp(a.org.id, a.app.id), []);
      assert.deepEqual(await store.config.get(a.org.id, a.app.id), {});
      assert.deepEqual(await store.formation.list(a.org.id, a.app.id), []);
      assert.deepEqual((await store.events.list(a.org.id)).map((e) => e.message).sort(), ['keep', 'org-level']);
      assert.equal(await store.apps.delete(a.org.id, a.app.id), false);

      assert.equal((await store.builds.list(a.org.id, keep.id)).length, 1);
      assert.equal((await store.releases.list(a.org.id, keep.id)).length, 1);
      assert.equal((await store.instances.listByApp(a.org.id, keep.id)).length, 1);
      assert.deepEqual(await store.config.get(a.org.id, keep.id), { A: 'x' });
      assert.equal((await store.formation.list(a.org.id, keep.id)).length, 1);
      // The name is free again.
      await store.apps.create({ id: newId('app'), organizationId: a.org.id, name: a.app.name, plan: 'free' });
    });
  });
}
