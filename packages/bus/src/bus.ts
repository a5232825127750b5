/**
 * The bus carries commands, status and events between parts that must not call each other
 * directly. Two implementations: in-process (all-in-one) and NATS (split and multi-node; core
 * NATS, plus JetStream for the subjects configured as durable).
 */
/**
 * Handles one message; the next one on the same subscription waits until it resolves. Handlers
 * must be idempotent: over NATS with durable subjects (NatsBusOptions.durable) a message is
 * delivered at least once — again after a throw, a crash or a lost ack, possibly after later ones.
 */
export type Handler<T> = (data: T, subject: string) => void | Promise<void>;

export interface Subscription {
  unsubscribe(): void;
}

export interface SubscribeOptions {
  /** Queue group: each message goes to one member of the group instead of to all. */
  queue?: string;
}

export interface Bus {
  publish(subject: string, data: unknown): Promise<void>;
  subscribe<T>(pattern: string, handler: Handler<T>, opts?: SubscribeOptions): Subscription;
  close(): Promise<void>;
}

/** NATS subject matching: `*` matches one token, `>` matches one or more trailing tokens. */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}
