/**
 * Follows an instance's output file (the sandbox appends stdout+stderr to it, O_APPEND) and
 * hands complete lines to a callback. fs.watch wakes it up quickly; a short poll covers
 * filesystems and editors where watch events go missing. Reads resume from a byte offset the
 * owner persists, so an agent that restarts neither loses nor resends lines.
 */
import { watch, promises as fsp } from 'node:fs';
import type { FSWatcher } from 'node:fs';

export interface LogTailOptions {
  file: string;
  /** Byte offset to start reading from (what was already handed out). */
  offset: number;
  onLines: (lines: string[]) => void;
  pollMs?: number;
  /** Longer lines are cut into pieces of this size. */
  maxLineBytes?: number;
  /**
   * Once everything was read and the file is bigger than this, it is truncated to 0 so a chatty
   * app cannot fill the disk (the writer has O_APPEND and carries on at the new end).
   */
  maxFileBytes?: number;
  /** Called after such a truncation. */
  onTruncate?: () => void;
}

const CHUNK = 256 * 1024;
const MAX_BATCH = 500;

export class LogTail {
  private pos: number;
  private partial: Buffer = Buffer.alloc(0);
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private reading: Promise<void> = Promise.resolve();
  private again = false;
  private busy = false;
  private stopped = true;

  constructor(private readonly opts: LogTailOptions) {
    this.pos = Math.max(0, opts.offset);
  }

  /** Bytes of the file whose lines have been handed out (a partial last line is not included). */
  get offset(): number {
    return this.pos - this.partial.length;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.timer = setInterval(() => {
      this.ensureWatch();
      this.kick();
    }, this.opts.pollMs ?? 500);
    this.timer.unref();
    this.ensureWatch();
    this.kick();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.watcher?.close();
    this.watcher = null;
  }

  /** Read whatever is in the file now; with `final`, also hand out an unterminated last line. */
  async drain(final = false): Promise<void> {
    await this.kickAndWait();
    if (final && this.partial.length > 0) {
      const line = stripCr(this.partial.toString('utf8'));
      this.partial = Buffer.alloc(0);
      this.emit([line]);
    }
  }

  private ensureWatch(): void {
    if (this.watcher || this.stopped) return;
    try {
      this.watcher = watch(this.opts.file, { persistent: false }, () => this.kick());
      this.watcher.on('error', () => {
        this.watcher?.close();
        this.watcher = null;
      });
    } catch {
      this.watcher = null; // file not there yet: the poll retries
    }
  }

  private kick(): void {
    void this.kickAndWait();
  }

  /** Serialised reads; a kick during a read schedules exactly one more. */
  private kickAndWait(): Promise<void> {
    if (this.busy) {
      this.again = true;
      return this.reading;
    }
    this.busy = true;
    this.reading = (async () => {
      try {
        do {
          this.again = false;
          await this.readOnce();
        } while (this.again);
      } catch {
        // transient (file replaced, EIO): the next poll retries
      } finally {
        this.busy = false;
      }
    })();
    return this.reading;
  }

  private async readOnce(): Promise<void> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.opts.file, 'r');
    } catch {
      return;
    }
    try {
      let { size } = await fh.stat();
      if (size < this.pos) {
        // Truncated behind our back: start over at the beginning.
        this.pos = 0;
        this.partial = Buffer.alloc(0);
      }
      const buf = Buffer.alloc(CHUNK);
      while (this.pos < size) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, size - this.pos), this.pos);
        if (bytesRead === 0) break;
        this.pos += bytesRead;
        this.consume(buf.subarray(0, bytesRead));
      }
      const max = this.opts.maxFileBytes;
      if (max && this.pos >= max && this.partial.length === 0) {
        size = (await fh.stat()).size;
        if (size === this.pos) {
          await fsp.truncate(this.opts.file, 0);
          this.pos = 0;
          this.opts.onTruncate?.();
        }
      }
    } finally {
      await fh.close();
    }
  }

  private consume(chunk: Buffer): void {
    const maxLine = this.opts.maxLineBytes ?? 16 * 1024;
    let data = this.partial.length ? Buffer.concat([this.partial, chunk]) : Buffer.from(chunk);
    const lines: string[] = [];
    for (;;) {
      const nl = data.indexOf(0x0a);
      if (nl < 0) break;
      lines.push(stripCr(data.subarray(0, nl).toString('utf8')));
      data = data.subarray(nl + 1);
    }
    while (data.length >= maxLine) {
      lines.push(data.subarray(0, maxLine).toString('utf8'));
      data = data.subarray(maxLine);
    }
    this.partial = Buffer.from(data);
    this.emit(lines);
  }

  private emit(lines: string[]): void {
    for (let i = 0; i < lines.length; i += MAX_BATCH) this.opts.onLines(lines.slice(i, i + MAX_BATCH));
  }
}

function stripCr(s: string): string {
  return s.endsWith('\r') ? s.slice(0, -1) : s;
}

/** Last `n` lines of `file` from byte `from` on (reads at most the last 64 KiB). */
export async function lastLines(file: string, from: number, n = 20): Promise<string[]> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, 'r');
  } catch {
    return [];
  }
  try {
    const { size } = await fh.stat();
    const start = Math.max(from > size ? 0 : from, size - 64 * 1024);
    const len = size - start;
    if (len <= 0) return [];
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, start);
    const lines = buf.toString('utf8').split('\n').map(stripCr);
    if (lines.length && lines[lines.length - 1] === '') lines.pop();
    // A window that starts mid-line would show half a line first: drop it.
    if (start > from && start > 0 && lines.length > n) lines.shift();
    return lines.slice(-n);
  } finally {
    await fh.close();
  }
}
