/**
 * A small sequential tar reader (ustar + PAX + GNU long names). We read layers ourselves rather
 * than through an extractor so every entry is checked and applied in order, with whiteouts and
 * symlinked parents handled under our own rules (unpack.ts).
 */

export interface TarHeader {
  path: string;
  linkpath: string;
  /** '0' file, '1' hard link, '2' symlink, '3' char dev, '4' block dev, '5' dir, '6' fifo, … */
  type: string;
  mode: number;
  size: number;
}

export class TarFormatError extends Error {}

/** Pulls exact byte counts out of an async stream of chunks. */
export class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private readonly it: AsyncIterator<Buffer>;
  private done = false;

  constructor(src: AsyncIterable<Buffer | Uint8Array | string>) {
    const inner = src[Symbol.asyncIterator]();
    this.it = {
      next: async () => {
        const r = await inner.next();
        return r.done ? r : { done: false, value: Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value as Uint8Array) };
      },
    } as AsyncIterator<Buffer>;
  }

  private async fill(n: number): Promise<boolean> {
    while (this.buf.length < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else this.buf = this.buf.length ? Buffer.concat([this.buf, r.value]) : r.value;
    }
    return this.buf.length >= n;
  }

  /** Exactly n bytes, or null at a clean end of stream; a short read is an error. */
  async read(n: number): Promise<Buffer | null> {
    if (!(await this.fill(n))) {
      if (this.buf.length === 0) return null;
      throw new TarFormatError('unexpected end of archive');
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Hand n bytes to `sink` chunk by chunk (file contents without buffering them whole). */
  async stream(n: number, sink: (chunk: Buffer) => Promise<void> | void): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0 && !(await this.fill(1))) throw new TarFormatError('unexpected end of archive');
      const take = Math.min(left, this.buf.length);
      const chunk = this.buf.subarray(0, take);
      this.buf = this.buf.subarray(take);
      left -= take;
      await sink(chunk);
    }
  }

  async skip(n: number): Promise<void> {
    await this.stream(n, () => {});
  }

  /** Drain whatever follows (trailing zero blocks), so the producer finishes. */
  async drain(): Promise<void> {
    this.buf = Buffer.alloc(0);
    while (!this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
    }
  }
}

function cstr(b: Buffer, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const z = s.indexOf(0);
  return (z >= 0 ? s.subarray(0, z) : s).toString('utf8');
}

function num(b: Buffer, off: number, len: number): number {
  const f = b.subarray(off, off + len);
  if (f[0] & 0x80) {
    // base-256 (GNU) for values that do not fit in octal
    let v = 0;
    for (let i = 1; i < f.length; i++) v = v * 256 + f[i];
    return v;
  }
  const s = cstr(b, off, len).trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarFormatError(`bad number field "${s}" in a tar header`);
  return parseInt(s, 8);
}

function checksumOk(h: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
  try {
    return sum === num(h, 148, 8);
  } catch {
    return false;
  }
}

function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < data.length) {
    const sp = data.indexOf(0x20, i);
    if (sp < 0) break;
    const len = parseInt(data.subarray(i, sp).toString('ascii'), 10);
    if (!(len > 0) || i + len > data.length) throw new TarFormatError('bad PAX record');
    const rec = data.subarray(sp + 1, i + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    i += len;
  }
  return out;
}

const pad = (n: number) => (512 - (n % 512)) % 512;
const MAX_META = 1024 * 1024;

/**
 * Iterate the entries of a tar stream. `onEntry` must consume exactly `header.size` bytes of the
 * body through `body` (stream or skip); the reader then skips the padding.
 */
export async function readTar(
  src: AsyncIterable<Buffer | Uint8Array | string>,
  onEntry: (h: TarHeader, body: { stream(sink: (c: Buffer) => Promise<void> | void): Promise<void>; skip(): Promise<void> }) => Promise<void>,
): Promise<void> {
  const r = new ByteReader(src);
  let pax: Record<string, string> = {};
  let globalPax: Record<string, string> = {};
  let longName: string | null = null;
  let longLink: string | null = null;
  for (;;) {
    const h = await r.read(512);
    if (!h) break; // end without the zero blocks: tolerated, as GNU tar does
    if (h.every((b) => b === 0)) break;
    if (!checksumOk(h)) throw new TarFormatError('bad tar header checksum (not a tar archive, or corrupt)');
    const type = String.fromCharCode(h[156] || 0x30);
    const size = num(h, 124, 12);
    const readMeta = async () => {
      if (size > MAX_META) throw new TarFormatError('tar metadata record too large');
      const d = size ? ((await r.read(size)) ?? Buffer.alloc(0)) : Buffer.alloc(0);
      await r.skip(pad(size));
      return d;
    };
    if (type === 'x') {
      pax = parsePax(await readMeta());
      continue;
    }
    if (type === 'g') {
      globalPax = { ...globalPax, ...parsePax(await readMeta()) };
      continue;
    }
    if (type === 'L') {
      longName = cstr(await readMeta(), 0, size);
      continue;
    }
    if (type === 'K') {
      longLink = cstr(await readMeta(), 0, size);
      continue;
    }
    const magic = cstr(h, 257, 6);
    const prefix = magic.startsWith('ustar') ? cstr(h, 345, 155) : '';
    const name = cstr(h, 0, 100);
    const meta = { ...globalPax, ...pax };
    const header: TarHeader = {
      path: meta.path ?? longName ?? (prefix ? `${prefix}/${name}` : name),
      linkpath: meta.linkpath ?? longLink ?? cstr(h, 157, 100),
      type,
      mode: num(h, 100, 8),
      size: meta.size !== undefined ? Number(meta.size) : size,
    };
    pax = {};
    longName = null;
    longLink = null;
    // Links, dirs and devices carry no data whatever the size field says (except in PAX size).
    const dataSize = type === '0' || type === '7' || type === '\0' ? header.size : type === '1' || type === '2' || type === '3' || type === '4' || type === '5' || type === '6' ? 0 : header.size;
    if (!Number.isSafeInteger(dataSize) || dataSize < 0) throw new TarFormatError('bad entry size');
    let consumed = false;
    await onEntry(header, {
      stream: async (sink) => {
        consumed = true;
        await r.stream(dataSize, sink);
      },
      skip: async () => {
        consumed = true;
        await r.skip(dataSize);
      },
    });
    if (!consumed) await r.skip(dataSize);
    await r.skip(pad(dataSize));
  }
  await r.drain();
}
