import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { isApiError, newId } from '@shellwego/core';
import { openSqliteStore } from '@shellwego/store';
import type { Store } from '@shellwego/store';
import { authenticateNode, joinWithToken, newJoinTokenSecret } from './node-join.ts';

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const node = (token: string, name = 'n1') => ({ token, name, isolation: 'none', capacity: { cpus: 2, memoryMb: 2048 } });

async function withToken(store: Store, opts: { uses?: number; expiresInMs?: number } = {}): Promise<string> {
  const token = newJoinTokenSecret();
  await store.nodeJoin.createToken({
    id: newId('jtk'), tokenHash: sha256(token), usesLeft: opts.uses ?? 1, expiresAt: new Date(Date.now() + (opts.expiresInMs ?? 3_600_000)).toISOString(), createdBy: 'usr_test',
  });
  return token;
}

async function refused(p: Promise<unknown>, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => isApiError(err) && err.status === 401 && message.test(err.message));
}

test('a join token is stored as its sha256 only, and joining registers the node with hashed credentials', async () => {
  const store = await openSqliteStore(':memory:');
  const token = await withToken(store);
  const joined = await joinWithToken(store, node(token, 'edge-1'));
  assert.match(joined.nodeId, /^nod_/);
  assert.match(joined.secret, /^swn_/);
  const n = await store.nodes.byId(joined.nodeId);
  assert.equal(n?.name, 'edge-1');
  assert.equal(n?.state, 'down', 'not schedulable before its first heartbeat');
  const cred = await store.nodeJoin.credential(joined.nodeId);
  assert.equal(cred?.secretHash, sha256(joined.secret));
  // The token is found by its sha256 (and is used up now); the token itself is no key.
  assert.deepEqual(await store.nodeJoin.consumeToken(sha256(token), new Date().toISOString()), { ok: false, reason: 'used' });
  assert.deepEqual(await store.nodeJoin.consumeToken(token, new Date().toISOString()), { ok: false, reason: 'unknown' });
  assert.equal(await authenticateNode(store, `Node ${joined.nodeId}:${joined.secret}`), joined.nodeId);
  await store.close();
});

test('used, expired and forged tokens are refused with a clear 401 and register nothing', async () => {
  const store = await openSqliteStore(':memory:');
  const once = await withToken(store);
  await joinWithToken(store, node(once, 'first'));
  await refused(joinWithToken(store, node(once, 'second')), /already used up/);
  const old = await withToken(store, { expiresInMs: 60_000 });
  await refused(joinWithToken(store, node(old, 'late'), new Date(Date.now() + 120_000)), /expired/);
  await refused(joinWithToken(store, node(newJoinTokenSecret(), 'forged')), /not recognised/);
  assert.deepEqual((await store.nodes.list()).map((n) => n.name), ['first']);
  // The expired token's use was not taken: it is refused for its age, not its count.
  await refused(joinWithToken(store, node(old, 'later'), new Date(Date.now() + 120_000)), /expired/);
  await store.close();
});

test('a token with N uses lets exactly N nodes join', async () => {
  const store = await openSqliteStore(':memory:');
  const token = await withToken(store, { uses: 3 });
  const results = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => joinWithToken(store, node(token, `n${i}`))));
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 3);
  assert.equal((await store.nodes.list()).length, 3);
  await store.close();
});

test('race: two joins with a single-use token, exactly one wins', async () => {
  const store = await openSqliteStore(':memory:');
  const token = await withToken(store);
  const [a, b] = await Promise.allSettled([joinWithToken(store, node(token, 'a')), joinWithToken(store, node(token, 'b'))]);
  assert.equal([a, b].filter((r) => r.status === 'fulfilled').length, 1);
  const loser = [a, b].find((r) => r.status === 'rejected') as PromiseRejectedResult;
  assert.ok(isApiError(loser.reason) && loser.reason.status === 401);
  assert.equal((await store.nodes.list()).length, 1);
  // The repository alone: parallel takes of a 2-use token, two succeed.
  const two = await withToken(store, { uses: 2 });
  const takes = await Promise.all(Array.from({ length: 5 }, () => store.nodeJoin.consumeToken(sha256(two), new Date().toISOString())));
  assert.equal(takes.filter((t) => t.ok).length, 2);
  await store.close();
});

test("node credentials: another node's id, a wrong secret or no header are 401", async () => {
  const store = await openSqliteStore(':memory:');
  const a = await joinWithToken(store, node(await withToken(store), 'a'));
  const b = await joinWithToken(store, node(await withToken(store), 'b'));
  await refused(authenticateNode(store, `Node ${b.nodeId}:${a.secret}`), /invalid node credentials/);
  await refused(authenticateNode(store, `Node ${a.nodeId}:swn_wrong`), /invalid node credentials/);
  await refused(authenticateNode(store, `Node nod_unknown:${a.secret}`), /invalid node credentials/);
  await refused(authenticateNode(store, undefined), /node credentials required/);
  assert.equal(await authenticateNode(store, `Node ${b.nodeId}:${b.secret}`), b.nodeId);
  // Revoked (the node was removed): its credentials no longer work.
  assert.equal(await store.nodeJoin.deleteCredential(b.nodeId), true);
  await refused(authenticateNode(store, `Node ${b.nodeId}:${b.secret}`), /invalid node credentials/);
  await store.close();
});
