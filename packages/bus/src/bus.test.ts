import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InProcessBus, subjectMatches } from './index.ts';

test('subject wildcards follow NATS rules', () => {
  assert.equal(subjectMatches('a.b', 'a.b'), true);
  assert.equal(subjectMatches('a.*', 'a.b'), true);
  assert.equal(subjectMatches('a.*', 'a.b.c'), false);
  assert.equal(subjectMatches('a.>', 'a.b.c'), true);
  assert.equal(subjectMatches('a.>', 'a'), false);
  assert.equal(subjectMatches('build.*.result', 'build.x.result'), true);
  assert.equal(subjectMatches('build.*.result', 'build.x.log'), false);
});

test('delivers in order, as copies, asynchronously', async () => {
  const bus = new InProcessBus();
  const got: unknown[] = [];
  bus.subscribe<{ n: number }>('x.*', (m) => { got.push(m.n); });
  const msg = { n: 1 };
  void bus.publish('x.a', msg);
  msg.n = 99; // the subscriber must see the value at publish time
  void bus.publish('x.b', { n: 2 });
  assert.deepEqual(got, [], 'delivery is not synchronous');
  await bus.drain();
  assert.deepEqual(got, [1, 2]);
});

test('queue groups deliver each message to one member', async () => {
  const bus = new InProcessBus();
  const a: number[] = [];
  const b: number[] = [];
  bus.subscribe<number>('jobs', (n) => { a.push(n); }, { queue: 'w' });
  bus.subscribe<number>('jobs', (n) => { b.push(n); }, { queue: 'w' });
  for (let i = 0; i < 4; i++) await bus.publish('jobs', i);
  await bus.drain();
  assert.equal(a.length + b.length, 4);
  assert.equal(a.length, 2);
});

test('a failing handler does not stop later deliveries', async () => {
  const errors: string[] = [];
  const bus = new InProcessBus((_e, s) => errors.push(s));
  const got: number[] = [];
  bus.subscribe<number>('t', (n) => { if (n === 1) throw new Error('boom'); got.push(n); });
  await bus.publish('t', 1);
  await bus.publish('t', 2);
  await bus.drain();
  assert.deepEqual(got, [2]);
  assert.deepEqual(errors, ['t']);
});
