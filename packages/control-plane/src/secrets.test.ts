import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SecretBox } from './secrets.ts';
import { hashPassword, hashToken, newTokenSecret, verifyPassword } from './passwords.ts';

test('sealed values round-trip, differ each time, and hide the plaintext', () => {
  const box = SecretBox.fromKey(Buffer.alloc(32, 7));
  const a = box.seal('s3cret-value', 'app_1');
  const b = box.seal('s3cret-value', 'app_1');
  assert.notEqual(a, b, 'random IV per value');
  assert.ok(!a.includes('s3cret'));
  assert.equal(box.open(a, 'app_1'), 's3cret-value');
});

test('a value sealed for one app cannot be opened as another app’s, nor tampered with', () => {
  const box = SecretBox.fromKey(Buffer.alloc(32, 7));
  const sealed = box.seal('v', 'app_1');
  assert.throws(() => box.open(sealed, 'app_2'));
  const parts = sealed.split(':');
  parts[3] = Buffer.from('xx').toString('base64');
  assert.throws(() => box.open(parts.join(':'), 'app_1'));
  assert.throws(() => SecretBox.fromKey(Buffer.alloc(32, 8)).open(sealed, 'app_1'), 'another key');
});

test('the key file is created once with mode 0600 and reused', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-key-'));
  const file = join(dir, 'sub', 'master.key');
  const a = await SecretBox.fromFile(file);
  const b = await SecretBox.fromFile(file);
  assert.equal(b.open(a.seal('x')), 'x');
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  assert.equal(Buffer.from((await readFile(file, 'utf8')).trim(), 'base64').length, 32);
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
