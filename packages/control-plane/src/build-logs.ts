import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LogLineT } from '@shellwego/core';

type Listener = { line(l: LogLineT): void; end(): void };

interface Active {
  lines: LogLineT[];
  listeners: Set<Listener>;
  write: Promise<void>;
}

/**
 * Build output: appended to one NDJSON file per build (replayable after the build and after a
 * restart) and kept in memory while the build runs, so a follower gets a consistent snapshot
 * plus every later line with no gap and no duplicate.
 */
export class BuildLogs {
  private active = new Map<string, Active>();

  constructor(private readonly dir: string) {}

  private file(buildId: string): string {
    return join(this.dir, `${buildId}.ndjson`);
  }

  private entry(buildId: string): Active {
    let a = this.active.get(buildId);
    if (!a) {
      a = { lines: [], listeners: new Set(), write: mkdir(this.dir, { recursive: true }).then(() => undefined) };
      this.active.set(buildId, a);
    }
    return a;
  }

  append(buildId: string, line: LogLineT): void {
    const a = this.entry(buildId);
    a.lines.push(line);
    a.write = a.write.then(() => appendFile(this.file(buildId), JSON.stringify(line) + '\n')).catch(() => {});
    for (const l of a.listeners) l.line(line);
  }

  /**
   * Follow a running build: returns the lines so far and registers `l` for the rest, atomically.
   * Returns null when the build is not running here (read the file instead).
   */
  follow(buildId: string, l: Listener): { lines: LogLineT[]; unsubscribe: () => void } | null {
    const a = this.active.get(buildId);
    if (!a) return null;
    a.listeners.add(l);
    return { lines: [...a.lines], unsubscribe: () => a.listeners.delete(l) };
  }

  /** Marks a build as running (before its first line), so followers attach to it. */
  begin(buildId: string): void {
    this.entry(buildId);
  }

  async read(buildId: string): Promise<LogLineT[]> {
    await this.active.get(buildId)?.write;
    try {
      const text = await readFile(this.file(buildId), 'utf8');
      return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as LogLineT);
    } catch {
      return [];
    }
  }

  async end(buildId: string): Promise<void> {
    const a = this.active.get(buildId);
    if (!a) return;
    await a.write;
    this.active.delete(buildId);
    for (const l of a.listeners) l.end();
  }
}
