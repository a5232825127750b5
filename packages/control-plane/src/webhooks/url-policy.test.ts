import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UrlPolicyError, isPrivateAddress, parseRepositoryUrl, redactCredentials, resolveRepositoryHost } from './url-policy.ts';

const strict = { allowPrivate: false };

test('https, http and git URLs are accepted; credentials are kept for git but not for display', () => {
  const r = parseRepositoryUrl('https://bot:s3cret@git.example.com/team/app.git', strict);
  assert.equal(r.url, 'https://bot:s3cret@git.example.com/team/app.git');
  assert.equal(r.display, 'https://git.example.com/team/app.git');
  assert.deepEqual([r.scheme, r.host, r.port], ['https', 'git.example.com', 443]);
  assert.equal(parseRepositoryUrl('git://example.org/x.git', strict).port, 9418);
  assert.equal(parseRepositoryUrl('http://example.org:8080/x.git', strict).port, 8080);
});

test('local paths, file:// and other transports are refused', () => {
  for (const bad of ['/srv/repos/app.git', './app', 'file:///etc', 'ssh://git@example.com/x.git', 'ext::sh -c touch% /tmp/pwned', 'git@github.com:a/b.git', 'ftp://example.com/x', '']) {
    assert.throws(() => parseRepositoryUrl(bad, strict), UrlPolicyError, bad);
  }
  assert.throws(() => parseRepositoryUrl('git://user:pw@example.org/x.git', strict), /cannot carry credentials/);
});

test('loopback and private literal addresses are refused unless the operator allows them', () => {
  for (const bad of ['http://127.0.0.1/x.git', 'http://10.1.2.3/x.git', 'https://[::1]/x.git', 'http://169.254.169.254/latest', 'http://localhost:9418/x', 'git://192.168.1.1/x']) {
    assert.throws(() => parseRepositoryUrl(bad, strict), /SHELLWEGO_FETCH_ALLOW_PRIVATE/, bad);
    assert.equal(parseRepositoryUrl(bad, { allowPrivate: true }).url.length > 0, true);
  }
});

test('address classification', () => {
  for (const a of ['127.0.0.1', '10.0.0.1', '172.16.5.4', '192.168.0.1', '169.254.1.1', '100.64.0.1', '0.0.0.0', '::1', '::', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '224.0.0.1', 'not-an-ip']) {
    assert.equal(isPrivateAddress(a), true, a);
  }
  for (const a of ['1.1.1.1', '140.82.112.3', '172.32.0.1', '2606:4700::1111', '::ffff:8.8.8.8']) assert.equal(isPrivateAddress(a), false, a);
});

test('resolution: a name that resolves to loopback is refused; allowed when the operator says so', async () => {
  const repo = parseRepositoryUrl('http://loopback.test.invalid/x.git', strict);
  await assert.rejects(resolveRepositoryHost({ ...repo, host: 'localhost' }, strict), /SHELLWEGO_FETCH_ALLOW_PRIVATE/);
  assert.match(await resolveRepositoryHost({ ...repo, host: 'localhost' }, { allowPrivate: true }), /^(127\.0\.0\.1|::1)$/);
  await assert.rejects(resolveRepositoryHost(repo, strict), /cannot resolve/);
});

test('credentials are redacted from messages', () => {
  assert.equal(redactCredentials("fatal: unable to access 'https://bot:tok@h.example/x.git/': 403"), "fatal: unable to access 'https://***@h.example/x.git/': 403");
});
