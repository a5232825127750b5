/**
 * Which subjects NatsBus carries through JetStream, and how. Kept apart from the connection code
 * so the server can build the list from its config and tests can check the rules on their own.
 */
import { createHash } from 'node:crypto';
import { subjects } from '@shellwego/core';

export interface DurableStream {
  /** JetStream stream name (letters, digits, `_`, `-`). */
  name: string;
  /** Subjects the stream stores (wildcards allowed); streams must not overlap. */
  subjects: string[];
  /**
   * `consumer` (default): a subscription whose pattern lies within these subjects reads through a
   * durable consumer: at-least-once, acknowledged after the handler resolves, kept while the
   * subscriber is away. `live`: the stream only records (history, audit, later replay);
   * subscribers get plain NATS fan-out to whoever listens now (per-connection SSE subscribers).
   */
  delivery?: 'consumer' | 'live';
  /** Messages older than this are removed. Default 24 h. */
  maxAgeMs?: number;
  /** Oldest messages are removed beyond this size. Default 256 MiB. */
  maxBytes?: number;
  /** Keep only the newest N per subject (1 = "latest state", e.g. a node's assignments). Default unlimited. */
  maxMsgsPerSubject?: number;
  /** Copies in a JetStream cluster. Default 1. */
  replicas?: number;
}

export interface DurableOptions {
  streams: DurableStream[];
  /**
   * This process's identity for durable consumers: a plain (non-queue) subscription resumes
   * under `<consumerName>__<hash of pattern>` after a restart or a disconnection, so it must be
   * stable and unique per process role instance (e.g. `node-<id>`). Default: the connection name.
   */
  consumerName?: string;
  /** Without an ack (or a progress signal, sent while the handler runs) the message is redelivered after this. Default 30 s. */
  ackWaitMs?: number;
  /** Deliveries of one message before it is given up (acked; every failure went to onError). Default 5. */
  maxDeliver?: number;
  /** After a handler failure, the message comes again after retryDelayMs × delivery count. Default 1 s. */
  retryDelayMs?: number;
  /** The server deletes a durable consumer nobody pulled from for this long (a node removed for good). Default 24 h. */
  inactiveMs?: number;
  /** publish() keeps retrying until JetStream has stored the message, for at most this long, then rejects. Default 30 s. */
  publishTimeoutMs?: number;
  /** Long-poll length of one pull request. Default 5 s. */
  pullExpiresMs?: number;
  /**
   * Create/update the streams on connect (default true). Nodes whose NATS credentials may not
   * manage streams set false: the control plane creates them, and their subscriptions retry until
   * the streams exist.
   */
  createStreams?: boolean;
}

/**
 * ShellWeGo's one-shot messages (commands, results, events, logs); everything else (route table,
 * heartbeats, certificates, one-off sessions) stays on core NATS because it is republished or
 * only meaningful live. Assignments keep only the latest message per node: they are level-triggered,
 * so an agent that was away needs the newest set, not the history.
 */
export function defaultDurableStreams(): DurableStream[] {
  const hour = 3600_000;
  return [
    { name: 'SHELLWEGO_BUILDS', subjects: [subjects.buildRequested, subjects.allBuildResults], maxAgeMs: 24 * hour, maxBytes: 64 * 1024 * 1024 },
    { name: 'SHELLWEGO_ASSIGNMENTS', subjects: [subjects.assignments('*')], maxMsgsPerSubject: 1, maxAgeMs: 24 * hour, maxBytes: 256 * 1024 * 1024 },
    { name: 'SHELLWEGO_STATUS', subjects: [subjects.allInstanceStatus], maxAgeMs: hour, maxBytes: 128 * 1024 * 1024 },
    { name: 'SHELLWEGO_EVENTS', subjects: [subjects.events('*')], delivery: 'live', maxAgeMs: 24 * hour, maxBytes: 128 * 1024 * 1024 },
    { name: 'SHELLWEGO_LOGS', subjects: [subjects.allAppLogs], maxAgeMs: hour, maxBytes: 512 * 1024 * 1024 },
    // Volume deletions are the only thing that removes volume data: kept a week for a node that is away.
    { name: 'SHELLWEGO_VOLUMES', subjects: [subjects.volumeDelete('*')], maxAgeMs: 7 * 24 * hour, maxBytes: 16 * 1024 * 1024 },
  ];
}

/** True when every subject `pattern` matches is also matched by `filter` (NATS wildcard rules). */
export function subjectWithin(pattern: string, filter: string): boolean {
  const p = pattern.split('.');
  const f = filter.split('.');
  for (let i = 0; i < p.length; i++) {
    if (f[i] === '>') return true; // p has at least this token left
    if (i >= f.length) return false;
    if (p[i] === '>') return false; // any number of tokens, but f is not '>' here
    if (f[i] === '*') continue;
    if (p[i] === '*' || p[i] !== f[i]) return false;
  }
  return p.length === f.length;
}

/** A JetStream consumer name: readable prefix, hash of the pattern (patterns contain `.`, `*`, `>`). */
export function consumerNameFor(prefix: string, pattern: string): string {
  const clean = prefix.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 64);
  return `${clean}__${createHash('sha256').update(pattern).digest('hex').slice(0, 12)}`;
}

/** Rejects configurations the server would reject later with a less helpful message. */
export function validateDurableStreams(streams: DurableStream[]): void {
  const seen = new Set<string>();
  for (const s of streams) {
    if (!/^[A-Za-z0-9_-]+$/.test(s.name)) throw new Error(`durable stream name ${JSON.stringify(s.name)}: use letters, digits, _ and -`);
    if (seen.has(s.name)) throw new Error(`durable stream ${s.name} is listed twice`);
    seen.add(s.name);
    if (s.subjects.length === 0) throw new Error(`durable stream ${s.name} has no subjects`);
  }
  const all = streams.flatMap((s) => s.subjects.map((subject) => ({ stream: s.name, subject })));
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const a = all[i];
      const b = all[j];
      if (subjectsOverlap(a.subject, b.subject)) {
        throw new Error(`durable subjects overlap: ${a.subject} (${a.stream}) and ${b.subject} (${b.stream})`);
      }
    }
  }
}

/** True when some subject matches both patterns. */
export function subjectsOverlap(a: string, b: string): boolean {
  const x = a.split('.');
  const y = b.split('.');
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if (x[i] === '>' || y[i] === '>') return i < x.length && i < y.length;
    if (i >= x.length || i >= y.length) return false;
    if (x[i] !== '*' && y[i] !== '*' && x[i] !== y[i]) return false;
  }
  return true;
}
