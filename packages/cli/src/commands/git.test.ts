import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gitRemoteUrl, isValidRemoteName } from './git.ts';

test('gitRemoteUrl points at /git/<app>.git on the API server, never with credentials', () => {
  assert.equal(gitRemoteUrl('http://127.0.0.1:8080', 'hello'), 'http://127.0.0.1:8080/git/hello.git');
  assert.equal(gitRemoteUrl('https://paas.example.com/', 'hello'), 'https://paas.example.com/git/hello.git');
  assert.equal(gitRemoteUrl('https://paas.example.com/prefix/', 'a-b'), 'https://paas.example.com/prefix/git/a-b.git');
  assert.equal(gitRemoteUrl('https://u:p@paas.example.com', 'x'), 'https://paas.example.com/git/x.git');
});

test('isValidRemoteName', () => {
  for (const ok of ['shellwego', 'origin', 'prod-1', 'a.b']) assert.ok(isValidRemoteName(ok), ok);
  for (const bad of ['', '-x', 'a b', 'a/b', 'a..b', 'x.lock', 'x.']) assert.ok(!isValidRemoteName(bad), bad);
});
