import { createWriteStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { posix, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import * as tar from 'tar';
import { ApiError, badRequest, payloadTooLarge } from '@shellwego/core';

export interface UploadLimits {
  maxBytes: number;
  /** Bound on the unpacked size and entry count, against decompression bombs. */
  maxUnpackedBytes: number;
  maxEntries: number;
}

/**
 * Streams an upload to a temp file, enforcing the size limit while bytes arrive (so an oversized
 * upload is cut off, not buffered). The caller owns the returned file.
 */
export async function receiveUpload(body: Readable, tmpDir: string, maxBytes: number, declaredLength?: number): Promise<string> {
  if (declaredLength !== undefined && declaredLength > maxBytes) {
    body.resume();
    throw payloadTooLarge(`upload is ${declaredLength} bytes; the limit is ${maxBytes}`);
  }
  await mkdir(tmpDir, { recursive: true });
  const file = join(tmpDir, `upload-${randomBytes(8).toString('hex')}.tar.gz`);
  let seen = 0;
  const limiter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > maxBytes) cb(payloadTooLarge(`upload exceeds the limit of ${maxBytes} bytes`));
      else cb(null, chunk);
    },
  });
  try {
    await pipeline(body, limiter, createWriteStream(file, { mode: 0o600 }));
  } catch (err) {
    await rm(file, { force: true });
    body.resume();
    if (err instanceof ApiError) throw err;
    throw badRequest('upload_interrupted', `the upload did not complete: ${(err as Error).message}`);
  }
  return file;
}

/**
 * Rejects source tarballs that could write outside the build directory when unpacked:
 * absolute paths, `..` segments, links pointing outside, device files — and bombs.
 */
export async function validateSourceTarball(file: string, limits: UploadLimits): Promise<{ entries: number; unpackedBytes: number }> {
  const fh = await open(file, 'r');
  const magic = Buffer.alloc(2);
  await fh.read(magic, 0, 2, 0);
  await fh.close();
  if (magic[0] !== 0x1f || magic[1] !== 0x8b) throw badRequest('invalid_archive', 'the upload is not a gzip-compressed tarball (tar.gz)');

  const problems: string[] = [];
  let entries = 0;
  let unpackedBytes = 0;
  try {
    await tar.t({
      file,
      strict: true,
      // node-tar strips absolute paths and `..` by default when extracting; listing keeps the raw path so we can refuse them.
      preservePaths: true,
      onReadEntry: (entry) => {
        entries++;
        unpackedBytes += entry.size ?? 0;
        const p = entry.path;
        const norm = posix.normalize(p);
        if (p.startsWith('/') || /^[a-zA-Z]:[\\/]/.test(p)) problems.push(`absolute path: ${p}`);
        else if (norm === '..' || norm.startsWith('../') || p.split(/[\\/]/).includes('..')) problems.push(`path escapes the archive: ${p}`);
        if (entry.type === 'SymbolicLink' || entry.type === 'Link') {
          const target = entry.linkpath ?? '';
          const resolved = entry.type === 'Link' ? posix.normalize(target) : posix.normalize(posix.join(posix.dirname(norm), target));
          if (target.startsWith('/') || resolved === '..' || resolved.startsWith('../')) problems.push(`link points outside the archive: ${p} -> ${target}`);
        }
        if (['CharacterDevice', 'BlockDevice', 'FIFO'].includes(entry.type)) problems.push(`device or fifo not allowed: ${p}`);
        entry.resume();
      },
    });
  } catch (err) {
    throw badRequest('invalid_archive', `the tarball could not be read: ${(err as Error).message}`);
  }
  if (problems.length) throw badRequest('unsafe_archive', `the tarball has unsafe entries: ${problems.slice(0, 3).join('; ')}${problems.length > 3 ? ` (and ${problems.length - 3} more)` : ''}`, { problems: problems.slice(0, 50) });
  if (entries > limits.maxEntries) throw payloadTooLarge(`the tarball has ${entries} entries; the limit is ${limits.maxEntries}`);
  if (unpackedBytes > limits.maxUnpackedBytes) throw payloadTooLarge(`the tarball unpacks to ${unpackedBytes} bytes; the limit is ${limits.maxUnpackedBytes}`);
  if (entries === 0) throw badRequest('empty_archive', 'the tarball is empty');
  return { entries, unpackedBytes };
}
