import { test } from 'node:test';
import assert from 'node:assert/strict';
import { basicAuthPassword, bearerFromGitAuth, deployUpdate, FLUSH_PKT, isGitService, parsePktLines, parseRefUpdates, pktLine, serviceAdvertisement } from './protocol.ts';

const basic = (s: string) => `Basic ${Buffer.from(s).toString('base64')}`;
const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const Z = '0'.repeat(40);

test('pktLine prefixes the length in 4 hex digits, including itself', () => {
  assert.equal(pktLine('# service=git-upload-pack\n').toString(), '001e# service=git-upload-pack\n');
  assert.equal(pktLine('').toString(), '0004');
  assert.equal(pktLine(Buffer.from([1, 2])).length, 6);
  assert.throws(() => pktLine(Buffer.alloc(65517)), RangeError);
  assert.equal(FLUSH_PKT.toString(), '0000');
});

test('serviceAdvertisement is the smart-HTTP preamble', () => {
  assert.equal(serviceAdvertisement('git-receive-pack').toString(), '001f# service=git-receive-pack\n0000');
});

test('parsePktLines round-trips and rejects malformed input', () => {
  const buf = Buffer.concat([pktLine('hello\n'), FLUSH_PKT, pktLine('x')]);
  assert.deepEqual(parsePktLines(buf).map((l) => (l === null ? null : l.toString())), ['hello\n', null, 'x']);
  assert.throws(() => parsePktLines(Buffer.from('00')), /truncated/);
  assert.throws(() => parsePktLines(Buffer.from('zzzz')), /invalid/);
  assert.throws(() => parsePktLines(Buffer.from('0010abc')), /invalid/);
  assert.throws(() => parsePktLines(Buffer.from('0002')), /invalid/);
});

test('isGitService accepts only the two smart services', () => {
  assert.ok(isGitService('git-upload-pack'));
  assert.ok(isGitService('git-receive-pack'));
  assert.ok(!isGitService('git-upload-archive'));
  assert.ok(!isGitService(undefined));
});

test('basicAuthPassword takes the password, any username, and rejects the rest', () => {
  assert.equal(basicAuthPassword(basic('x:swg_abc')), 'swg_abc');
  assert.equal(basicAuthPassword(basic(':swg_abc')), 'swg_abc');
  assert.equal(basicAuthPassword(basic('user:pa:ss')), 'pa:ss', 'only the first colon separates');
  assert.equal(basicAuthPassword(basic('user:')), null);
  assert.equal(basicAuthPassword(basic('nocolon')), null);
  assert.equal(basicAuthPassword('Bearer swg_abc'), null);
  assert.equal(basicAuthPassword(undefined), null);
  assert.equal(basicAuthPassword('Basic !!!'), null);
});

test('bearerFromGitAuth builds the header authenticate() expects', () => {
  assert.equal(bearerFromGitAuth(basic('git:swg_tok')), 'Bearer swg_tok');
  assert.equal(bearerFromGitAuth('Bearer swg_tok'), 'Bearer swg_tok');
  assert.equal(bearerFromGitAuth(basic('git:')), undefined);
  assert.equal(bearerFromGitAuth(undefined), undefined);
});

test('parseRefUpdates reads pre-receive input', () => {
  assert.deepEqual(parseRefUpdates(`${A} ${B} refs/heads/main\n${Z} ${A} refs/heads/x\n`), [
    { oldSha: A, newSha: B, ref: 'refs/heads/main' },
    { oldSha: Z, newSha: A, ref: 'refs/heads/x' },
  ]);
  assert.deepEqual(parseRefUpdates(''), []);
  assert.throws(() => parseRefUpdates('garbage'), /malformed/);
});

test('deployUpdate: main deploys; master only when there is no main; deletions never', () => {
  const main = { oldSha: Z, newSha: A, ref: 'refs/heads/main' };
  const master = { oldSha: Z, newSha: B, ref: 'refs/heads/master' };
  const feature = { oldSha: Z, newSha: B, ref: 'refs/heads/feature' };
  assert.equal(deployUpdate([feature, main], false), main);
  assert.equal(deployUpdate([master], false), master);
  assert.equal(deployUpdate([master], true), null, 'the repo has a main: master is an ordinary branch');
  assert.equal(deployUpdate([master, main], false), main);
  assert.equal(deployUpdate([master, { ...main, newSha: Z }], false), null, 'deleting main in the same push: nothing deploys');
  assert.equal(deployUpdate([{ ...main, newSha: Z }], true), null);
  assert.equal(deployUpdate([feature], false), null);
});
