import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { makeTarGz } from '../../../test/helpers/tarball.ts';
import { receiveUpload, validateSourceTarball } from './uploads.ts';

const limits = { maxBytes: 1e6, maxUnpackedBytes: 1e6, maxEntries: 100 };

async function check(entries: Parameters<typeof makeTarGz>[0], l = limits) {
  const dir = await mkdtemp(join(tmpdir(), 'swg-up-'));
  const f = join(dir, 'x.tgz');
  await writeFile(f, makeTarGz(entries));
  return validateSourceTarball(f, l);
}

test('accepts ordinary trees, including links that stay inside', async () => {
  const r = await check([
    { name: 'app/', type: '5' }, { name: 'app/index.js', content: 'x' }, { name: 'app/lib/a.js', content: 'y' },
    { name: 'app/lib/link.js', type: '2', linkname: '../index.js' }, { name: 'hard', type: '1', linkname: 'app/index.js' },
  ]);
  assert.equal(r.entries, 5);
});

for (const [what, entries, re] of [
  ['../ paths', [{ name: '../x', content: 'x' }], /escapes/],
  ['nested ../', [{ name: 'a/../../x', content: 'x' }], /escapes/],
  ['absolute paths', [{ name: '/etc/passwd', content: 'x' }], /absolute/],
  ['symlinks out', [{ name: 'a/l', type: '2', linkname: '../../x' }], /outside/],
  ['absolute symlinks', [{ name: 'l', type: '2', linkname: '/etc' }], /outside/],
  ['hard links out', [{ name: 'h', type: '1', linkname: '../x' }], /outside/],
  ['devices', [{ name: 'd', type: '3' }], /device/],
] as const) {
  test(`rejects ${what}`, async () => {
    await assert.rejects(check(entries as never), (e: { code: string; message: string }) => e.code === 'unsafe_archive' && re.test(e.message));
  });
}

test('rejects decompression bombs by unpacked size and entry count', async () => {
  await assert.rejects(check([{ name: 'big', content: Buffer.alloc(2e6) }]), (e: { code: string }) => e.code === 'payload_too_large');
  await assert.rejects(check(Array.from({ length: 5 }, (_, i) => ({ name: `f${i}`, content: 'x' })), { ...limits, maxEntries: 3 }), (e: { code: string }) => e.code === 'payload_too_large');
});

test('an upload past the limit is cut off and leaves no file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-up-'));
  const body = Readable.from((function* () { for (let i = 0; i < 100; i++) yield Buffer.alloc(1024); })());
  await assert.rejects(receiveUpload(body, dir, 10 * 1024), (e: { code: string }) => e.code === 'payload_too_large');
  assert.deepEqual(await readdir(dir), []);
  await assert.rejects(receiveUpload(Readable.from([]), dir, 10, 11), (e: { code: string }) => e.code === 'payload_too_large');
});
