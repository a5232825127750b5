/**
 * Registry v2 client (distribution spec) over node's fetch: anonymous, Basic, and Bearer token
 * auth following the registry's `WWW-Authenticate` challenge; manifest lists and OCI indexes
 * resolved to one platform; Docker schema2 and OCI manifests. Every manifest and blob is checked
 * against its sha256 digest over the bytes as received.
 */
import { basicHeader, parseChallenges, tokenUrl } from './auth.ts';
import type { Credentials } from './auth.ts';
import { BlobCache, DigestMismatchError, digestOf, verifyDigest } from './cache.ts';
import { formatReference, isDigest, isLoopbackHost, parseReference } from './reference.ts';
import type { ImageReference } from './reference.ts';

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

const ACCEPT = [MEDIA.ociIndex, MEDIA.dockerList, MEDIA.ociManifest, MEDIA.dockerManifest].join(', ');
const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
]);
const MAX_MANIFEST = 4 * 1024 * 1024;
const MAX_CONFIG = 4 * 1024 * 1024;

export type RegistryErrorCode = 'not_found' | 'unauthorized' | 'digest_mismatch' | 'unsupported' | 'registry_error' | 'unreachable';

export class RegistryError extends Error {
  constructor(
    readonly code: RegistryErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
}

export interface Platform {
  os: string;
  architecture: string;
}

/** The parts of an image config that decide how its process runs. */
export interface ImageConfig {
  entrypoint: string[];
  cmd: string[];
  env: string[];
  workingDir: string;
  user: string;
  exposedPorts: string[];
}

export interface PulledImage {
  reference: string;
  /** Digest of the platform manifest that was pulled. */
  manifestDigest: string;
  /** Digest of the index / manifest list the tag pointed to, if it was one. */
  indexDigest: string | null;
  configDigest: string;
  config: ImageConfig;
  /** Layer files in the blob cache, bottom first. */
  layers: { digest: string; size: number; file: string; downloaded: boolean }[];
}

export interface RegistryClientOptions {
  credentials?: Credentials | null;
  /** Registries (host[:port]) spoken to over plain HTTP besides loopback ones. */
  insecureRegistries?: string[];
  platform?: Platform;
  userAgent?: string;
  /** Aborts every request (and body read) of this client: build timeouts, shutdown. */
  signal?: AbortSignal;
}

export function hostPlatform(): Platform {
  const arch = ({ x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x' } as Record<string, string>)[process.arch] ?? process.arch;
  return { os: 'linux', architecture: arch };
}

function strArray(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

/** Normalize the `config` object of an image config blob. */
export function imageConfigFrom(raw: any): ImageConfig {
  const c = raw && typeof raw === 'object' && raw.config && typeof raw.config === 'object' ? raw.config : {};
  return {
    entrypoint: strArray(c.Entrypoint),
    cmd: strArray(c.Cmd),
    env: strArray(c.Env),
    workingDir: typeof c.WorkingDir === 'string' ? c.WorkingDir : '',
    user: typeof c.User === 'string' ? c.User : '',
    exposedPorts: c.ExposedPorts && typeof c.ExposedPorts === 'object' ? Object.keys(c.ExposedPorts) : [],
  };
}

async function readLimited(res: Response, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  if (!res.body) return Buffer.alloc(0);
  for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
    n += c.length;
    if (n > max) {
      throw new RegistryError('unsupported', `${what} is larger than ${max} bytes`);
    }
    chunks.push(Buffer.from(c));
  }
  return Buffer.concat(chunks);
}

export class RegistryClient {
  private authHeader: string | null = null;
  readonly ref: ImageReference;
  private readonly base: string;
  private readonly scope: string;

  constructor(
    ref: ImageReference | string,
    private readonly opts: RegistryClientOptions = {},
  ) {
    this.ref = typeof ref === 'string' ? parseReference(ref) : ref;
    const insecure = isLoopbackHost(this.ref.apiHost) || (opts.insecureRegistries ?? []).includes(this.ref.registry);
    this.base = `${insecure ? 'http' : 'https'}://${this.ref.apiHost}/v2/${this.ref.repository}`;
    this.scope = `repository:${this.ref.repository}:pull`;
  }

  private get name(): string {
    return formatReference(this.ref);
  }

  /** One GET with our auth; a 401 is answered once by following the challenge. */
  async get(url: string, accept?: string): Promise<Response> {
    const send = () => {
      const headers: Record<string, string> = { 'user-agent': this.opts.userAgent ?? 'shellwego-oci/0.1' };
      if (accept) headers.accept = accept;
      if (this.authHeader) headers.authorization = this.authHeader;
      return fetch(url, { headers, redirect: 'follow', signal: this.opts.signal }).catch((e: any) => {
        if (this.opts.signal?.aborted) throw e;
        throw new RegistryError('unreachable', `cannot reach the registry ${this.ref.registry}: ${e?.cause?.message ?? e?.message ?? e}`);
      });
    };
    let res = await send();
    if (res.status !== 401) return res;
    const header = res.headers.get('www-authenticate') ?? '';
    await res.body?.cancel().catch(() => {});
    await this.authenticate(header);
    res = await send();
    if (res.status === 401) {
      await res.body?.cancel().catch(() => {});
      throw new RegistryError('unauthorized', `the registry ${this.ref.registry} refused access to ${this.ref.repository}${this.opts.credentials ? ' with the given credentials' : ' without credentials'}`);
    }
    return res;
  }

  private async authenticate(header: string): Promise<void> {
    const challenges = parseChallenges(header);
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const creds = this.opts.credentials ?? null;
    if (bearer) {
      const url = tokenUrl(bearer, this.scope);
      const headers: Record<string, string> = { 'user-agent': this.opts.userAgent ?? 'shellwego-oci/0.1' };
      if (creds) headers.authorization = basicHeader(creds);
      const res = await fetch(url, { headers, signal: this.opts.signal }).catch((e: any) => {
        if (this.opts.signal?.aborted) throw e;
        throw new RegistryError('unreachable', `cannot reach the token service ${url.origin}: ${e?.cause?.message ?? e?.message ?? e}`);
      });
      if (res.status === 401 || res.status === 403) {
        await res.body?.cancel().catch(() => {});
        throw new RegistryError('unauthorized', `the token service of ${this.ref.registry} refused ${creds ? 'the given credentials' : 'anonymous access'} (HTTP ${res.status})`);
      }
      if (!res.ok) {
        await res.body?.cancel().catch(() => {});
        throw new RegistryError('registry_error', `the token service of ${this.ref.registry} answered HTTP ${res.status}`);
      }
      const body = JSON.parse((await readLimited(res, 1024 * 1024, 'the token response')).toString('utf8') || '{}');
      const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : '';
      if (!token) throw new RegistryError('registry_error', `the token service of ${this.ref.registry} returned no token`);
      this.authHeader = `Bearer ${token}`;
      return;
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      if (!creds) throw new RegistryError('unauthorized', `the registry ${this.ref.registry} needs credentials for ${this.ref.repository}`);
      this.authHeader = basicHeader(creds);
      return;
    }
    throw new RegistryError('unauthorized', `the registry ${this.ref.registry} asked for authentication we do not speak (${header || 'no challenge'})`);
  }

  /** A manifest (or index) by tag or digest, verified. */
  async manifest(tagOrDigest: string): Promise<{ mediaType: string; digest: string; body: Buffer; json: any }> {
    const res = await this.get(`${this.base}/manifests/${tagOrDigest}`, ACCEPT);
    if (res.status === 404) {
      await res.body?.cancel().catch(() => {});
      throw new RegistryError('not_found', `image ${this.name} not found: the registry has no manifest ${isDigest(tagOrDigest) ? tagOrDigest : `for tag "${tagOrDigest}"`} in ${this.ref.repository}`);
    }
    if (!res.ok) {
      const text = (await readLimited(res, 64 * 1024, 'the error').catch(() => Buffer.alloc(0))).toString('utf8').slice(0, 300);
      throw new RegistryError('registry_error', `the registry answered HTTP ${res.status} for the manifest of ${this.name}: ${text}`);
    }
    const body = await readLimited(res, MAX_MANIFEST, `the manifest of ${this.name}`);
    // By digest: it must hash to it. By tag: to the digest the registry declares for it.
    const expected = isDigest(tagOrDigest) ? tagOrDigest : res.headers.get('docker-content-digest');
    const digest = digestOf(body);
    if (expected) {
      try {
        verifyDigest(body, expected, `the manifest of ${this.name}`);
      } catch (e: any) {
        throw new RegistryError('digest_mismatch', e.message);
      }
    }
    let json: any;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {
      throw new RegistryError('unsupported', `the manifest of ${this.name} is not JSON`);
    }
    const mediaType = String(json?.mediaType ?? res.headers.get('content-type')?.split(';')[0] ?? '');
    return { mediaType, digest, body, json };
  }

  /** Stream of a blob's bytes (unverified: callers hash what they read, see BlobCache). */
  async blobStream(desc: Descriptor): Promise<AsyncIterable<Uint8Array>> {
    const res = await this.get(`${this.base}/blobs/${desc.digest}`);
    if (res.status === 404) {
      await res.body?.cancel().catch(() => {});
      throw new RegistryError('not_found', `blob ${desc.digest} of ${this.name} not found in the registry`);
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel().catch(() => {});
      throw new RegistryError('registry_error', `the registry answered HTTP ${res.status} for blob ${desc.digest} of ${this.name}`);
    }
    return res.body as unknown as AsyncIterable<Uint8Array>;
  }

  /**
   * Resolve the reference to one platform's manifest, fetch and verify the config, and make sure
   * every layer is in `cache` (downloading only the missing ones).
   */
  async pull(cache: BlobCache, log: (line: string) => void = () => {}): Promise<PulledImage> {
    const want = this.opts.platform ?? hostPlatform();
    let m = await this.manifest(this.ref.digest ?? this.ref.tag ?? 'latest');
    let indexDigest: string | null = null;
    if (m.mediaType === MEDIA.ociIndex || m.mediaType === MEDIA.dockerList || (Array.isArray(m.json?.manifests) && !m.json?.layers)) {
      indexDigest = m.digest;
      const list: Descriptor[] = Array.isArray(m.json.manifests) ? m.json.manifests : [];
      const pick = list.find((d) => d?.platform?.os === want.os && d?.platform?.architecture === want.architecture);
      if (!pick) {
        const have = list.map((d) => `${d?.platform?.os ?? '?'}/${d?.platform?.architecture ?? '?'}`).join(', ') || 'none';
        throw new RegistryError('unsupported', `image ${this.name} has no ${want.os}/${want.architecture} variant (it has: ${have})`);
      }
      log(`-----> ${this.name}: manifest list, using ${want.os}/${want.architecture} ${pick.digest}`);
      m = await this.manifest(pick.digest);
    }
    if (m.json?.schemaVersion === 1 || m.mediaType.startsWith('application/vnd.docker.distribution.manifest.v1+')) {
      throw new RegistryError('unsupported', `image ${this.name} uses the Docker schema 1 manifest format, which is not supported; push it again with a current client`);
    }
    if (m.mediaType && m.mediaType !== MEDIA.ociManifest && m.mediaType !== MEDIA.dockerManifest) {
      throw new RegistryError('unsupported', `image ${this.name}: unsupported manifest type ${m.mediaType}`);
    }
    const configDesc: Descriptor = m.json?.config;
    const layerDescs: Descriptor[] = Array.isArray(m.json?.layers) ? m.json.layers : [];
    if (!configDesc?.digest || !isDigest(configDesc.digest)) throw new RegistryError('unsupported', `image ${this.name}: the manifest names no sha256 config`);
    if (layerDescs.length === 0) throw new RegistryError('unsupported', `image ${this.name} has no layers`);
    for (const l of layerDescs) {
      if (!l?.digest || !isDigest(l.digest) || !Number.isSafeInteger(l.size) || l.size < 0) throw new RegistryError('unsupported', `image ${this.name}: a layer descriptor without a sha256 digest and size`);
      if (!LAYER_TYPES.has(l.mediaType)) throw new RegistryError('unsupported', `image ${this.name}: layer ${l.digest} has media type ${l.mediaType}; only tar and tar+gzip layers are supported`);
    }
    const wrap = (e: any) => (e instanceof DigestMismatchError ? new RegistryError('digest_mismatch', e.message) : e);
    // Config: small; also kept in the cache (content-addressed like the layers).
    if (configDesc.size > MAX_CONFIG) throw new RegistryError('unsupported', `image ${this.name}: the config is larger than ${MAX_CONFIG} bytes`);
    const cfg = await cache.ensure(configDesc.digest, configDesc.size, () => this.blobStream(configDesc)).catch((e) => {
      throw wrap(e);
    });
    const { readFile } = await import('node:fs/promises');
    let raw: any;
    try {
      raw = JSON.parse(await readFile(cfg.file, 'utf8'));
    } catch {
      throw new RegistryError('unsupported', `image ${this.name}: the config is not JSON`);
    }
    if ((raw?.os && raw.os !== want.os) || (raw?.architecture && raw.architecture !== want.architecture)) {
      throw new RegistryError('unsupported', `image ${this.name} is for ${raw.os}/${raw.architecture}, not ${want.os}/${want.architecture}`);
    }
    const layers: PulledImage['layers'] = [];
    let i = 0;
    for (const l of layerDescs) {
      i++;
      const r = await cache.ensure(l.digest, l.size, () => this.blobStream(l)).catch((e) => {
        throw wrap(e);
      });
      log(`       layer ${i}/${layerDescs.length} ${l.digest.slice(7, 19)} ${(l.size / 1024).toFixed(0)} KiB ${r.downloaded ? 'downloaded' : 'cached'}`);
      layers.push({ digest: l.digest, size: l.size, file: r.file, downloaded: r.downloaded });
    }
    return { reference: this.name, manifestDigest: m.digest, indexDigest, configDigest: configDesc.digest, config: imageConfigFrom(raw), layers };
  }
}
