import type { Bus, Handler, SubscribeOptions, Subscription } from './bus.ts';
import { subjectMatches } from './bus.ts';

interface Sub {
  pattern: string;
  handler: Handler<unknown>;
  queue?: string;
  /** Per-subscription delivery chain: messages reach one handler in publish order. */
  tail: Promise<void>;
  closed: boolean;
}

/**
 * In-process bus for all-in-one mode. Messages are serialised to JSON and delivered
 * asynchronously, as over the network, so code that works here does not rely on shared
 * objects or synchronous delivery and works unchanged over NATS.
 */
export class InProcessBus implements Bus {
  private subs: Sub[] = [];
  private queueCursor = new Map<string, number>();
  private closed = false;

  constructor(private readonly onError: (err: unknown, subject: string) => void = (err, subject) => {
    process.stderr.write(`bus handler for ${subject} failed: ${String((err as Error)?.stack ?? err)}\n`);
  }) {}

  async publish(subject: string, data: unknown): Promise<void> {
    if (this.closed) return;
    const payload = JSON.stringify(data ?? null);
    const matching = this.subs.filter((s) => !s.closed && subjectMatches(s.pattern, subject));
    const plain = matching.filter((s) => !s.queue);
    const groups = new Map<string, Sub[]>();
    for (const s of matching) if (s.queue) groups.set(s.queue, [...(groups.get(s.queue) ?? []), s]);
    const targets = [...plain];
    for (const [queue, members] of groups) {
      const i = (this.queueCursor.get(queue) ?? 0) % members.length;
      this.queueCursor.set(queue, i + 1);
      targets.push(members[i]);
    }
    for (const sub of targets) {
      sub.tail = sub.tail.then(async () => {
        if (sub.closed) return;
        try {
          await sub.handler(JSON.parse(payload), subject);
        } catch (err) {
          this.onError(err, subject);
        }
      });
    }
  }

  subscribe<T>(pattern: string, handler: Handler<T>, opts: SubscribeOptions = {}): Subscription {
    const sub: Sub = { pattern, handler: handler as Handler<unknown>, queue: opts.queue, tail: Promise.resolve(), closed: false };
    this.subs.push(sub);
    return {
      unsubscribe: () => {
        sub.closed = true;
        this.subs = this.subs.filter((s) => s !== sub);
      },
    };
  }

  /** Resolves when every message published so far has been handled (tests, shutdown). */
  async drain(): Promise<void> {
    await Promise.all(this.subs.map((s) => s.tail));
  }

  async close(): Promise<void> {
    await this.drain();
    this.closed = true;
    for (const s of this.subs) s.closed = true;
    this.subs = [];
  }
}
