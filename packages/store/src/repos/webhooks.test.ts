import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newId } from '@shellwego/core';
import { openSqliteStore } from '../sqlite.ts';
import type { Store } from '../types.ts';

async function setup(): Promise<{ store: Store; org: string; app: string; other: string; hook: string }> {
  const store = await openSqliteStore(':memory:');
  const org = (await store.organizations.create({ id: newId('org'), name: 'a' })).id;
  const other = (await store.organizations.create({ id: newId('org'), name: 'b' })).id;
  const app = (await store.apps.create({ id: newId('app'), organizationId: org, name: 'hooked', plan: 'free' })).id;
  const hook = (await store.webhooks.create({
    id: newId('whk'), organizationId: org, appId: app, provider: 'github', repositoryUrl: 'https://example.com/r.git',
    repositorySealed: 'v2:sealed-url', branch: 'main', secretSealed: 'v2:sealed-secret', createdBy: 'a@example.com',
  })).id;
  return { store, org, app, other, hook };
}

test('a delivery id is recorded once per hook, also when identical deliveries race', async () => {
  const { store, org, app, hook } = await setup();
  const row = { hookId: hook, deliveryId: 'd-1', organizationId: org, appId: app, event: 'push', status: 'received' as const, message: 'm' };
  const results = await Promise.all([store.webhooks.recordDelivery(row), store.webhooks.recordDelivery(row), store.webhooks.recordDelivery(row)]);
  assert.equal(results.filter(Boolean).length, 1);
  assert.equal(await store.webhooks.recordDelivery(row), undefined);
  await store.webhooks.updateDelivery(hook, 'd-1', { status: 'building', buildId: 'bld_x' });
  const got = await store.webhooks.getDelivery(hook, 'd-1');
  assert.equal(got?.status, 'building');
  assert.equal(got?.buildId, 'bld_x');
  assert.equal((await store.webhooks.listDeliveries(org, hook, 5)).length, 1);
  await store.close();
});

test('hooks are scoped by organization and app; deleting the app deletes its hooks and deliveries', async () => {
  const { store, org, app, other, hook } = await setup();
  assert.equal((await store.webhooks.get(other, app, hook)), undefined);
  assert.equal(await store.webhooks.delete(other, app, hook), false);
  assert.equal((await store.webhooks.list(other, app)).length, 0);
  assert.equal((await store.webhooks.list(org, app)).length, 1);
  assert.equal((await store.webhooks.byId(hook))?.secretSealed, 'v2:sealed-secret');
  await store.webhooks.recordDelivery({ hookId: hook, deliveryId: 'd', organizationId: org, appId: app, event: 'push', status: 'received', message: 'm' });
  assert.equal(await store.apps.delete(org, app), true);
  assert.equal(await store.webhooks.byId(hook), undefined);
  assert.equal(await store.webhooks.getDelivery(hook, 'd'), undefined);
  await store.close();
});

test('a hook cannot point at another organization\'s app', async () => {
  const { store, other, app } = await setup();
  await assert.rejects(store.webhooks.create({
    id: newId('whk'), organizationId: other, appId: app, provider: 'gitlab', repositoryUrl: 'x', repositorySealed: 'x', branch: 'main', secretSealed: 'x', createdBy: null,
  }), (e: { status?: number }) => e.status === 404);
  await store.close();
});
