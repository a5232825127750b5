import { AckPolicy, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType, connect, nanos, nuid } from 'nats';
import type {
  ConnectionOptions, ConsumerConfig, JetStreamClient, JetStreamManager, JsMsg, NatsConnection, NatsError,
  StreamConfig, Subscription as NatsSubscription,
} from 'nats';
import type { Bus, Handler, SubscribeOptions, Subscription } from './bus.ts';
import { subjectMatches } from './bus.ts';
import { consumerNameFor, subjectWithin, validateDurableStreams } from './durable.ts';
import type { DurableOptions, DurableStream } from './durable.ts';

export interface NatsBusOptions {
  /** One or more `nats://host:port` URLs (a cluster's seed list). */
  servers: string | string[];
  /** Connection name shown by the server (`nats-server` monitoring), e.g. `shellwego-node-<id>`. */
  name: string;
  /** Pause between reconnect attempts. Default 1 s (with jitter), forever. */
  reconnectWaitMs?: number;
  /** Called for a handler that threw or a payload that is not JSON. */
  onError?: (err: unknown, subject: string) => void;
  /**
   * Connection state changes for the log: the client's (`disconnect`, `reconnect`, `error`, …),
   * `dropped` (data: number of messages) when publishes were dropped during an outage, and
   * `consumer-retry` (data: stream, consumer, error) when a durable subscription keeps failing to
   * pull (JetStream unavailable; it retries every reconnectWaitMs), and `consumer-config` when an
   * existing durable consumer keeps limits other than the configured ones.
   */
  onStatus?: (status: { type: string; data?: unknown }) => void;
  /**
   * While disconnected, publishes are kept for the reconnect up to this many bytes, then dropped
   * (every message that matters is republished, and memory must not grow with a long outage).
   * Default 8 MiB.
   */
  offlineBufferBytes?: number;
  /**
   * Extra client options passed through unchanged (TLS, credentials/authenticator, …): the
   * secured cluster setup adds them here without another code path.
   */
  connection?: Partial<ConnectionOptions>;
  /**
   * Subjects carried by JetStream (at-least-once) instead of core NATS (at-most-once). Publishing
   * on a `consumer` stream's subject resolves once JetStream has stored the message (retried
   * across a server restart for up to publishTimeoutMs, then it rejects). Subscribing to a pattern inside a `consumer` stream reads through a durable
   * consumer: acked after the handler resolves, redelivered when it throws or the process goes
   * away, so **a handler may see the same message more than once** (and a redelivered message after
   * later ones) and must be idempotent. Queue groups share one durable consumer per (queue,
   * pattern). Everything else stays on core NATS.
   */
  durable?: DurableOptions;
}

type DurableSettings = Required<Omit<DurableOptions, 'consumerName'>> & { consumerName: string };

const DRAIN_TIMEOUT_MS = 5_000;

interface Sub {
  nats: NatsSubscription | null;
  /** Per-subscription delivery chain: messages reach one handler in arrival order, one at a time. */
  tail: Promise<void>;
  closed: boolean;
  /** JetStream subscriptions: where the durable consumer lives, and once it exists on the server. */
  durable?: { stream: string; consumer: string; ready: Promise<void> };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function isApiError(err: unknown, errCode: number): boolean {
  return (err as NatsError)?.api_error?.err_code === errCode;
}
/** JetStream API error codes (nats-server `server/errors.json`). */
const STREAM_NAME_IN_USE = 10058;

/**
 * The bus over NATS (multi-process and multi-node): JSON payloads, NATS subjects and queue groups
 * as they are. By default delivery is at-most-once, like the in-process bus across a crash: the
 * state parts depend on is level-triggered and republished periodically (assignments, route table,
 * heartbeats, status reports). Subjects listed in `durable` go through JetStream instead
 * (at-least-once, see NatsBusOptions.durable). The client reconnects forever and restores
 * subscriptions itself; core publishes made while disconnected are buffered (bounded) and sent on
 * reconnect; durable publishes are retried until stored.
 */
export class NatsBus implements Bus {
  private subs = new Set<Sub>();
  /** close() has begun (publish errors from the draining client are expected) / has finished. */
  private closing = false;
  private closed = false;
  private readonly onError: (err: unknown, subject: string) => void;
  private readonly onStatus: (status: { type: string; data?: unknown }) => void;
  private readonly offlineLimit: number;
  private readonly reconnectWaitMs: number;
  private offline = false;
  private offlineBytes = 0;
  private dropped = 0;
  private readonly durable: DurableSettings | null;
  private readonly js: JetStreamClient | null;
  /** Durable publishes not yet stored (drain() waits for them). */
  private pendingPublishes = new Set<Promise<void>>();
  /** Consumer names taken by this bus's live plain subscriptions (a second one on the same pattern gets `-2`, …). */
  private consumersInUse = new Set<string>();

  private constructor(readonly nc: NatsConnection, opts: NatsBusOptions, private readonly jsm: JetStreamManager | null) {
    this.onError = opts.onError ?? ((err, subject) => {
      process.stderr.write(`bus handler for ${subject} failed: ${String((err as Error)?.stack ?? err)}\n`);
    });
    this.onStatus = opts.onStatus ?? (() => {});
    this.offlineLimit = opts.offlineBufferBytes ?? 8 * 1024 * 1024;
    this.reconnectWaitMs = opts.reconnectWaitMs ?? 1000;
    this.durable = opts.durable ? durableSettings(opts.durable, opts.name) : null;
    this.js = jsm ? nc.jetstream() : null;
    this.watch().catch(() => {});
  }

  /** Follows the connection state: offline accounting, and the log via onStatus. */
  private async watch(): Promise<void> {
    for await (const s of this.nc.status()) {
      const type = String(s.type);
      if (type === 'disconnect') {
        this.offline = true;
        this.offlineBytes = 0;
      } else if (type === 'reconnect') {
        this.offline = false;
        if (this.dropped > 0) this.onStatus({ type: 'dropped', data: this.dropped });
        this.dropped = 0;
      }
      this.onStatus({ type, data: s.data });
    }
  }

  /**
   * Connects, retrying until the first connection succeeds (a node may start before its NATS).
   * With `durable`, also creates or updates the streams (fails when JetStream is not enabled).
   */
  static async connect(opts: NatsBusOptions): Promise<NatsBus> {
    if (opts.durable) validateDurableStreams(opts.durable.streams);
    const nc = await connect({
      servers: opts.servers,
      name: opts.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: opts.reconnectWaitMs ?? 1000,
      waitOnFirstConnect: true,
      // A server that vanished without closing the socket (host died) is noticed in ~30 s.
      pingInterval: 10_000,
      maxPingOut: 3,
      ...opts.connection,
    });
    if (!opts.durable) return new NatsBus(nc, opts, null);
    try {
      const jsm = await nc.jetstreamManager().catch((err: unknown) => {
        throw new Error(`NATS at ${String(opts.servers)} has no JetStream (start nats-server with -js and a store dir -sd): ${String((err as Error)?.message ?? err)}`);
      });
      if (opts.durable.createStreams !== false) for (const stream of opts.durable.streams) await ensureStream(jsm, stream);
      return new NatsBus(nc, opts, jsm);
    } catch (err) {
      await nc.close().catch(() => {});
      throw err;
    }
  }

  /** The stream a subject is stored in, if any. */
  private streamOf(subject: string): DurableStream | undefined {
    return this.durable?.streams.find((s) => s.subjects.some((f) => subjectMatches(f, subject)));
  }

  async publish(subject: string, data: unknown): Promise<void> {
    // Like the in-process bus: publishing on a closed bus is a no-op, not an error (shutdown races).
    if (this.closed) return;
    const payload = Buffer.from(JSON.stringify(data ?? null));
    // Acknowledged publish for consumer streams only: live streams record what core NATS carries
    // anyway, and their publishers (API requests emitting events) must not wait for storage.
    const stream = this.streamOf(subject);
    if (this.js && stream && (stream.delivery ?? 'consumer') === 'consumer') {
      const p = this.publishDurable(subject, payload);
      this.pendingPublishes.add(p);
      try {
        await p;
      } finally {
        this.pendingPublishes.delete(p);
      }
      return;
    }
    if (this.offline) {
      if (this.offlineBytes + payload.length > this.offlineLimit) {
        this.dropped++;
        return;
      }
      this.offlineBytes += payload.length;
    }
    try {
      this.nc.publish(subject, payload);
    } catch (err) {
      if (!this.closing) throw err;
    }
  }

  /**
   * Resolves once JetStream has stored the message. Retries (NATS restarting, leader moving) reuse
   * one message id, so the stream's duplicate window drops copies of a retry whose ack was lost.
   */
  private async publishDurable(subject: string, payload: Uint8Array): Promise<void> {
    const settings = this.durable!;
    const msgID = nuid.next();
    const deadline = Date.now() + settings.publishTimeoutMs;
    for (;;) {
      try {
        await this.js!.publish(subject, payload, { msgID, timeout: Math.max(1000, Math.min(5000, deadline - Date.now())) });
        return;
      } catch (err) {
        if (this.closing || this.nc.isClosed()) return; // shutdown race: like a publish on a closed bus
        if (Date.now() >= deadline) {
          throw new Error(`publish on ${subject} was not stored by JetStream within ${settings.publishTimeoutMs} ms: ${String((err as Error)?.message ?? err)}`);
        }
        await sleep(Math.min(this.reconnectWaitMs, Math.max(0, deadline - Date.now())));
      }
    }
  }

  subscribe<T>(pattern: string, handler: Handler<T>, opts: SubscribeOptions = {}): Subscription {
    if (this.closing) throw new Error('bus is closed');
    const stream = this.durable?.streams.find((s) => (s.delivery ?? 'consumer') === 'consumer' && s.subjects.some((f) => subjectWithin(pattern, f)));
    if (stream) return this.subscribeDurable(stream, pattern, handler as Handler<unknown>, opts);
    const sub: Sub = { nats: null, tail: Promise.resolve(), closed: false };
    sub.nats = this.nc.subscribe(pattern, {
      ...(opts.queue ? { queue: opts.queue } : {}),
      callback: (err, msg) => {
        if (err) {
          this.onError(err, pattern);
          return;
        }
        const subject = msg.subject;
        const text = Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength).toString('utf8');
        sub.tail = sub.tail.then(async () => {
          if (sub.closed) return;
          try {
            await (handler as Handler<unknown>)(JSON.parse(text), subject);
          } catch (e) {
            this.onError(e, subject);
          }
        });
      },
    });
    this.subs.add(sub);
    return {
      unsubscribe: () => {
        if (sub.closed) return;
        sub.closed = true;
        this.subs.delete(sub);
        if (!this.nc.isClosed()) sub.nats?.unsubscribe();
      },
    };
  }

  /**
   * A subscription through a durable pull consumer: one message at a time (a busy member of a
   * queue group holds nothing another member could take), acked after the handler resolved.
   * Unsubscribing keeps the consumer on the server, so what arrives meanwhile waits for the next
   * subscriber under the same name (the "briefly away" agent); the server deletes it after
   * `inactiveMs` without anyone pulling.
   */
  private subscribeDurable(stream: DurableStream, pattern: string, handler: Handler<unknown>, opts: SubscribeOptions): Subscription {
    const settings = this.durable!;
    let consumer: string;
    if (opts.queue) {
      consumer = consumerNameFor(`q-${opts.queue}`, pattern);
    } else {
      const base = consumerNameFor(settings.consumerName, pattern);
      consumer = base;
      for (let i = 2; this.consumersInUse.has(consumer); i++) consumer = `${base}-${i}`;
      this.consumersInUse.add(consumer);
    }
    // A new consumer starts at the subscription's time, like a core subscription: earlier
    // messages in the stream were meant for whoever listened then.
    const startTime = new Date().toISOString();
    let readyResolve!: () => void;
    const sub: Sub = {
      nats: null,
      tail: Promise.resolve(),
      closed: false,
      durable: { stream: stream.name, consumer, ready: new Promise<void>((r) => { readyResolve = r; }) },
    };
    this.subs.add(sub);
    const config: Partial<ConsumerConfig> = {
      durable_name: consumer,
      filter_subject: pattern,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(settings.ackWaitMs),
      max_deliver: settings.maxDeliver,
      deliver_policy: DeliverPolicy.StartTime,
      opt_start_time: startTime,
      inactive_threshold: nanos(settings.inactiveMs),
    };
    this.pullLoop(sub, stream.name, config, handler, readyResolve).catch((err) => this.onError(err, pattern));
    return {
      unsubscribe: () => {
        if (sub.closed) return;
        sub.closed = true;
        this.subs.delete(sub);
        if (!opts.queue) this.consumersInUse.delete(consumer);
      },
    };
  }

  private async pullLoop(sub: Sub, stream: string, config: Partial<ConsumerConfig>, handler: Handler<unknown>, ready: () => void): Promise<void> {
    try {
      await this.pull(sub, stream, config, handler, ready);
    } finally {
      ready(); // nobody waits for a consumer that will never come
    }
  }

  private async pull(sub: Sub, stream: string, config: Partial<ConsumerConfig>, handler: Handler<unknown>, ready: () => void): Promise<void> {
    const settings = this.durable!;
    const name = config.durable_name!;
    let consumer: Awaited<ReturnType<JetStreamClient['consumers']['get']>> | null = null;
    let failures = 0;
    while (!sub.closed && !this.closing) {
      try {
        if (!consumer) {
          await ensureConsumer(this.jsm!, stream, config, this.onStatus);
          consumer = await this.js!.consumers.get(stream, name);
          ready();
        }
        const msg = await consumer.next({ expires: settings.pullExpiresMs });
        failures = 0;
        if (!msg) continue;
        if (sub.closed || this.closing) {
          // Pulled just as we stopped: hand it back at once instead of after ackWait.
          try { msg.nak(); } catch { /* connection closing: the server redelivers after ackWait */ }
          return;
        }
        const handled = this.handleDurable(msg, handler);
        sub.tail = handled;
        await handled;
      } catch (err) {
        if (sub.closed || this.closing || this.nc.isClosed()) return;
        // NATS restarting, JetStream not ready, or the consumer deleted (inactive): look it up again.
        consumer = null;
        if (++failures === 3) this.onStatus({ type: 'consumer-retry', data: { stream, consumer: name, error: String((err as Error)?.message ?? err) } });
        await sleep(this.reconnectWaitMs);
      }
    }
  }

  private async handleDurable(msg: JsMsg, handler: Handler<unknown>): Promise<void> {
    const settings = this.durable!;
    const subject = msg.subject;
    let data: unknown;
    try {
      data = JSON.parse(Buffer.from(msg.data.buffer, msg.data.byteOffset, msg.data.byteLength).toString('utf8'));
    } catch (err) {
      this.onError(err, subject);
      // Will not get better by trying again. An ack, not term(): nats-server 2.9 keeps a termed
      // message counted as unacknowledged until ackWait runs out.
      await msg.ackAck().catch(() => false);
      return;
    }
    // Long handlers tell the server they are alive, so ackWait only catches a dead process.
    const progress = setInterval(() => { try { msg.working(); } catch { /* disconnected */ } }, Math.max(100, settings.ackWaitMs / 2));
    try {
      await handler(data, subject);
      clearInterval(progress);
      // Double ack: once this resolves the server will not redeliver; if it fails, it will (at-least-once).
      await msg.ackAck().catch(() => false);
    } catch (err) {
      clearInterval(progress);
      this.onError(err, subject);
      const deliveries = msg.info.deliveryCount;
      if (deliveries >= settings.maxDeliver) {
        // Given up (each failure went to onError): acked, for the reason given above.
        await msg.ackAck().catch(() => false);
        return;
      }
      try {
        msg.nak(settings.retryDelayMs * deliveries);
      } catch { /* disconnected: redelivered after ackWait */ }
    }
  }

  /**
   * Resolves when the server has seen everything published so far and every message this
   * connection received by then has been handled (tests, shutdown). Messages that other
   * connections publish are not covered: the server may still be routing them. For durable
   * subscriptions: when their consumers have nothing pending or unacknowledged (retries included).
   */
  async drain(): Promise<void> {
    if (!this.nc.isClosed()) await this.nc.flush();
    await Promise.allSettled([...this.pendingPublishes]);
    for (const s of [...this.subs]) {
      if (!s.durable || s.closed) continue;
      await s.durable.ready;
      for (;;) {
        if (s.closed || this.nc.isClosed()) break;
        const info = await this.jsm!.consumers.info(s.durable.stream, s.durable.consumer).catch(() => null);
        if (info && info.num_pending === 0 && info.num_ack_pending === 0) break;
        await sleep(20);
      }
    }
    await Promise.all([...this.subs].map((s) => s.tail));
  }

  /** Stops receiving, lets handlers finish what arrived, flushes pending publishes, disconnects. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    // Handlers that are running finish (and ack) before the connection goes.
    await Promise.all([...this.subs].filter((s) => s.durable).map((s) => s.tail));
    if (!this.nc.isClosed()) {
      // Draining needs the server; while it is unreachable, give up after a while and just close.
      let timer: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<'timeout'>((r) => { timer = setTimeout(() => r('timeout'), DRAIN_TIMEOUT_MS); });
      await Promise.race([this.nc.drain().catch(() => {}), gaveUp]);
      clearTimeout(timer);
      // A drain while disconnected resolves without closing (the client would keep reconnecting).
      if (!this.nc.isClosed()) await this.nc.close().catch(() => {});
    }
    await Promise.all([...this.subs].map((s) => s.tail));
    this.closed = true;
    for (const s of this.subs) s.closed = true;
    this.subs.clear();
  }
}

function durableSettings(opts: DurableOptions, connectionName: string): DurableSettings {
  return {
    streams: opts.streams,
    consumerName: opts.consumerName ?? connectionName,
    ackWaitMs: opts.ackWaitMs ?? 30_000,
    maxDeliver: opts.maxDeliver ?? 5,
    retryDelayMs: opts.retryDelayMs ?? 1000,
    inactiveMs: opts.inactiveMs ?? 24 * 3600_000,
    publishTimeoutMs: opts.publishTimeoutMs ?? 30_000,
    pullExpiresMs: opts.pullExpiresMs ?? 5000,
    createStreams: opts.createStreams ?? true,
  };
}

/** Creates the stream, or brings an existing one to this configuration (limits may change; storage may not). */
async function ensureStream(jsm: JetStreamManager, s: DurableStream): Promise<void> {
  const maxAgeMs = s.maxAgeMs ?? 24 * 3600_000;
  const config: Partial<StreamConfig> & { name: string } = {
    name: s.name,
    subjects: s.subjects,
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: nanos(maxAgeMs),
    max_bytes: s.maxBytes ?? 256 * 1024 * 1024,
    max_msgs_per_subject: s.maxMsgsPerSubject ?? -1,
    num_replicas: s.replicas ?? 1,
    duplicate_window: nanos(Math.min(120_000, maxAgeMs)),
  };
  try {
    await jsm.streams.add(config);
  } catch (err) {
    if (!isApiError(err, STREAM_NAME_IN_USE)) throw new Error(`cannot create JetStream stream ${s.name}: ${String((err as Error)?.message ?? err)}`);
    await jsm.streams.update(s.name, config).catch((e: unknown) => {
      throw new Error(`JetStream stream ${s.name} exists with a configuration that cannot be changed to this one: ${String((e as Error)?.message ?? e)}`);
    });
  }
}

/**
 * Creates the durable consumer unless it exists. An existing one keeps its position (that is the
 * point) and its limits: nats-server 2.9 rejects any update of a consumer with a start time
 * ("start time can not be updated"), so changed limits are reported (`consumer-config`) and take
 * effect for consumers created afterwards (or after deleting this one).
 */
async function ensureConsumer(jsm: JetStreamManager, stream: string, config: Partial<ConsumerConfig>, onStatus: (s: { type: string; data?: unknown }) => void): Promise<void> {
  const existing = await jsm.consumers.info(stream, config.durable_name!).catch(() => null);
  if (existing) {
    const c = existing.config;
    if (c.ack_wait !== config.ack_wait || c.max_deliver !== config.max_deliver || c.inactive_threshold !== config.inactive_threshold) {
      onStatus({
        type: 'consumer-config',
        data: {
          stream, consumer: config.durable_name,
          kept: { ack_wait: c.ack_wait, max_deliver: c.max_deliver, inactive_threshold: c.inactive_threshold },
          wanted: { ack_wait: config.ack_wait, max_deliver: config.max_deliver, inactive_threshold: config.inactive_threshold },
        },
      });
    }
    return;
  }
  // Two members of a queue group may race to create it: the loser finds the winner's.
  await jsm.consumers.add(stream, config).catch(async (err: unknown) => {
    await jsm.consumers.info(stream, config.durable_name!).catch(() => { throw err; });
  });
}

export function connectNatsBus(opts: NatsBusOptions): Promise<NatsBus> {
  return NatsBus.connect(opts);
}
