/** Human output: aligned tables, ages, sizes, instance states and log lines. */
import type { InstanceT, LogLineT } from '@shellwego/core';

/** Columns separated by two spaces, padded to the widest cell; no trailing spaces. */
export function table(header: string[] | null, rows: string[][]): string[] {
  const all = header ? [header, ...rows] : rows;
  const widths: number[] = [];
  for (const row of all) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, width(cell))));
  return all.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell + ' '.repeat(widths[i] - width(cell)))).join('  ').trimEnd());
}

/** Display width: counts code points, which is right for the text this CLI prints. */
function width(s: string): number {
  return [...s].length;
}

/** `42s`, `5m`, `3h`, `2d`; a date past 30 days. */
export function age(iso: string | null | undefined, now: number): string {
  if (!iso) return '-';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '-';
  const s = Math.max(0, Math.floor((now - t) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  if (s < 30 * 86400) return `${Math.floor(s / 86400)}d`;
  return iso.slice(0, 10);
}

/** `5m ago`, for columns that say when something happened. */
export function ago(iso: string | null | undefined, now: number): string {
  const a = age(iso, now);
  return a === '-' || /^\d{4}-/.test(a) ? a : `${a} ago`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

/** `crashed (exit 3)`, `crashed (SIGKILL, out of memory)`, `running`. */
export function instanceState(i: Pick<InstanceT, 'state' | 'exitCode' | 'signal' | 'oomKilled'>): string {
  if (i.state !== 'crashed') return i.state;
  const why: string[] = [];
  if (i.signal) why.push(i.signal);
  else if (i.exitCode !== null && i.exitCode !== undefined) why.push(`exit ${i.exitCode}`);
  if (i.oomKilled) why.push('out of memory');
  return why.length ? `crashed (${why.join(', ')})` : 'crashed';
}

/** The short form of an id: its random tail, which tells instances apart (the head is a timestamp). */
export function shortId(id: string): string {
  return id.length > 8 ? id.slice(-8) : id;
}

/** How many of an instance's last log lines `ps` shows under a crashed row. */
export const PS_LAST_LOG_LINES = 10;

/** `ps` output: one row per instance; crashed ones (or those `lastLogOf` picks) get their last log lines indented below. */
export function psLines(instances: InstanceT[], now: number, opts: { lastLogOf?: (i: InstanceT) => boolean; explain?: boolean } = {}): string[] {
  const withLog = opts.lastLogOf ?? ((i: InstanceT) => i.state === 'crashed');
  if (instances.length === 0) return [];
  const sorted = [...instances].sort((a, b) => a.type.localeCompare(b.type) || a.index - b.index || a.releaseVersion - b.releaseVersion);
  const header = ['ID', 'PROCESS', 'STATE', 'RELEASE', 'RESTARTS', 'ADDRESS', 'AGE'];
  const rows = sorted.map((i) => [
    shortId(i.id),
    `${i.type}.${i.index}`,
    instanceState(i),
    `v${i.releaseVersion}`,
    String(i.restarts),
    i.address ?? '-',
    age(i.startedAt ?? i.updatedAt, now),
  ]);
  const [head, ...body] = table(header, rows);
  const out = [head];
  sorted.forEach((inst, n) => {
    out.push(body[n]);
    // --explain: the scheduler's last word on the instance (where and why, or why it is pending).
    if (opts.explain) out.push(`    placement: ${inst.placement ?? (inst.nodeId ? `on ${inst.nodeId} (placed before decisions were recorded)` : 'not scheduled yet')}`);
    if (withLog(inst)) for (const l of inst.lastLog.slice(-PS_LAST_LOG_LINES)) out.push(`    ${l}`);
  });
  return out;
}

/** `2026-11-23T13:42:01.123Z app[web.1]: listening on 5000`, like Heroku's log drain format. */
export function logLine(l: LogLineT): string {
  return `${l.ts} ${l.source}${l.type ? `[${l.type}]` : ''}: ${l.line}`;
}
