import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCipheriv, randomBytes } from 'node:crypto';
import { newId } from '@shellwego/core';
import { openSqliteStore } from '@shellwego/store';
import type { Store } from '@shellwego/store';
import { FileKeyProvider, SecretBox } from './secrets.ts';
import type { KeyProvider, SealScope } from './secrets.ts';
import { hashPassword, hashToken, newTokenSecret, verifyPassword } from './passwords.ts';

const MASTER = Buffer.alloc(32, 7);

/** A store with two organizations, one app each. */
async function setup(): Promise<{ store: Store; a: SealScope; a2: SealScope; b: SealScope }> {
  const store = await openSqliteStore(':memory:');
  const scopes: SealScope[] = [];
  for (const name of ['acme', 'globex']) {
    const org = await store.organizations.create({ id: newId('org'), name });
    for (const n of [1, 2]) scopes.push(await store.apps.create({ id: newId('app'), organizationId: org.id, name: `${name}-${n}`, plan: 'standard' }));
  }
  return { store, a: scopes[0], a2: scopes[1], b: scopes[2] };
}

/** How values were sealed before issue 3: `v1:` directly under the master key. */
function sealV1(key: Buffer, plaintext: string, aad: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(aad));
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return `v1:${iv.toString('base64')}:${cipher.getAuthTag().toString('base64')}:${ct.toString('base64')}`;
}

test('sealed values are v2 under the org key, round-trip, differ each time, and hide the plaintext', async () => {
  const { store, a } = await setup();
  const box = new SecretBox(FileKeyProvider.fromKey(MASTER), store);
  const x = await box.seal(a, 's3cret-value');
  const y = await box.seal(a, 's3cret-value');
  assert.notEqual(x, y, 'random IV per value');
  assert.ok(!x.includes('s3cret'));
  assert.equal(x.split(':')[0], 'v2');
  assert.equal(x.split(':')[1], a.organizationId);
  assert.equal(await box.open(a, x), 's3cret-value');
  assert.deepEqual(await box.openJson(a, await box.sealJson(a, { K: 'v' })), { K: 'v' });
  // A second box (a restart) unwraps the stored key and opens the value.
  assert.equal(await new SecretBox(FileKeyProvider.fromKey(MASTER), store).open(a, x), 's3cret-value');
  await store.close();
});

test('one data key per organization, stored wrapped only, created once under concurrency', async () => {
  const { store, a, a2, b } = await setup();
  const box = new SecretBox(FileKeyProvider.fromKey(MASTER), store);
  const sealed = await Promise.all([box.seal(a, '1'), box.seal(a2, '2'), box.seal(a, '3'), box.seal(b, '4')]);
  const other = new SecretBox(FileKeyProvider.fromKey(MASTER), store);
  assert.deepEqual(await Promise.all([other.open(a, sealed[0]), other.open(a2, sealed[1]), other.open(a, sealed[2]), other.open(b, sealed[3])]), ['1', '2', '3', '4']);
  const ka = (await store.organizationKeys.get(a.organizationId))!;
  const kb = (await store.organizationKeys.get(b.organizationId))!;
  assert.notEqual(ka.wrappedKey, kb.wrappedKey);
  assert.equal(ka.provider, 'file');
  assert.equal(ka.keyId, FileKeyProvider.fromKey(MASTER).keyId);
  // Two boxes racing on a fresh organization end up with the same key.
  const org = await store.organizations.create({ id: newId('org'), name: 'initech' });
  const c = await store.apps.create({ id: newId('app'), organizationId: org.id, name: 'initech-1', plan: 'standard' });
  const [p, q] = [new SecretBox(FileKeyProvider.fromKey(MASTER), store), new SecretBox(FileKeyProvider.fromKey(MASTER), store)];
  const [sp, sq] = await Promise.all([p.seal(c, 'from-p'), q.seal(c, 'from-q')]);
  assert.equal(await q.open(c, sp), 'from-p');
  assert.equal(await p.open(c, sq), 'from-q');
  await store.close();
});

test('a value cannot be opened as another app’s, by another org, under another master key, nor tampered with', async () => {
  const { store, a, a2, b } = await setup();
  const box = new SecretBox(FileKeyProvider.fromKey(MASTER), store);
  const sealed = await box.seal(a, 'v');
  await box.seal(b, 'make org b a key');
  await assert.rejects(box.open(a2, sealed), 'wrong app (AAD)');
  await assert.rejects(box.open(b, sealed), /another organization/);
  // Relabelled as org b's value: org b's key does not open it either.
  const relabelled = sealed.split(':');
  relabelled[1] = b.organizationId;
  await assert.rejects(box.open({ id: a.id, organizationId: b.organizationId }, relabelled.join(':')));
  for (const i of [2, 3, 4]) {
    const parts = sealed.split(':');
    parts[i] = Buffer.from('xxxxxxxxxxxx').toString('base64');
    await assert.rejects(box.open(a, parts.join(':')), `tampered part ${i}`);
  }
  await assert.rejects(box.open(a, 'v3:whatever'), /unrecognised/);
  await assert.rejects(new SecretBox(FileKeyProvider.fromKey(Buffer.alloc(32, 8)), store).open(a, sealed), /wrapped by master key/);
  await store.close();
});

test('v1 values (master key, before per-org keys) still open; new writes are v2', async () => {
  const { store, a, a2 } = await setup();
  const box = new SecretBox(FileKeyProvider.fromKey(MASTER), store);
  const old = sealV1(MASTER, 'legacy', a.id);
  assert.equal(await box.open(a, old), 'legacy');
  await assert.rejects(box.open(a2, old), 'v1 keeps the app AAD');
  await assert.rejects(new SecretBox(FileKeyProvider.fromKey(Buffer.alloc(32, 8)), store).open(a, old));
  assert.match(await box.seal(a, 'legacy'), /^v2:/);
  await store.close();
});

test('the key provider is pluggable; wrapped keys are bound to their organization', async () => {
  const { store, a, b } = await setup();
  const calls: string[] = [];
  const file = FileKeyProvider.fromKey(MASTER);
  const custom: KeyProvider = {
    name: 'test-kms', keyId: 'kms-1',
    wrap: async (dek, ctx) => { calls.push(`wrap:${ctx}`); return file.wrap(dek, ctx); },
    unwrap: async (w, _id, ctx) => { calls.push(`unwrap:${ctx}`); return file.unwrap(w, file.keyId, ctx); },
  };
  const box = new SecretBox(custom, store);
  const sealed = await box.seal(a, 'x');
  assert.equal(await box.open(a, sealed), 'x');
  assert.equal(calls.filter((c) => c.startsWith('wrap')).length, 1, 'one DEK, then cached');
  assert.equal((await store.organizationKeys.get(a.organizationId))!.provider, 'test-kms');
  await assert.rejects(box.open(a, sealV1(MASTER, 'x', a.id)), /v1 sealed value/);
  const wrappedA = (await store.organizationKeys.get(a.organizationId))!.wrappedKey;
  await assert.rejects(file.unwrap(wrappedA, file.keyId, b.organizationId), 'wrapped key bound to its org');
  await store.close();
});

test('a data key created inside a rolled-back transaction does not survive it', async () => {
  const { store, a } = await setup();
  const box = new SecretBox(FileKeyProvider.fromKey(MASTER), store);
  await assert.rejects(store.transaction(async (tx) => {
    await box.seal(a, 'x', tx);
    throw new Error('roll back');
  }), /roll back/);
  assert.equal(await store.organizationKeys.get(a.organizationId), undefined);
  const sealed = await box.seal(a, 'y');
  assert.equal(await new SecretBox(FileKeyProvider.fromKey(MASTER), store).open(a, sealed), 'y');
  await store.close();
});

test('the key file is created once with mode 0600 and reused', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-key-'));
  const file = join(dir, 'sub', 'master.key');
  const p1 = await FileKeyProvider.fromFile(file);
  const p2 = await FileKeyProvider.fromFile(file);
  assert.equal(p1.keyId, p2.keyId);
  assert.deepEqual(await p2.unwrap(await p1.wrap(Buffer.alloc(32, 1), 'org_1'), p1.keyId, 'org_1'), Buffer.alloc(32, 1));
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  assert.equal(Buffer.from((await readFile(file, 'utf8')).trim(), 'base64').length, 32);
  const { store, a } = await setup();
  const box = await SecretBox.fromFile(file, store);
  assert.equal(await box.open(a, sealV1(p1.legacyKey(), 'old', a.id)), 'old');
  await store.close();
});

test('passwords hash with a salt and verify', async () => {
  const h1 = await hashPassword('pw');
  const h2 = await hashPassword('pw');
  assert.notEqual(h1, h2);
  assert.ok(await verifyPassword('pw', h1));
  assert.ok(!(await verifyPassword('other', h1)));
  assert.ok(!(await verifyPassword('pw', 'garbage')));
});

test('token secrets are long and random; their hash is stable', () => {
  const t = newTokenSecret();
  assert.match(t, /^swg_[A-Za-z0-9_-]{43}$/);
  assert.notEqual(t, newTokenSecret());
  assert.equal(hashToken(t), hashToken(t));
  assert.match(hashToken(t), /^[0-9a-f]{64}$/);
});
