/**
 * The API contract against the real platform: auth, roles and scopes, validation, and the rule
 * that bad input gets a clear error and changes nothing.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { PAGE_MAX, routes } from '@shellwego/core';
import { createClient } from '@shellwego/sdk';
import { TestPlatform, ADMIN_EMAIL } from './helpers/platform.ts';
import { makeTarGz } from './helpers/tarball.ts';

let p: TestPlatform;
let token: string;

async function api(method: string, path: string, opts: { token?: string | null; body?: unknown; raw?: string | Buffer; contentType?: string } = {}) {
  const headers: Record<string, string> = {};
  const t = opts.token === undefined ? token : opts.token;
  if (t) headers.authorization = `Bearer ${t}`;
  let body: string | Buffer | undefined;
  if (opts.raw !== undefined) {
    body = opts.raw;
    headers['content-type'] = opts.contentType ?? 'application/json';
  } else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['content-type'] = 'application/json';
  }
  const r = await fetch(p.apiUrl + path, { method, headers, body: body as BodyInit | undefined });
  const text = await r.text();
  let json: any = null;
  try { json = JSON.parse(text); } catch {}
  return { status: r.status, json, text, headers: r.headers };
}

function assertError(r: { status: number; json: any }, status: number, code: string) {
  assert.equal(r.status, status, JSON.stringify(r.json));
  assert.equal(r.json?.error?.code, code, JSON.stringify(r.json));
  assert.equal(typeof r.json.error.message, 'string');
  assert.ok(r.json.error.message.length > 5, 'the message says something');
}

before(async () => {
  p = await TestPlatform.start({ isolation: 'none', env: { SHELLWEGO_MAX_UPLOAD_MB: '2' } });
  token = await p.token();
});
after(async () => {
  await p?.destroy();
});

describe('auth', () => {
  test('first start created the owner with the configured password; wrong password is 401', async () => {
    const ok = await api('POST', '/v1/auth/login', { token: null, body: { email: ADMIN_EMAIL, password: 'test-admin-password-1' } });
    assert.equal(ok.status, 200);
    assert.match(ok.json.token, /^swg_/);
    assert.equal(ok.json.role, 'owner');
    assertError(await api('POST', '/v1/auth/login', { token: null, body: { email: ADMIN_EMAIL, password: 'nope' } }), 401, 'unauthorized');
    assertError(await api('POST', '/v1/auth/login', { token: null, body: { email: 'who@else', password: 'nope' } }), 401, 'unauthorized');
  });

  test('no token, a garbage token, and a revoked token are 401', async () => {
    assertError(await api('GET', '/v1/apps', { token: null }), 401, 'unauthorized');
    assertError(await api('GET', '/v1/apps', { token: 'swg_nope' }), 401, 'unauthorized');
    const created = await api('POST', '/v1/tokens', { body: { name: 'temp', scopes: ['apps:read'] } });
    assert.equal(created.status, 201);
    assert.equal((await api('GET', '/v1/apps', { token: created.json.secret })).status, 200);
    assert.equal((await api('DELETE', `/v1/tokens/${created.json.token.id}`)).status, 200);
    assertError(await api('GET', '/v1/apps', { token: created.json.secret }), 401, 'unauthorized');
  });

  test('tokens are stored hashed: the secret is not in the database file', async () => {
    const created = await api('POST', '/v1/tokens', { body: { name: 'ci', scopes: ['apps:read'] } });
    const { readFile } = await import('node:fs/promises');
    let all = '';
    for (const f of await readdir(p.dataDir)) if (f.startsWith('shellwego.db')) all += (await readFile(join(p.dataDir, f))).toString('latin1');
    assert.ok(all.length > 0);
    assert.ok(!all.includes(created.json.secret), 'plaintext token found in the database');
    assert.ok(!all.includes('test-admin-password-1'), 'plaintext password found in the database');
  });

  test('scopes narrow a token', async () => {
    const ro = (await api('POST', '/v1/tokens', { body: { name: 'ro', scopes: ['apps:read'] } })).json.secret;
    assert.equal((await api('GET', '/v1/apps', { token: ro })).status, 200);
    const denied = await api('POST', '/v1/apps', { token: ro, body: { name: 'scoped-app' } });
    assertError(denied, 403, 'forbidden');
    assert.match(denied.json.error.message, /apps:write/);
    // …and cannot mint a token with more than it has.
    assertError(await api('POST', '/v1/tokens', { token: ro, body: { name: 'x', scopes: ['*'] } }), 403, 'forbidden');
  });

  test('roles are enforced: a viewer reads, cannot change', async () => {
    const added = await api('POST', '/v1/members', { body: { email: 'viewer@example.com', role: 'viewer' } });
    assert.equal(added.status, 201, added.text);
    const viewerToken = await p.token('viewer@example.com', added.json.initialPassword);
    assert.equal((await api('POST', '/v1/apps', { body: { name: 'owned-app' } })).status, 201);
    assert.equal((await api('GET', '/v1/apps/owned-app', { token: viewerToken })).status, 200);
    const r = await api('PATCH', '/v1/apps/owned-app/formation', { token: viewerToken, body: { quantities: { web: 2 } } });
    assertError(r, 403, 'forbidden');
    assert.match(r.json.error.message, /developer role/);
    assertError(await api('DELETE', '/v1/apps/owned-app', { token: viewerToken }), 403, 'forbidden');
    assertError(await api('POST', '/v1/members', { token: viewerToken, body: { email: 'x@example.com', role: 'owner' } }), 403, 'forbidden');
  });

  test('the last owner cannot be demoted', async () => {
    const me = (await api('GET', '/v1/me')).json;
    assertError(await api('PATCH', `/v1/members/${me.user.id}`, { body: { role: 'admin' } }), 409, 'last_owner');
  });
});

describe('bad input gets a clear error and changes nothing', () => {
  async function appCount() {
    return (await api('GET', '/v1/apps')).json.length;
  }

  test('malformed JSON', async () => {
    const before = await appCount();
    assertError(await api('POST', '/v1/apps', { raw: '{"name": "x",' }), 400, 'invalid_json');
    assert.equal(await appCount(), before);
  });

  test('unknown fields', async () => {
    const before = await appCount();
    const r = await api('POST', '/v1/apps', { body: { name: 'fine-name', colour: 'blue' } });
    assertError(r, 400, 'validation_failed');
    assert.match(r.json.error.message, /colour/);
    assert.equal(await appCount(), before);
  });

  test('invalid app names are refused: they must be DNS labels', async () => {
    const before = await appCount();
    for (const name of ['Upper', 'has_underscore', '-dash', 'dash-', 'a'.repeat(31), '1starts-with-digit', 'dots.in.name', '']) {
      const r = await api('POST', '/v1/apps', { body: { name } });
      assertError(r, 400, 'validation_failed');
      assert.match(r.json.error.message, /name/);
    }
    assert.equal(await appCount(), before);
  });

  test('duplicate app name is a conflict', async () => {
    assert.equal((await api('POST', '/v1/apps', { body: { name: 'dup-app' } })).status, 201);
    assertError(await api('POST', '/v1/apps', { body: { name: 'dup-app' } }), 409, 'name_taken');
  });

  test('invalid and reserved config keys', async () => {
    await api('POST', '/v1/apps', { body: { name: 'cfg-app' } });
    for (const key of ['1ABC', 'WITH-DASH', 'has space', '']) {
      assertError(await api('PATCH', '/v1/apps/cfg-app/config', { body: { vars: { [key]: 'v' } } }), 400, 'validation_failed');
    }
    const r = await api('PATCH', '/v1/apps/cfg-app/config', { body: { vars: { PORT: '1', OK_KEY: 'v' } } });
    assertError(r, 400, 'reserved_config_key');
    assert.deepEqual((await api('GET', '/v1/apps/cfg-app/config')).json, {}, 'nothing was set, not even the valid key');
  });

  test('scaling a process type that does not exist', async () => {
    await api('POST', '/v1/apps', { body: { name: 'scale-app' } });
    assertError(await api('PATCH', '/v1/apps/scale-app/formation', { body: { quantities: { web: 1 } } }), 422, 'unknown_process_type');
    assertError(await api('PATCH', '/v1/apps/scale-app/formation', { body: { quantities: { web: -1 } } }), 400, 'validation_failed');
    assertError(await api('PATCH', '/v1/apps/scale-app/formation', { body: { quantities: { web: 'two' } } }), 400, 'validation_failed');
  });

  describe('source uploads', () => {
    before(async () => {
      await api('POST', '/v1/apps', { body: { name: 'upload-app' } });
    });

    async function upload(body: Buffer, contentType = 'application/gzip') {
      return api('POST', '/v1/apps/upload-app/builds', { raw: body, contentType });
    }

    async function nothingWritten() {
      const builds = (await api('GET', '/v1/apps/upload-app/builds')).json;
      assert.deepEqual(builds, [], 'no build was created');
      const blobs = await readdir(join(p.dataDir, 'blobs'), { recursive: true }).catch(() => []);
      assert.equal(blobs.filter((f) => /[0-9a-f]{64}$/.test(String(f))).length, 0, 'no blob was stored');
      const tmp = await readdir(join(p.dataDir, 'tmp')).catch(() => []);
      assert.deepEqual(tmp, [], 'no temp file left behind');
    }

    test('path traversal', async () => {
      const r = await upload(makeTarGz([{ name: 'package.json', content: '{}' }, { name: '../escape.txt', content: 'x' }]));
      assertError(r, 400, 'unsafe_archive');
      assert.match(r.json.error.message, /escape/);
      await nothingWritten();
    });

    test('absolute paths', async () => {
      assertError(await upload(makeTarGz([{ name: '/etc/cron.d/evil', content: 'x' }])), 400, 'unsafe_archive');
      await nothingWritten();
    });

    test('links pointing outside', async () => {
      assertError(await upload(makeTarGz([{ name: 'link', type: '2', linkname: '../../etc/passwd' }])), 400, 'unsafe_archive');
      assertError(await upload(makeTarGz([{ name: 'abs', type: '2', linkname: '/etc/shadow' }])), 400, 'unsafe_archive');
      assertError(await upload(makeTarGz([{ name: 'hard', type: '1', linkname: '../outside' }])), 400, 'unsafe_archive');
      await nothingWritten();
    });

    test('devices', async () => {
      assertError(await upload(makeTarGz([{ name: 'dev', type: '3' }])), 400, 'unsafe_archive');
      await nothingWritten();
    });

    test('not a tarball / wrong content type', async () => {
      assertError(await upload(Buffer.from('hello, not gzip')), 400, 'invalid_archive');
      assertError(await upload(Buffer.from('{}'), 'application/json'), 415, 'unsupported_media_type');
      await nothingWritten();
    });

    test('oversized uploads', async () => {
      const big = Buffer.alloc(3 * 1024 * 1024, 1); // the test platform's limit is 2 MB
      assertError(await upload(big), 413, 'payload_too_large');
      await nothingWritten();
    });

    test('a link inside the archive is fine', async () => {
      const ok = await upload(makeTarGz([{ name: 'index.html', content: '<h1>hi</h1>' }, { name: 'home.html', type: '2', linkname: 'index.html' }]));
      assert.equal(ok.status, 202, ok.text);
      assert.equal(ok.json.state, 'pending');
    });
  });

  test('unknown routes are JSON 404s', async () => {
    assertError(await api('GET', '/v1/nope'), 404, 'not_found');
  });
});

describe('paged lists', () => {
  test('GET /v1/apps pages by name with Link rel="next" until the last page; the SDK joins the pages', async () => {
    for (const n of ['pg-e', 'pg-a', 'pg-d', 'pg-c', 'pg-b']) assert.equal((await api('POST', '/v1/apps', { body: { name: n } })).status, 201);
    const all = (await api('GET', `/v1/apps?limit=${PAGE_MAX}`)).json.map((a: { name: string }) => a.name) as string[];
    assert.ok(all.length >= 5);
    assert.deepEqual(all, [...all].sort((x, y) => (Buffer.from(x) < Buffer.from(y) ? -1 : 1)), 'by name, in byte order');

    // Follow the links by hand, as a curl user would: each page is at most 2, the last has no link.
    const seen: string[] = [];
    let url: string | null = `${p.apiUrl}/v1/apps?limit=2`;
    let pages = 0;
    while (url) {
      const r: Response = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(r.status, 200);
      const page = (await r.json()) as { name: string }[];
      assert.ok(page.length <= 2 && page.length > 0);
      seen.push(...page.map((a) => a.name));
      const link = r.headers.get('link');
      url = link ? new URL(/^<([^>]*)>; rel="next"$/.exec(link)![1]!, url).href : null;
      pages++;
    }
    assert.deepEqual(seen, all);
    assert.equal(pages, Math.ceil(all.length / 2));

    // `after` is a name: the page starts after it, whether or not that name exists.
    assert.deepEqual((await api('GET', '/v1/apps?after=pg-b&limit=2')).json.map((a: { name: string }) => a.name), ['pg-c', 'pg-d']);
    assert.deepEqual((await api('GET', '/v1/apps?after=pg-bb&limit=2')).json.map((a: { name: string }) => a.name), ['pg-c', 'pg-d']);

    const client = createClient({ baseUrl: p.apiUrl, token });
    assert.deepEqual((await client.list('listApps', { query: { limit: 3 } })).map((a) => a.name), all);
  });

  test('a bad page size or cursor is a 400 that says which', async () => {
    for (const q of ['limit=0', `limit=${PAGE_MAX + 1}`, 'limit=two', 'after=', 'page=2']) {
      const r = await api('GET', `/v1/apps?${q}`);
      assertError(r, 400, 'validation_failed');
      assert.match(r.json.error.message, /limit|after|page/);
    }
  });

  test('the OpenAPI document names the Link header of paged lists', async () => {
    const doc = (await api('GET', '/v1/openapi.json', { token: null })).json;
    assert.ok(doc.paths['/v1/apps'].get.responses['200'].headers.Link);
    assert.deepEqual(doc.paths['/v1/apps'].get.parameters.map((x: { name: string }) => x.name).sort(), ['after', 'limit']);
  });
});

test('the OpenAPI document covers every route of the table', async () => {
  const r = await api('GET', '/v1/openapi.json', { token: null });
  assert.equal(r.status, 200);
  assert.equal(r.json.openapi, '3.1.0');
  for (const def of Object.values(routes)) {
    const path = def.path.replace(/:([a-zA-Z]+)/g, '{$1}');
    assert.ok(r.json.paths[path]?.[def.method.toLowerCase()], `${def.method} ${def.path} missing from OpenAPI`);
  }
});

test('Prometheus metrics are served', async () => {
  const r = await fetch(p.apiUrl + '/metrics');
  const text = await r.text();
  assert.match(text, /shellwego_api_requests_total/);
});
