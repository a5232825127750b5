/**
 * Follows a log file written by sandboxed processes (O_APPEND) and hands out complete lines.
 * Short polling (plus fs.watch as a nudge) keeps it independent of inotify limits; drain() reads
 * up to EOF so a step's output is fully published before the next step line.
 */
import { promises as fsp, watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';

export interface TailOptions {
  pollMs?: number;
  /** Lines longer than this are cut (default 8 KiB). */
  maxLineBytes?: number;
  /** Stop forwarding after this many bytes (default 20 MiB) and say so once. */
  maxTotalBytes?: number;
}

export class LogTail {
  private offset = 0;
  private partial = '';
  private timer: NodeJS.Timeout | null = null;
  private watcher: FSWatcher | null = null;
  private reading: Promise<void> = Promise.resolve();
  private total = 0;
  private truncated = false;
  private readonly pollMs: number;
  private readonly maxLine: number;
  private readonly maxTotal: number;

  constructor(
    private readonly file: string,
    private readonly onLine: (line: string) => void,
    opts: TailOptions = {},
  ) {
    this.pollMs = opts.pollMs ?? 100;
    this.maxLine = opts.maxLineBytes ?? 8192;
    this.maxTotal = opts.maxTotalBytes ?? 20 * 1024 * 1024;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.poll(), this.pollMs);
    this.timer.unref();
    this.tryWatch();
  }

  private tryWatch(): void {
    if (this.watcher) return;
    try {
      this.watcher = watch(this.file, () => void this.poll());
      this.watcher.on('error', () => {
        this.watcher?.close();
        this.watcher = null;
      });
    } catch {
      this.watcher = null; // file not there yet; polling covers it
    }
  }

  /** Read everything up to EOF now. */
  poll(): Promise<void> {
    this.reading = this.reading.then(() => this.readMore()).catch(() => {});
    return this.reading;
  }

  private async readMore(): Promise<void> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.file, 'r');
    } catch {
      return;
    }
    if (!this.watcher && this.timer) this.tryWatch();
    try {
      const buf = Buffer.allocUnsafe(64 * 1024);
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, this.offset);
        if (bytesRead === 0) break;
        this.offset += bytesRead;
        this.push(buf.subarray(0, bytesRead).toString('utf8'));
      }
    } finally {
      await fh.close();
    }
  }

  private push(text: string): void {
    const parts = (this.partial + text).split('\n');
    this.partial = parts.pop() ?? '';
    if (this.partial.length > this.maxLine) {
      parts.push(this.partial);
      this.partial = '';
    }
    for (const p of parts) this.emit(p);
  }

  private emit(raw: string): void {
    // Progress output uses \r to redraw a line: keep what was drawn last.
    let line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.includes('\r')) line = line.slice(line.lastIndexOf('\r') + 1);
    if (line.length > this.maxLine) line = line.slice(0, this.maxLine) + ' […]';
    if (this.truncated) return;
    this.total += line.length + 1;
    if (this.total > this.maxTotal) {
      this.truncated = true;
      this.onLine(`[build output truncated after ${Math.round(this.maxTotal / 1024 / 1024)} MB]`);
      return;
    }
    this.onLine(line);
  }

  /** Read to EOF and flush a trailing partial line. */
  async drain(): Promise<void> {
    await this.poll();
    if (this.partial) {
      const p = this.partial;
      this.partial = '';
      this.emit(p);
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.watcher?.close();
    this.watcher = null;
    await this.drain();
  }
}
