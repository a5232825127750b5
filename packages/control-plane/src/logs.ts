import { appendFile, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { LogLineT } from '@shellwego/core';

type Listener = (line: LogLineT) => void;

const RING = 2000;
/**
 * Rings held in memory at once, least recently written first out: at 10,000 apps a ring per app
 * would hold hundreds of megabytes. An evicted app's lines are read back from its file.
 */
const RINGS_IN_MEMORY = 256;
const ROTATE_BYTES = 10 * 1024 * 1024;

/**
 * App logs: a ring buffer per app for `logs` and live followers, backed by an append-only NDJSON
 * file per app so recent lines survive a platform restart. Writes are batched per tick.
 */
export class LogStore {
  private rings = new Map<string, LogLineT[]>();
  private loaded = new Set<string>();
  private listeners = new Map<string, Set<Listener>>();
  private pending = new Map<string, string[]>();
  private flushing: Promise<void> = Promise.resolve();
  private flushScheduled = false;

  constructor(private readonly dir: string) {}

  private file(appId: string): string {
    return join(this.dir, `${appId}.ndjson`);
  }

  append(appId: string, lines: LogLineT[]): void {
    if (lines.length === 0) return;
    const ring = this.rings.get(appId) ?? [];
    ring.push(...lines);
    if (ring.length > RING) ring.splice(0, ring.length - RING);
    this.rings.delete(appId);
    this.rings.set(appId, ring);
    if (this.rings.size > RINGS_IN_MEMORY) this.evict();
    const buf = this.pending.get(appId) ?? [];
    for (const l of lines) buf.push(JSON.stringify(l));
    this.pending.set(appId, buf);
    this.scheduleFlush();
    for (const fn of this.listeners.get(appId) ?? []) for (const l of lines) fn(l);
  }

  private evict(): void {
    for (const id of this.rings.keys()) {
      if (this.rings.size <= RINGS_IN_MEMORY) return;
      if (this.listeners.get(id)?.size) continue; // followed: kept
      this.rings.delete(id);
      this.loaded.delete(id);
    }
  }

  platform(appId: string, line: string, extra: Partial<LogLineT> = {}): void {
    this.append(appId, [{ ts: new Date().toISOString(), source: 'platform', instanceId: null, type: null, line, ...extra }]);
  }

  async recent(appId: string, n: number): Promise<LogLineT[]> {
    await this.load(appId);
    const ring = this.rings.get(appId) ?? [];
    return n <= 0 ? [] : ring.slice(-n);
  }

  follow(appId: string, fn: Listener): () => void {
    let set = this.listeners.get(appId);
    if (!set) this.listeners.set(appId, (set = new Set()));
    set.add(fn);
    return () => {
      set.delete(fn);
    };
  }

  async forget(appId: string): Promise<void> {
    await this.flush();
    this.rings.delete(appId);
    this.pending.delete(appId);
    await rm(this.file(appId), { force: true });
    await rm(this.file(appId) + '.1', { force: true });
  }

  /** Reads the tail of the app's file once, so `logs` after a restart shows history. */
  private async load(appId: string): Promise<void> {
    if (this.loaded.has(appId)) return;
    this.loaded.add(appId);
    await this.flush();
    // Every line in memory now is in the file too: only lines appended from here on are added to it.
    const flushed = this.rings.get(appId)?.length ?? 0;
    let fh;
    try {
      fh = await open(this.file(appId), 'r');
    } catch {
      return;
    }
    try {
      const { size } = await fh.stat();
      const len = Math.min(size, 512 * 1024);
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, size - len);
      const lines = buf.toString('utf8').split('\n');
      if (len < size) lines.shift(); // first line is probably partial
      const parsed: LogLineT[] = [];
      for (const l of lines) {
        if (!l) continue;
        try { parsed.push(JSON.parse(l) as LogLineT); } catch {}
      }
      const inMemory = (this.rings.get(appId) ?? []).slice(flushed);
      const merged = [...parsed.slice(-RING), ...inMemory].slice(-RING);
      this.rings.set(appId, merged);
    } finally {
      await fh.close();
    }
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flushing = this.flushing.then(() => this.writePending()).catch(() => {});
    });
  }

  private async writePending(): Promise<void> {
    const batches = [...this.pending.entries()];
    this.pending.clear();
    if (batches.length === 0) return;
    await mkdir(this.dir, { recursive: true });
    for (const [appId, lines] of batches) {
      const f = this.file(appId);
      await appendFile(f, lines.join('\n') + '\n');
      const s = await stat(f).catch(() => null);
      if (s && s.size > ROTATE_BYTES) await rename(f, f + '.1');
    }
  }

  async flush(): Promise<void> {
    await this.flushing;
    await this.writePending();
  }
}
