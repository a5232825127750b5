import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exitCodeOf, normalizeRunArgs, runUrl, shellCommand } from './run.ts';

test('argv becomes one shell line: a single word as typed, several quoted', () => {
  assert.equal(shellCommand(['echo $HOME; exit 3']), 'echo $HOME; exit 3');
  assert.equal(shellCommand(['sh', '-c', 'echo $SOMECONFIG; exit 3']), "sh -c 'echo $SOMECONFIG; exit 3'");
  assert.equal(shellCommand(['echo', "it's", 'a=b', '']), "echo 'it'\\''s' a=b ''");
});

test('the run URL: ws(s), the app, command, tty, size and repeated env', () => {
  const u = new URL(runUrl('https://api.example.com/', 'my app', { command: 'echo $X', tty: true, cols: 120, rows: 40, env: { X: 'a=b', Y: '' } }));
  assert.equal(u.protocol, 'wss:');
  assert.equal(u.pathname, '/v1/apps/my%20app/run');
  assert.equal(u.searchParams.get('command'), 'echo $X');
  assert.equal(u.searchParams.get('tty'), '1');
  assert.equal(u.searchParams.get('cols'), '120');
  assert.deepEqual(u.searchParams.getAll('env'), ['X=a=b', 'Y=']);
  const plain = new URL(runUrl('http://127.0.0.1:8080', 'a', { command: 'true', tty: false, env: {} }));
  assert.equal(plain.protocol, 'ws:');
  assert.equal(plain.searchParams.get('tty'), '0');
  assert.equal(plain.searchParams.has('cols'), false);
});

test('the exit code: the remote one, 128+signal when killed, 1 when unknown', () => {
  assert.equal(exitCodeOf({ exitCode: 3, signal: null }), 3);
  assert.equal(exitCodeOf({ exitCode: null, signal: 'SIGKILL' }), 137);
  assert.equal(exitCodeOf({ exitCode: null, signal: null }), 1);
});

test('`run APP -- cmd` names the app like `heroku run`; --app and the linked app still work', () => {
  assert.deepEqual(normalizeRunArgs(['run', 'hello', '--', 'bash']), ['run', '--app', 'hello', '--', 'bash']);
  assert.deepEqual(normalizeRunArgs(['run', '--no-tty', 'hello', '-e', 'A=1', '--', 'sh', '-c', 'x']), ['run', '--app', 'hello', '--no-tty', '-e', 'A=1', '--', 'sh', '-c', 'x']);
  assert.deepEqual(normalizeRunArgs(['run', '--app', 'hello', '--', 'bash']), ['run', '--app', 'hello', '--', 'bash']);
  assert.deepEqual(normalizeRunArgs(['run', '--', 'hello']), ['run', '--', 'hello'], 'after -- everything is the command');
  assert.deepEqual(normalizeRunArgs(['ps', 'hello', '--', 'x']), ['ps', 'hello', '--', 'x']);
});
