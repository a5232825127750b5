import { connect } from 'nats';
import type { ConnectionOptions, NatsConnection, Subscription as NatsSubscription } from 'nats';
import type { Bus, Handler, SubscribeOptions, Subscription } from './bus.ts';

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
   * Connection state changes for the log: the client's (`disconnect`, `reconnect`, `error`, …)
   * and `dropped` (data: number of messages) when publishes were dropped during an outage.
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
}

const DRAIN_TIMEOUT_MS = 5_000;

interface Sub {
  nats: NatsSubscription;
  /** Per-subscription delivery chain: messages reach one handler in arrival order, one at a time. */
  tail: Promise<void>;
  closed: boolean;
}

/**
 * The bus over NATS core (multi-process and multi-node): JSON payloads, NATS subjects and queue
 * groups as they are. Delivery is at-most-once, like the in-process bus across a crash: the state
 * parts depend on is level-triggered and republished periodically (assignments, route table,
 * heartbeats, status reports); one-shot messages wait for JetStream. The client reconnects
 * forever and restores subscriptions itself; publishes made while disconnected are buffered
 * (bounded) and sent on reconnect.
 */
export class NatsBus implements Bus {
  private subs = new Set<Sub>();
  /** close() has begun (publish errors from the draining client are expected) / has finished. */
  private closing = false;
  private closed = false;
  private readonly onError: (err: unknown, subject: string) => void;
  private readonly onStatus: (status: { type: string; data?: unknown }) => void;
  private readonly offlineLimit: number;
  private offline = false;
  private offlineBytes = 0;
  private dropped = 0;

  private constructor(readonly nc: NatsConnection, opts: NatsBusOptions) {
    this.onError = opts.onError ?? ((err, subject) => {
      process.stderr.write(`bus handler for ${subject} failed: ${String((err as Error)?.stack ?? err)}\n`);
    });
    this.onStatus = opts.onStatus ?? (() => {});
    this.offlineLimit = opts.offlineBufferBytes ?? 8 * 1024 * 1024;
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

  /** Connects, retrying until the first connection succeeds (a node may start before its NATS). */
  static async connect(opts: NatsBusOptions): Promise<NatsBus> {
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
    return new NatsBus(nc, opts);
  }

  async publish(subject: string, data: unknown): Promise<void> {
    // Like the in-process bus: publishing on a closed bus is a no-op, not an error (shutdown races).
    if (this.closed) return;
    const payload = Buffer.from(JSON.stringify(data ?? null));
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

  subscribe<T>(pattern: string, handler: Handler<T>, opts: SubscribeOptions = {}): Subscription {
    if (this.closing) throw new Error('bus is closed');
    const sub = { tail: Promise.resolve(), closed: false } as Sub;
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
        if (!this.nc.isClosed()) sub.nats.unsubscribe();
      },
    };
  }

  /**
   * Resolves when the server has seen everything published so far and every message this
   * connection received by then has been handled (tests, shutdown). Messages that other
   * connections publish are not covered: the server may still be routing them.
   */
  async drain(): Promise<void> {
    if (!this.nc.isClosed()) await this.nc.flush();
    await Promise.all([...this.subs].map((s) => s.tail));
  }

  /** Stops receiving, lets handlers finish what arrived, flushes pending publishes, disconnects. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
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

export function connectNatsBus(opts: NatsBusOptions): Promise<NatsBus> {
  return NatsBus.connect(opts);
}
