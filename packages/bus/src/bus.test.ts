/**
 * One behaviour suite, run against both buses: the in-process bus (all-in-one) and NatsBus over a
 * real nats-server (split and multi-node), so code written against one works on the other.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { InProcessBus, NatsBus, subjectMatches } from './index.ts';
import type { Bus } from './index.ts';
import { NatsServerProcess } from './testing.ts';

type TestBus = Bus & { drain(): Promise<void> };
type OnError = (err: unknown, subject: string) => void;

async function until(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('subject wildcards follow NATS rules', () => {
  assert.equal(subjectMatches('a.b', 'a.b'), true);
  assert.equal(subjectMatches('a.*', 'a.b'), true);
  assert.equal(subjectMatches('a.*', 'a.b.c'), false);
  assert.equal(subjectMatches('a.>', 'a.b.c'), true);
  assert.equal(subjectMatches('a.>', 'a'), false);
  assert.equal(subjectMatches('build.*.result', 'build.x.result'), true);
  assert.equal(subjectMatches('build.*.result', 'build.x.log'), false);
});

/** The behaviour every Bus must have. `make` opens a fresh bus; the suite closes it. */
function busSuite(name: string, make: (onError?: OnError) => Promise<TestBus>, caps: { roundRobinQueues: boolean }) {
  describe(name, () => {
    const open: TestBus[] = [];
    const newBus = async (onError?: OnError) => {
      const b = await make(onError);
      open.push(b);
      return b;
    };
    afterEach(async () => {
      await Promise.all(open.splice(0).map((b) => b.close()));
    });

    test('delivers in order, as copies, asynchronously', async () => {
      const bus = await newBus();
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

    test('wildcards select subjects and the handler learns the subject', async () => {
      const bus = await newBus();
      const got: string[] = [];
      bus.subscribe('build.*.result', (_m, subject) => { got.push(subject); });
      bus.subscribe('logs.app.>', (_m, subject) => { got.push(subject); });
      for (const s of ['build.b1.result', 'build.b1.log', 'logs.app.a1', 'logs.app', 'logs.app.a2.x']) await bus.publish(s, {});
      await bus.drain();
      assert.deepEqual(got.sort(), ['build.b1.result', 'logs.app.a1', 'logs.app.a2.x']);
    });

    test('JSON payloads: objects, arrays, strings, null and undefined (as null)', async () => {
      const bus = await newBus();
      const got: unknown[] = [];
      bus.subscribe('p', (m) => { got.push(m); });
      const sent = [{ a: [1, { b: 'c' }], d: null }, [1, 2], 'text', null];
      for (const m of sent) await bus.publish('p', m);
      await bus.publish('p', undefined);
      await bus.drain();
      assert.deepEqual(got, [...sent, null]);
    });

    test('queue groups deliver each message to one member; plain subscribers get every message', async () => {
      const bus = await newBus();
      const a: number[] = [];
      const b: number[] = [];
      const all: number[] = [];
      bus.subscribe<number>('jobs', (n) => { a.push(n); }, { queue: 'w' });
      bus.subscribe<number>('jobs', (n) => { b.push(n); }, { queue: 'w' });
      bus.subscribe<number>('jobs', (n) => { all.push(n); });
      for (let i = 0; i < 20; i++) await bus.publish('jobs', i);
      await bus.drain();
      assert.deepEqual([...a, ...b].sort((x, y) => x - y), [...Array(20).keys()], 'each job exactly once in the group');
      assert.deepEqual(all, [...Array(20).keys()]);
      if (caps.roundRobinQueues) assert.equal(a.length, 10);
    });

    test('a failing handler does not stop later deliveries', async () => {
      const errors: string[] = [];
      const bus = await newBus((_e, s) => errors.push(s));
      const got: number[] = [];
      bus.subscribe<number>('t', (n) => { if (n === 1) throw new Error('boom'); got.push(n); });
      await bus.publish('t', 1);
      await bus.publish('t', 2);
      await bus.drain();
      assert.deepEqual(got, [2]);
      assert.deepEqual(errors, ['t']);
    });

    test('one handler at a time per subscription, even when handlers are async', async () => {
      const bus = await newBus();
      let running = 0;
      let maxRunning = 0;
      const got: number[] = [];
      bus.subscribe<number>('slow', async (n) => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        await new Promise((r) => setTimeout(r, 5));
        got.push(n);
        running--;
      });
      for (let i = 0; i < 5; i++) await bus.publish('slow', i);
      await bus.drain();
      assert.deepEqual(got, [0, 1, 2, 3, 4]);
      assert.equal(maxRunning, 1);
    });

    test('unsubscribe stops delivery', async () => {
      const bus = await newBus();
      const got: number[] = [];
      const sub = bus.subscribe<number>('u', (n) => { got.push(n); });
      await bus.publish('u', 1);
      await bus.drain();
      sub.unsubscribe();
      await bus.publish('u', 2);
      await bus.drain();
      assert.deepEqual(got, [1]);
    });

    test('close() finishes what was delivered; publishing afterwards is a no-op', async () => {
      const bus = await newBus();
      const got: number[] = [];
      bus.subscribe<number>('c', async (n) => {
        await new Promise((r) => setTimeout(r, 10));
        got.push(n);
      });
      await bus.publish('c', 1);
      await bus.drain();
      await bus.publish('c', 2);
      await bus.close();
      assert.ok(got.includes(1));
      await bus.publish('c', 3); // must not throw
      assert.ok(!got.includes(3));
    });
  });
}

busSuite('InProcessBus', async (onError) => new InProcessBus(onError), { roundRobinQueues: true });

describe('NatsBus over a real nats-server', () => {
  let server: NatsServerProcess;
  before(async () => {
    server = await NatsServerProcess.start();
  });
  after(async () => {
    await server?.stop();
  });
  const connect = (name: string, extra: { onError?: OnError; onStatus?: (s: { type: string }) => void } = {}) =>
    NatsBus.connect({ servers: server.url, name, reconnectWaitMs: 100, ...extra });

  busSuite('behaviour', (onError) => connect('suite', { onError }), { roundRobinQueues: false });

  test('messages cross connections (processes); a queue group spans them', async () => {
    const a = await connect('a');
    const b = await connect('b');
    const c = await connect('c');
    try {
      const onA: number[] = [];
      const onB: number[] = [];
      a.subscribe<number>('work', (n) => { onA.push(n); }, { queue: 'builders' });
      b.subscribe<number>('work', (n) => { onB.push(n); }, { queue: 'builders' });
      await Promise.all([a.drain(), b.drain()]); // subscriptions registered on the server
      for (let i = 0; i < 30; i++) await c.publish('work', i);
      await c.drain();
      await until('all 30 jobs handled', () => onA.length + onB.length === 30);
      assert.deepEqual([...onA, ...onB].sort((x, y) => x - y), [...Array(30).keys()]);
    } finally {
      await Promise.all([a.close(), b.close(), c.close()]);
    }
  });

  test('nats-server restarted: both sides reconnect on their own and messages flow again', async () => {
    const statuses: string[] = [];
    const sub = await connect('sub', { onStatus: (s) => statuses.push(`sub:${s.type}`) });
    const pub = await connect('pub', { onStatus: (s) => statuses.push(`pub:${s.type}`) });
    try {
      const got: number[] = [];
      sub.subscribe<number>('ping.*', (n) => { got.push(n); });
      await sub.drain();
      await pub.publish('ping.x', 1);
      await pub.drain();
      await until('first message', () => got.includes(1));

      await server.restart();
      await until('both reconnected', () => statuses.includes('sub:reconnect') && statuses.includes('pub:reconnect'));
      assert.ok(statuses.includes('sub:disconnect'), statuses.join(' '));
      // The subscription is restored by the client; keep publishing until it is in place on the server.
      let n = 100;
      await until('a message after the restart', async () => {
        await pub.publish('ping.y', ++n);
        await pub.drain();
        return got.some((x) => x > 100);
      });
    } finally {
      await Promise.all([sub.close(), pub.close()]);
    }
  });

  test('while disconnected, publishes are kept up to a bound and the rest dropped (and reported)', async () => {
    const statuses: { type: string; data?: unknown }[] = [];
    const bus = await NatsBus.connect({ servers: server.url, name: 'bounded', reconnectWaitMs: 100, offlineBufferBytes: 3000, onStatus: (s) => statuses.push(s) });
    try {
      await server.kill();
      await until('disconnect noticed', () => statuses.some((s) => s.type === 'disconnect'));
      for (let i = 0; i < 10; i++) await bus.publish('big', 'x'.repeat(1000)); // ~1 kB each: 2 fit
      await server.boot();
      await until('reconnected', () => statuses.some((s) => s.type === 'reconnect'));
      assert.deepEqual(statuses.filter((s) => s.type === 'dropped'), [{ type: 'dropped', data: 8 }]);
    } finally {
      await bus.close();
    }
  });

  test('close() returns while nats-server is down', async () => {
    const bus = await connect('down');
    bus.subscribe('x', () => {});
    await server.kill();
    try {
      await bus.publish('x', 1); // buffered by the client; dropped at close
      await bus.close();
    } finally {
      await server.boot();
    }
  });
});
