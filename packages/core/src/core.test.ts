import { test } from 'node:test';
import assert from 'node:assert/strict';
import { APP_NAME_RE, ApiError, ENV_KEY_RE, buildMachine, buildOpenApi, fillPath, instanceMachine, isReservedEnvKey, newId, roleAtLeast, routes } from './index.ts';

test('ids are prefixed, unique and sort by creation time', async () => {
  const a = newId('app');
  await new Promise((r) => setTimeout(r, 2));
  const b = newId('app');
  assert.match(a, /^app_[0-9a-z]{26}$/);
  assert.notEqual(a, b);
  assert.ok(a < b);
});

test('app names are DNS labels', () => {
  for (const ok of ['a', 'hello', 'my-app-2', 'a'.repeat(30)]) assert.ok(APP_NAME_RE.test(ok), ok);
  for (const bad of ['', 'A', '-a', 'a-', '1a', 'a_b', 'a.b', 'a'.repeat(31), 'ünï']) assert.ok(!APP_NAME_RE.test(bad), bad);
});

test('env keys and reserved keys', () => {
  for (const ok of ['A', '_X', 'DATABASE_URL', 'lower_ok']) assert.ok(ENV_KEY_RE.test(ok), ok);
  for (const bad of ['', '1A', 'A-B', 'A B', 'Ä']) assert.ok(!ENV_KEY_RE.test(bad), bad);
  assert.ok(isReservedEnvKey('PORT'));
  assert.ok(isReservedEnvKey('SHELLWEGO_APP'));
  assert.ok(!isReservedEnvKey('PORTLAND'));
});

test('roles are ordered', () => {
  assert.ok(roleAtLeast('owner', 'admin'));
  assert.ok(roleAtLeast('developer', 'developer'));
  assert.ok(!roleAtLeast('viewer', 'developer'));
});

test('state machines reject illegal transitions with a 409', () => {
  assert.ok(buildMachine.can('pending', 'building'));
  assert.ok(!buildMachine.can('succeeded', 'building'));
  assert.throws(() => buildMachine.assert('failed', 'succeeded'), (e: ApiError) => e.status === 409 && e.code === 'illegal_transition');
  assert.ok(instanceMachine.can('crashed', 'starting'));
  assert.ok(!instanceMachine.can('stopped', 'running'), 'a stopped instance stays stopped; a new one is created');
});

test('errors render as the API error body', () => {
  const e = new ApiError(422, 'x_code', 'explained', { a: 1 });
  assert.deepEqual(e.toJSON(), { error: { code: 'x_code', message: 'explained', details: { a: 1 } } });
});

test('route paths fill and encode params; missing params throw', () => {
  assert.equal(fillPath('/v1/apps/:app/builds/:build', { app: 'a b', build: 'x' }), '/v1/apps/a%20b/builds/x');
  assert.throws(() => fillPath('/v1/apps/:app', {}), /missing path parameter 'app'/);
});

test('every route has a unique method+path, and OpenAPI lists them all', () => {
  const seen = new Set<string>();
  for (const def of Object.values(routes)) {
    const k = `${def.method} ${def.path}`;
    assert.ok(!seen.has(k), `duplicate route ${k}`);
    seen.add(k);
  }
  const doc = buildOpenApi('test') as { paths: Record<string, Record<string, { operationId: string }>> };
  const ops = Object.values(doc.paths).flatMap((p) => Object.values(p).map((o) => o.operationId));
  assert.deepEqual(ops.sort(), Object.keys(routes).sort());
});

test('request schemas reject unknown fields', () => {
  const r = routes.createApp.body.safeParse({ name: 'ok', extra: true });
  assert.equal(r.success, false);
});
