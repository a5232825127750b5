import { gzipSync } from 'node:zlib';

export interface TarEntry {
  name: string;
  /** '0' file, '1' hard link, '2' symlink, '3' char device, '5' directory */
  type?: '0' | '1' | '2' | '3' | '5';
  content?: string | Buffer;
  linkname?: string;
  mode?: number;
}

function field(buf: Buffer, offset: number, len: number, value: string): void {
  buf.write(value.slice(0, len), offset, len, 'utf8');
}

function octal(n: number, len: number): string {
  return n.toString(8).padStart(len - 1, '0') + '\0';
}

/**
 * Writes a ustar archive byte by byte, so tests can make the hostile archives (../ paths,
 * absolute paths, escaping links, devices) that well-behaved tar tools refuse to create.
 */
export function makeTarGz(entries: TarEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const content = e.content === undefined ? Buffer.alloc(0) : Buffer.from(e.content);
    const type = e.type ?? '0';
    const size = type === '0' ? content.length : 0;
    const h = Buffer.alloc(512);
    field(h, 0, 100, e.name);
    field(h, 100, 8, octal(e.mode ?? (type === '5' ? 0o755 : 0o644), 8));
    field(h, 108, 8, octal(0, 8));
    field(h, 116, 8, octal(0, 8));
    field(h, 124, 12, octal(size, 12));
    field(h, 136, 12, octal(Math.floor(Date.now() / 1000), 12));
    h.fill(0x20, 148, 156);
    field(h, 156, 1, type);
    field(h, 157, 100, e.linkname ?? '');
    field(h, 257, 6, 'ustar\0');
    field(h, 263, 2, '00');
    let sum = 0;
    for (const b of h) sum += b;
    field(h, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
    blocks.push(h);
    if (size) {
      blocks.push(content);
      const pad = (512 - (size % 512)) % 512;
      if (pad) blocks.push(Buffer.alloc(pad));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}
