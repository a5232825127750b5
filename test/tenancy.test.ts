/**
 * Tenants are walled off: a token of organization B gets 404 for everything of organization A.
 * The cases are generated from the route table, so a new app-scoped route is covered the day
 * it is added.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fillPath, routes } from '@shellwego/core';
import type { RouteDef } from '@shellwego/core';
import { TestPlatform } from './helpers/platform.ts';
import { makeTarGz } from './helpers/tarball.ts';

let p: TestPlatform;
let tokenA: string;
let tokenB: string;
let buildId: string;
let hookId: string;
let deploymentId: string;
let volumeId: string;

/** A body that passes validation for each route, so the only reason to fail is tenancy. */
const validBodies: Partial<Record<keyof typeof routes, unknown>> = {
  updateApp: { plan: 'free' },
  updateConfig: { vars: { SNOOP: '1' } },
  scale: { quantities: { web: 3 } },
  rollback: { version: 1 },
  restart: {},
  createWebhook: { provider: 'github', repository: 'https://git.example.com/snoop.git' },
  createImageBuild: { image: 'registry.example/snoop:v1' },
  addDomain: { hostname: 'snoop.example.com' },
  updateDomain: { redirectHttps: true },
  setHealthcheck: { healthcheck: null },
  updateDeploySettings: { strategy: 'canary' },
  createVolume: { name: 'snoop', processType: 'web', mountPath: '/snoop' },
};

before(async () => {
  p = await TestPlatform.start({ isolation: 'none' });
  tokenA = await p.token();
  const a = await p.client(tokenA);
  await a.call('createApp', { body: { name: 'secret-app' } });
  await a.call('updateConfig', { params: { app: 'secret-app' }, body: { vars: { API_KEY: 'a-secret' } } });
  const up = await fetch(`${p.apiUrl}/v1/apps/secret-app/builds`, {
    method: 'POST', headers: { authorization: `Bearer ${tokenA}`, 'content-type': 'application/gzip' },
    body: makeTarGz([{ name: 'index.html', content: '<h1>a</h1>' }]) as unknown as BodyInit,
  });
  buildId = ((await up.json()) as { id: string }).id;
  // A real deployment of A's (the build above releases v1), so its id is one that exists.
  for (let i = 0; i < 300 && !deploymentId; i++) {
    deploymentId = (await a.call('listDeployments', { params: { app: 'secret-app' }, query: {} }))[0]?.id;
    if (!deploymentId) await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(deploymentId, 'organization A has a deployment');
  volumeId = (await a.call('createVolume', { params: { app: 'secret-app' }, body: { name: 'data', processType: 'worker', mountPath: '/data' } })).id;
  hookId = (await a.call('createWebhook', { params: { app: 'secret-app' }, body: { provider: 'github', repository: 'https://git.example.com/a.git' } })).id;

  // Organization B: its own owner, created through the API like any tenant.
  const added = await a.call('addMember', { body: { email: 'other@example.com', role: 'viewer' } });
  const tmp = await p.client(await p.token('other@example.com', added.initialPassword!));
  await tmp.call('createOrganization', { body: { name: 'org-b' } });
  tokenB = await p.token('other@example.com', added.initialPassword!, 'org-b');
  // …and leaves A, so B's user has no membership in A at all.
  await a.call('removeMember', { params: { user: added.member.userId } });
  const b = await p.client(tokenB);
  assert.equal((await b.call('me', {})).organization.name, 'org-b');
});

after(async () => {
  await p?.destroy();
});

const appRoutes = Object.entries(routes).filter(([, def]) => (def as RouteDef).path.includes(':app')) as [keyof typeof routes, RouteDef][];

test('the route table has app-scoped routes to check', () => {
  assert.ok(appRoutes.length >= 15, `only ${appRoutes.length} app routes found`);
});

for (const [name, def] of appRoutes) {
  test(`${def.method} ${def.path} → 404 for another organization (${name})`, async () => {
    for (const app of ['secret-app', await appId()]) {
      const path = fillPath(def.path, { app, build: buildId, hook: hookId, domain: 'snoop.example.com', type: 'web', deployment: deploymentId, volume: volumeId });
      const headers: Record<string, string> = { authorization: `Bearer ${tokenB}` };
      let body: string | Buffer | undefined;
      if (def.upload) {
        headers['content-type'] = def.upload.contentType;
        body = makeTarGz([{ name: 'index.html', content: 'x' }]);
      } else if (def.body) {
        headers['content-type'] = 'application/json';
        body = JSON.stringify(validBodies[name] ?? {});
      }
      const r = await fetch(p.apiUrl + path, { method: def.method, headers, body: body as BodyInit | undefined });
      const json = (await r.json()) as { error?: { code: string } };
      assert.equal(r.status, 404, `${name} with ${app}: ${JSON.stringify(json)}`);
      assert.equal(json.error?.code, 'not_found');
    }
  });
}

let cachedId = '';
async function appId(): Promise<string> {
  if (!cachedId) cachedId = (await (await p.client(tokenA)).call('getApp', { params: { app: 'secret-app' } })).id;
  return cachedId;
}

test("organization A's app is untouched and invisible to B", async () => {
  const a = await p.client(tokenA);
  const b = await p.client(tokenB);
  assert.deepEqual(await b.call('listApps', {}), []);
  assert.deepEqual((await a.call('listVolumes', { params: { app: 'secret-app' } })).map((v) => [v.id, v.name]), [[volumeId, 'data']]);
  assert.deepEqual(await a.call('getConfig', { params: { app: 'secret-app' } }), { API_KEY: 'a-secret' });
  const app = await a.call('getApp', { params: { app: 'secret-app' } });
  assert.equal(app.plan, 'standard');
  const events = await b.call('appEvents' as never, { params: { app: 'secret-app' } } as never).catch((e: { status: number }) => e.status);
  assert.equal(events, 404);
  // B cannot take the name either: app names are platform-wide (they are hostnames).
  await assert.rejects(b.call('createApp', { body: { name: 'secret-app' } }), (e: { status: number }) => e.status === 409);
});
