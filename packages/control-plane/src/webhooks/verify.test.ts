import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { deliveryId, parseDelivery, verifyGithubSignature, verifyGitlabToken, verifySignature } from './verify.ts';

const secret = 'a-webhook-secret-of-some-length';
const body = Buffer.from(JSON.stringify({ ref: 'refs/heads/main', after: 'a'.repeat(40), pusher: { name: 'octo cat<script>' } }));
const sign = (b: Buffer, s = secret) => 'sha256=' + createHmac('sha256', s).update(b).digest('hex');

test('github: the HMAC of the raw body verifies', () => {
  assert.equal(verifyGithubSignature(secret, body, sign(body)), true);
  assert.equal(verifySignature('github', secret, body, { 'x-hub-signature-256': sign(body) }), true);
});

test('github: wrong secret, changed body, missing, truncated or other-algorithm signatures fail', () => {
  assert.equal(verifyGithubSignature(secret, body, sign(body, 'another-secret-entirely')), false);
  assert.equal(verifyGithubSignature(secret, Buffer.concat([body, Buffer.from(' ')]), sign(body)), false);
  assert.equal(verifyGithubSignature(secret, body, undefined), false);
  assert.equal(verifyGithubSignature(secret, body, ''), false);
  assert.equal(verifyGithubSignature(secret, body, sign(body).slice(0, -2)), false);
  assert.equal(verifyGithubSignature(secret, body, 'sha256='), false);
  assert.equal(verifyGithubSignature(secret, body, sign(body).replace('sha256=', 'sha1=')), false);
  assert.equal(verifySignature('github', secret, body, {}), false);
  // A GitLab token header does not authenticate a GitHub hook.
  assert.equal(verifySignature('github', secret, body, { 'x-gitlab-token': secret }), false);
});

test('gitlab: the token must equal the secret exactly', () => {
  assert.equal(verifyGitlabToken(secret, secret), true);
  assert.equal(verifySignature('gitlab', secret, body, { 'x-gitlab-token': secret }), true);
  assert.equal(verifyGitlabToken(secret, secret.slice(0, -1)), false);
  assert.equal(verifyGitlabToken(secret, secret + 'x'), false);
  assert.equal(verifyGitlabToken(secret, ''), false);
  assert.equal(verifyGitlabToken(secret, undefined), false);
  assert.equal(verifySignature('gitlab', secret, body, { 'x-hub-signature-256': sign(body) }), false);
});

test('delivery ids come from the provider headers and are bounded', () => {
  assert.equal(deliveryId('github', { 'x-github-delivery': ' 72d3162e-cc78-11e3-81ab-4c9367dc0958 ' }), '72d3162e-cc78-11e3-81ab-4c9367dc0958');
  assert.equal(deliveryId('gitlab', { 'x-gitlab-event-uuid': 'u-1' }), 'u-1');
  assert.equal(deliveryId('gitlab', { 'idempotency-key': 'k-1' }), 'k-1');
  assert.equal(deliveryId('github', {}), undefined);
  assert.equal(deliveryId('github', { 'x-github-delivery': 'x'.repeat(201) }), undefined);
  assert.equal(deliveryId('github', { 'x-github-delivery': 'has space' }), undefined);
});

test('push payloads: ref, commit and a sanitized pusher; JSON or form-encoded', () => {
  const d = parseDelivery('github', { 'x-github-event': 'push', 'content-type': 'application/json' }, body);
  assert.deepEqual(d, { kind: 'push', event: 'push', ref: 'refs/heads/main', sha: 'a'.repeat(40), pusher: 'octocatscript' });
  const form = Buffer.from(new URLSearchParams({ payload: body.toString() }).toString());
  assert.equal(parseDelivery('github', { 'x-github-event': 'push', 'content-type': 'application/x-www-form-urlencoded' }, form).kind, 'push');
  const gl = Buffer.from(JSON.stringify({ ref: 'refs/heads/dev', after: 'b'.repeat(40), user_username: 'jane' }));
  assert.deepEqual(parseDelivery('gitlab', { 'x-gitlab-event': 'Push Hook' }, gl), { kind: 'push', event: 'Push Hook', ref: 'refs/heads/dev', sha: 'b'.repeat(40), pusher: 'jane' });
  assert.deepEqual(parseDelivery('github', { 'x-github-event': 'ping' }, Buffer.from('{}')), { kind: 'ping', event: 'ping' });
  assert.deepEqual(parseDelivery('gitlab', { 'x-gitlab-event': 'Tag Push Hook' }, gl), { kind: 'other', event: 'Tag Push Hook' });
});

test('bad payloads are refused with a reason', () => {
  assert.throws(() => parseDelivery('github', {}, body), /X-GitHub-Event/);
  assert.throws(() => parseDelivery('github', { 'x-github-event': 'push' }, Buffer.from('not json')), /not valid JSON/);
  assert.throws(() => parseDelivery('github', { 'x-github-event': 'push' }, Buffer.from('[1]')), /JSON object/);
  assert.throws(() => parseDelivery('github', { 'x-github-event': 'push' }, Buffer.from('{"ref":"refs/heads/main","after":"xyz"}')), /after/);
  assert.throws(() => parseDelivery('gitlab', { 'x-gitlab-event': 'Push Hook' }, Buffer.from(`{"after":"${'a'.repeat(40)}"}`)), /no ref/);
});
