/**
 * One behaviour suite, run against both buses: the in-process bus (all-in-one) and NatsBus over a
 * real nats-server (split and multi-node), so code written against one works on the other.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { InProcessBus, NatsBus, defaultDurableStreams, subjectMatches, subjectWithin, subjectsOverlap, validateDurableStreams } from './index.ts';
import type { Bus, DurableOptions } from './index.ts';
import { NatsServerProcess, until } from './testing.ts';
import { connect as tcpConnect, createServer } from 'node:net';
import type { Socket } from 'node:net';

type TestBus = Bus & { drain(): Promise<void> };
type OnError = (err: unknown, subject: string) => void;

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
/**
 * caps.roundRobinQueues: queue members take turns (in-process). caps.redelivers: a failed message
 * comes again (durable subjects), so its handler error is reported once per delivery.
 */
function busSuite(name: string, make: (onError?: OnError) => Promise<TestBus>, caps: { roundRobinQueues: boolean; redelivers?: boolean }) {
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

    test('two plain subscriptions to one pattern on one bus each get every message', async () => {
      const bus = await newBus();
      const a: number[] = [];
      const b: number[] = [];
      bus.subscribe<number>('jobs', (n) => { a.push(n); });
      bus.subscribe<number>('jobs', (n) => { b.push(n); });
      for (let i = 0; i < 3; i++) await bus.publish('jobs', i);
      await bus.drain();
      assert.deepEqual([a, b], [[0, 1, 2], [0, 1, 2]]);
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
      if (caps.redelivers) assert.deepEqual([...new Set(errors)], ['t']);
      else assert.deepEqual(errors, ['t']);
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

test('durable subject rules: a pattern within a stream filter, overlapping stream subjects', () => {
  assert.equal(subjectWithin('agent.n1.assignments', 'agent.*.assignments'), true);
  assert.equal(subjectWithin('agent.*.assignments', 'agent.*.assignments'), true);
  assert.equal(subjectWithin('logs.app.>', 'logs.app.>'), true);
  assert.equal(subjectWithin('logs.app.a1', 'logs.>'), true);
  assert.equal(subjectWithin('logs.>', 'logs.app.>'), false);
  assert.equal(subjectWithin('a.>', 'a.*'), false);
  assert.equal(subjectWithin('a.*', 'a.b'), false);
  assert.equal(subjectWithin('build.*.log', 'build.*.result'), false);
  assert.equal(subjectsOverlap('build.*.result', 'build.b1.>'), true);
  assert.equal(subjectsOverlap('build.requested', 'build.*.result'), false);
  assert.equal(subjectsOverlap('a.>', 'a'), false);
  validateDurableStreams(defaultDurableStreams());
  assert.throws(() => validateDurableStreams([{ name: 'A', subjects: ['x.*'] }, { name: 'B', subjects: ['x.y'] }]), /overlap: x\.\* \(A\) and x\.y \(B\)/);
  assert.throws(() => validateDurableStreams([{ name: 'bad.name', subjects: ['x'] }]), /letters, digits/);
});

/** A TCP hop between clients and nats-server that a test can cut and restore: a network blip for one node only. */
async function tcpProxy(targetPort: number) {
  const sockets = new Set<Socket>();
  let up = true;
  const srv = createServer((client) => {
    if (!up) {
      client.destroy();
      return;
    }
    const upstream = tcpConnect(targetPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) s.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const cut = () => {
    up = false;
    for (const s of sockets) s.destroy();
  };
  return {
    url: `nats://127.0.0.1:${(srv.address() as { port: number }).port}`,
    cut,
    restore: () => { up = true; },
    close: () => new Promise<void>((r) => { cut(); srv.close(() => r()); }),
  };
}

describe('NatsBus with JetStream (durable subjects) over a real nats-server', () => {
  let server: NatsServerProcess;
  /** The shared suite's subjects overlap the default streams': its own server. */
  let suiteServer: NatsServerProcess;
  let seq = 0;
  before(async () => {
    [server, suiteServer] = await Promise.all([NatsServerProcess.start({ jetstream: true }), NatsServerProcess.start({ jetstream: true })]);
  });
  after(async () => {
    await Promise.all([server?.stop(), suiteServer?.stop()]);
  });
  const fast: Omit<DurableOptions, 'streams'> = { retryDelayMs: 20, maxDeliver: 3, pullExpiresMs: 1000 };
  const suiteStreams: DurableOptions = {
    ...fast,
    streams: [{ name: 'SUITE', subjects: ['x.*', 'build.>', 'logs.>', 'p', 'jobs', 't', 'slow', 'u', 'c'], maxAgeMs: 600_000 }],
  };
  const opened: NatsBus[] = [];
  const connect = async (name: string, extra: Partial<Parameters<typeof NatsBus.connect>[0]> = {}) => {
    const bus = await NatsBus.connect({ servers: server.url, name, reconnectWaitMs: 100, durable: { ...fast, streams: defaultDurableStreams() }, ...extra });
    opened.push(bus);
    return bus;
  };
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((b) => b.close()));
  });

  // Every subject of the shared suite is durable here: same behaviour, through JetStream consumers.
  busSuite('behaviour', (onError) => NatsBus.connect({ servers: suiteServer.url, name: `suite-${++seq}`, reconnectWaitMs: 100, onError, durable: suiteStreams }),
    { roundRobinQueues: false, redelivers: true });

  test('a command published while its only subscriber is away is delivered when it comes back', async () => {
    const agent = await connect('agent-n1');
    const cp = await connect('cp');
    const got: string[] = [];
    agent.subscribe<{ buildId: string }>('build.requested', (m) => { got.push(m.buildId); });
    await agent.drain(); // the durable consumer exists
    await agent.close(); // the agent process is gone

    for (const id of ['b1', 'b2', 'b3']) await cp.publish('build.requested', { buildId: id });
    // Assignments keep only the newest set per node: the agent needs the latest state, not history.
    for (let g = 1; g <= 3; g++) await cp.publish('agent.n1.assignments', { nodeId: 'n1', generation: g, instances: [] });

    const back = await connect('agent-n1'); // same identity: resumes the same durable consumers
    const generations: number[] = [];
    back.subscribe<{ buildId: string }>('build.requested', (m) => { got.push(m.buildId); });
    await until('the three commands', () => got.length === 3);
    assert.deepEqual(got, ['b1', 'b2', 'b3']);
    await back.drain();
    assert.deepEqual(got, ['b1', 'b2', 'b3'], 'each command once');
    // The assignments consumer did not exist while away: it starts at the subscription (like
    // core NATS), so create it, go away, publish, come back.
    const a1 = back.subscribe<{ generation: number }>('agent.n1.assignments', (m) => { generations.push(m.generation); });
    await back.drain();
    a1.unsubscribe();
    for (let g = 4; g <= 6; g++) await cp.publish('agent.n1.assignments', { nodeId: 'n1', generation: g, instances: [] });
    back.subscribe<{ generation: number }>('agent.n1.assignments', (m) => { generations.push(m.generation); });
    await until('the newest assignments', () => generations.includes(6));
    await back.drain();
    assert.deepEqual(generations, [6]);
  });

  test('a command published while the only subscriber is disconnected is delivered when it reconnects', async () => {
    const proxy = await tcpProxy(server.port);
    try {
      const statuses: string[] = [];
      const agent = await connect('agent-n2', { servers: proxy.url, onStatus: (s) => statuses.push(s.type) });
      const cp = await connect('cp-blip');
      const generations: number[] = [];
      agent.subscribe<{ generation: number }>('agent.n2.assignments', (m) => { generations.push(m.generation); });
      await agent.drain();
      await cp.publish('agent.n2.assignments', { nodeId: 'n2', generation: 1, instances: [] });
      await until('first assignments', () => generations.includes(1));

      proxy.cut(); // the agent's network is gone; the control plane's is not
      await until('agent noticed the disconnect', () => statuses.includes('disconnect'));
      for (let g = 2; g <= 4; g++) await cp.publish('agent.n2.assignments', { nodeId: 'n2', generation: g, instances: [] });
      proxy.restore();
      await until('the newest assignments after the reconnect', () => generations.includes(4));
      await agent.drain();
      assert.ok(statuses.includes('reconnect'), statuses.join(' '));
      // Level-triggered: the stream keeps the newest set per node, so the agent jumps to it.
      assert.deepEqual(generations, [1, 4]);
    } finally {
      await proxy.close();
    }
  });

  test('a handler that throws gets the message again; an ack ends it', async () => {
    const errors: string[] = [];
    const bus = await connect('retry', { onError: (_e, s) => errors.push(s) });
    const attempts: number[] = [];
    const handled: number[] = [];
    bus.subscribe<number>('agent.nod_t.status', (n) => {
      attempts.push(n);
      if (attempts.filter((x) => x === n).length === 1) throw new Error('store is briefly down');
      handled.push(n);
    });
    await bus.drain();
    await bus.publish('agent.nod_t.status', 7);
    await bus.drain();
    assert.deepEqual(attempts, [7, 7]);
    assert.deepEqual(handled, [7]);
    assert.deepEqual(errors, ['agent.nod_t.status']);
  });

  test('a handler that keeps failing is given up after maxDeliver deliveries (and reported each time)', async () => {
    const errors: string[] = [];
    const bus = await connect('give-up', { onError: (_e, s) => errors.push(s) });
    let attempts = 0;
    bus.subscribe('build.gu.result', () => { attempts++; throw new Error('always'); });
    await bus.drain();
    await bus.publish('build.gu.result', {});
    await bus.drain();
    assert.equal(attempts, 3);
    assert.deepEqual(errors, ['build.gu.result', 'build.gu.result', 'build.gu.result']);
  });

  test('a queue group across two connections gets each durable message once', async () => {
    const a = await connect('builder-a');
    const b = await connect('builder-b');
    const cp = await connect('cp-q');
    const onA: number[] = [];
    const onB: number[] = [];
    a.subscribe<number>('build.requested', async (n) => { onA.push(n); await new Promise((r) => setTimeout(r, 5)); }, { queue: 'builders' });
    b.subscribe<number>('build.requested', async (n) => { onB.push(n); await new Promise((r) => setTimeout(r, 5)); }, { queue: 'builders' });
    await Promise.all([a.drain(), b.drain()]);
    for (let i = 0; i < 30; i++) await cp.publish('build.requested', i);
    await until('all 30 builds taken', () => onA.length + onB.length === 30);
    await Promise.all([a.drain(), b.drain()]);
    assert.deepEqual([...onA, ...onB].sort((x, y) => x - y), [...Array(30).keys()], 'each build exactly once');
    assert.ok(onA.length > 0 && onB.length > 0, `both members worked (${onA.length}/${onB.length})`);
  });

  test('live streams record but deliver like core NATS: every current subscriber, nothing from before', async () => {
    const cp = await connect('cp-events');
    const s1 = await connect('sse-1');
    const s2 = await connect('sse-2');
    await cp.publish('events.org1', { n: 0 }); // before anyone listens
    await cp.drain(); // the server has it
    const one: number[] = [];
    const two: number[] = [];
    s1.subscribe<{ n: number }>('events.org1', (e) => { one.push(e.n); });
    s2.subscribe<{ n: number }>('events.org1', (e) => { two.push(e.n); });
    await Promise.all([s1.drain(), s2.drain()]);
    await cp.publish('events.org1', { n: 1 });
    await until('both SSE subscribers got the event', () => one.length === 1 && two.length === 1);
    assert.deepEqual([one, two], [[1], [1]]);
    const jsm = await cp.nc.jetstreamManager();
    await until('both events recorded', async () => (await jsm.streams.info('SHELLWEGO_EVENTS')).state.messages === 2);
    assert.deepEqual((await jsm.streams.getMessage('SHELLWEGO_EVENTS', { seq: 1 })).json(), { n: 0 });
  });

  test('nats-server killed (-9) and restarted on the same store: no acknowledged message is lost', async () => {
    const statuses: string[] = [];
    const sub = await connect('cp-crash', { durable: { ...fast, ackWaitMs: 2000, streams: defaultDurableStreams() }, onStatus: (s) => statuses.push(s.type) });
    const pub = await connect('agent-crash');
    const handled = new Set<number>();
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    sub.subscribe<number>('agent.nod_t.status', async (n) => {
      if (n >= 5) await gate; // handles 0-4, then stalls: the rest are stored but unhandled
      handled.add(n);
    });
    await sub.drain();
    for (let i = 0; i < 20; i++) await pub.publish('agent.nod_t.status', i); // each resolved = stored by JetStream
    await until('the first five handled', () => handled.size === 5);

    await server.kill();
    release();
    // Published while the server is down: publish() retries until the restarted server stores it.
    const during = Promise.all([20, 21, 22].map((i) => pub.publish('agent.nod_t.status', i)));
    await until('disconnect noticed', () => statuses.includes('disconnect'));
    await server.boot();
    await during;
    await until('every message handled after the restart', () => handled.size === 23, 60_000);
    assert.deepEqual([...handled].sort((x, y) => x - y), [...Array(23).keys()]);
  });

  test('a durable consumer keeps its position and limits across reconnects; changed limits are reported', async () => {
    const first = await connect('limits', { durable: { ...fast, ackWaitMs: 10_000, streams: defaultDurableStreams() } });
    const got: number[] = [];
    first.subscribe<number>('build.lim.result', (n) => { got.push(n); });
    await first.drain();
    await first.publish('build.lim.result', 1);
    await first.drain();
    await first.close();
    await (await connect('lim-pub')).publish('build.lim.result', 2);
    const statuses: { type: string; data?: unknown }[] = [];
    const second = await connect('limits', { durable: { ...fast, ackWaitMs: 20_000, streams: defaultDurableStreams() }, onStatus: (s) => statuses.push(s) });
    second.subscribe<number>('build.lim.result', (n) => { got.push(n); });
    await second.drain();
    assert.deepEqual(got, [1, 2], 'resumed after 1, not from the start');
    const reported = statuses.find((s) => s.type === 'consumer-config')?.data as { kept: { ack_wait: number }; wanted: { ack_wait: number } };
    assert.deepEqual([reported.kept.ack_wait, reported.wanted.ack_wait], [10_000 * 1e6, 20_000 * 1e6]);
  });

  test('a node that may not create streams subscribes before they exist and gets its commands once they do', async () => {
    const fresh = await NatsServerProcess.start({ jetstream: true });
    try {
      const node = await connect('node-n3', { servers: fresh.url, durable: { ...fast, createStreams: false, streams: defaultDurableStreams() } });
      const got: number[] = [];
      node.subscribe<{ generation: number }>('agent.n3.assignments', (m) => { got.push(m.generation); });
      const cp = await connect('cp-fresh', { servers: fresh.url }); // creates the streams
      await node.drain(); // its consumer exists now
      await cp.publish('agent.n3.assignments', { nodeId: 'n3', generation: 1, instances: [] });
      await until('the assignments', () => got.length === 1);
      assert.deepEqual(got, [1]);
      await Promise.all(opened.splice(0).map((b) => b.close()));
    } finally {
      await fresh.stop();
    }
  });

  test('connecting with durable subjects to a server without JetStream fails with a clear error', async () => {
    const plain = await NatsServerProcess.start();
    try {
      await assert.rejects(
        NatsBus.connect({ servers: plain.url, name: 'no-js', durable: { streams: defaultDurableStreams() } }),
        /has no JetStream \(start nats-server with -js/,
      );
    } finally {
      await plain.stop();
    }
  });
});
