/**
 * Minimal ustar writer for tests and fixtures: it writes exactly the entries it is given, which
 * is what hostile-layer tests need (`../x`, absolute paths, devices) and real tar tools refuse.
 */
export interface RawEntry {
  path: string;
  /** '0' file (default), '1' hard link, '2' symlink, '3' char dev, '4' block dev, '5' dir, '6' fifo */
  type?: string;
  mode?: number;
  linkpath?: string;
  data?: Buffer | string;
}

function field(buf: Buffer, off: number, len: number, s: string): void {
  buf.write(s.slice(0, len), off, len, 'utf8');
}

function octal(buf: Buffer, off: number, len: number, n: number): void {
  field(buf, off, len, n.toString(8).padStart(len - 1, '0') + '\0');
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return `${len}${body}`;
}

function header(path: string, type: string, size: number, mode: number, linkpath: string): Buffer {
  const h = Buffer.alloc(512);
  field(h, 0, 100, path);
  octal(h, 100, 8, mode);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, size);
  octal(h, 136, 12, 0);
  h.fill(0x20, 148, 156);
  field(h, 156, 1, type);
  field(h, 157, 100, linkpath);
  field(h, 257, 6, 'ustar\0');
  field(h, 263, 2, '00');
  let sum = 0;
  for (const b of h) sum += b;
  field(h, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  return h;
}

const padTo512 = (b: Buffer) => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);

/** A complete tar archive (uncompressed) of `entries`, in order. Long paths use PAX headers. */
export function makeTar(entries: RawEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? '0';
    const data = type === '0' ? Buffer.from(e.data ?? '') : Buffer.alloc(0);
    const link = e.linkpath ?? '';
    if (Buffer.byteLength(e.path) > 99 || Buffer.byteLength(link) > 99) {
      const pax = Buffer.from(paxRecord('path', e.path) + (link ? paxRecord('linkpath', link) : ''));
      parts.push(header('PaxHeader', 'x', pax.length, 0o644, ''), padTo512(pax));
    }
    parts.push(header(e.path, type, data.length, e.mode ?? (type === '5' ? 0o755 : 0o644), link));
    if (data.length) parts.push(padTo512(data));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}
