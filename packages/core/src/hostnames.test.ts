import { test } from 'node:test';
import assert from 'node:assert/strict';
import { certificateCandidates, hostnameProblem, isUnderDomain } from './hostnames.ts';
import { Hostname } from './api.ts';

test('valid custom domains', () => {
  for (const h of ['example.com', 'www.example.com', 'a.b.c.example.co.uk', 'xn--bcher-kva.example', '1password.com', 'a-b.example', `${'a'.repeat(63)}.example`]) {
    assert.equal(hostnameProblem(h), null, h);
  }
  // 253 characters exactly is the limit.
  const long = `${'abcdefghi.'.repeat(24)}abcde.example`;
  assert.equal(long.length, 253);
  assert.equal(hostnameProblem(long), null);
});

test('invalid custom domains say why', () => {
  const cases: [string, RegExp][] = [
    ['', /empty/],
    ['localhost', /two labels/],
    ['Example.com', /lowercase/],
    ['*.example.com', /wildcard/],
    ['example.com.', /trailing dot/],
    ['example.com:8080', /port/],
    ['a..example.com', /empty label/],
    ['-a.example.com', /may not start or end with a dash/],
    ['a-.example.com', /may not start or end with a dash/],
    ['a_b.example.com', /may only contain/],
    ['ex ample.com', /may only contain/],
    [`${'a'.repeat(64)}.example`, /at most 63/],
    [`${'abcdefghi.'.repeat(25)}example`, /at most 253/],
    ['10.0.0.1', /IP addresses/],
  ];
  for (const [h, why] of cases) assert.match(hostnameProblem(h) ?? 'accepted', why, h);
});

test('the API schema lowercases and trims, then validates', () => {
  assert.equal(Hostname.parse('  WWW.Example.COM '), 'www.example.com');
  const r = Hostname.safeParse('bad_name.example');
  assert.equal(r.success, false);
  assert.match(r.error!.issues[0].message, /'bad_name\.example' is not a valid hostname/);
});

test('names under the base domain are recognised', () => {
  assert.equal(isUnderDomain('app.apps.example.com', 'apps.example.com'), true);
  assert.equal(isUnderDomain('apps.example.com', 'apps.example.com'), true);
  assert.equal(isUnderDomain('myapps.example.com', 'apps.example.com'), false);
});

test('certificate candidates: exact, then the wildcard one label up', () => {
  assert.deepEqual(certificateCandidates('www.shop.example'), ['www.shop.example', '*.shop.example']);
  assert.deepEqual(certificateCandidates('App.Localhost.'), ['app.localhost', '*.localhost']);
  assert.deepEqual(certificateCandidates('localhost'), ['localhost']);
});
