/**
 * A real OCI registry on loopback for tests: Debian's `docker-registry` (CNCF distribution v2)
 * with token auth. A small token server signs JWTs (RS256) with a key whose self-signed
 * certificate is the registry's `rootcertbundle`; the certificate travels in the `x5c` header.
 * Anonymous callers may pull repositories outside `private/`; the test user may pull and push
 * everything. Images are pushed through the registry API like `docker push` does.
 */
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash, createSign, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './platform.ts';

const exec = promisify(execFile);
const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');
export const sha256 = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export const REGISTRY_USER = 'pusher';
export const REGISTRY_PASSWORD = `pw-${randomBytes(6).toString('hex')}`;
const SERVICE = 'swg-test-registry';
const HOST_ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64';
const FOREIGN_ARCH = HOST_ARCH === 'amd64' ? 's390x' : 'amd64';
const ISSUER = 'swg-test-issuer';

export interface PushedImage {
  manifestDigest: string;
  indexDigest: string | null;
  layerDigests: string[];
}

export class TestRegistry {
  proc: ChildProcess | null = null;
  tokenServer: Server | null = null;
  output = '';
  port = 0;
  tokenPort = 0;
  /** Token requests by whether they carried valid credentials. */
  tokens = { anonymous: 0, authenticated: 0 };

  private constructor(readonly dir: string, private readonly key: string, private readonly certDer: string) {}

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async start(): Promise<TestRegistry> {
    const dir = await mkdtemp(join(tmpdir(), 'swg-registry-'));
    await exec('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2', '-subj', '/CN=swg-test-token-signer']);
    const certPem = await readFile(join(dir, 'cert.pem'), 'utf8');
    const der = certPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
    const r = new TestRegistry(dir, await readFile(join(dir, 'key.pem'), 'utf8'), der);
    r.port = await freePort();
    r.tokenPort = await freePort();
    await r.startTokenServer();
    await writeFile(join(dir, 'config.yml'), [
      'version: 0.1',
      'log:', '  level: warn',
      'storage:', `  filesystem:`, `    rootdirectory: ${join(dir, 'data')}`, '  delete:', '    enabled: true',
      'http:', `  addr: 127.0.0.1:${r.port}`, `  secret: ${randomBytes(16).toString('hex')}`,
      'auth:', '  token:', `    realm: http://127.0.0.1:${r.tokenPort}/token`, `    service: ${SERVICE}`, `    issuer: ${ISSUER}`, `    rootcertbundle: ${join(dir, 'cert.pem')}`,
      '',
    ].join('\n'));
    const proc = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'pipe', 'pipe'] });
    r.proc = proc;
    proc.stdout!.on('data', (d) => (r.output += d));
    proc.stderr!.on('data', (d) => (r.output += d));
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`docker-registry exited with ${proc.exitCode}:\n${r.output}`);
      const res = await fetch(`http://${r.host}/v2/`).catch(() => null);
      if (res) {
        await res.body?.cancel();
        if (res.status === 401) return r;
      }
      await new Promise((x) => setTimeout(x, 100));
    }
    throw new Error(`docker-registry did not come up:\n${r.output}`);
  }

  private sign(sub: string, access: { type: string; name: string; actions: string[] }[]): string {
    const header = { alg: 'RS256', typ: 'JWT', x5c: [this.certDer] };
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: ISSUER, sub, aud: SERVICE, exp: now + 600, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = createSign('RSA-SHA256').update(input).sign(this.key);
    return `${input}.${b64url(sig)}`;
  }

  private async startTokenServer(): Promise<void> {
    this.tokenServer = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const auth = req.headers.authorization ?? '';
      let user: string | null = null;
      if (auth.startsWith('Basic ')) {
        const [u, p] = Buffer.from(auth.slice(6), 'base64').toString().split(':');
        if (u !== REGISTRY_USER || p !== REGISTRY_PASSWORD) {
          res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
          return;
        }
        user = u;
      }
      if (user) this.tokens.authenticated++;
      else this.tokens.anonymous++;
      const access = url.searchParams.getAll('scope').flatMap((scope) => {
        const [type, name, actions] = scope.split(':');
        if (type !== 'repository' || !name) return [];
        const wanted = (actions ?? '').split(',');
        const granted = user ? wanted.filter((a) => a === 'pull' || a === 'push') : name.startsWith('private/') ? [] : wanted.filter((a) => a === 'pull');
        return [{ type, name, actions: granted }];
      });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: this.sign(user ?? '', access), expires_in: 600 }));
    });
    await new Promise<void>((r) => this.tokenServer!.listen(this.tokenPort, '127.0.0.1', r));
  }

  /** A push token for `repo` (what `docker login` + `docker push` would get). */
  private async pushToken(repo: string): Promise<string> {
    const r = await fetch(`http://127.0.0.1:${this.tokenPort}/token?service=${SERVICE}&scope=repository:${repo}:pull,push`, {
      headers: { authorization: `Basic ${Buffer.from(`${REGISTRY_USER}:${REGISTRY_PASSWORD}`).toString('base64')}` },
    });
    return ((await r.json()) as { token: string }).token;
  }

  private async putBlob(repo: string, token: string, data: Buffer): Promise<string> {
    const digest = sha256(data);
    const auth = { authorization: `Bearer ${token}` };
    const start = await fetch(`http://${this.host}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: auth });
    if (start.status !== 202) throw new Error(`blob upload start: HTTP ${start.status} ${await start.text()}`);
    const loc = new URL(start.headers.get('location')!, `http://${this.host}`);
    loc.searchParams.set('digest', digest);
    const put = await fetch(loc, { method: 'PUT', headers: { ...auth, 'content-type': 'application/octet-stream' }, body: new Uint8Array(data) });
    if (put.status !== 201) throw new Error(`blob upload: HTTP ${put.status} ${await put.text()}`);
    return digest;
  }

  private async putManifest(repo: string, token: string, ref: string, mediaType: string, body: Buffer): Promise<void> {
    const r = await fetch(`http://${this.host}/v2/${repo}/manifests/${ref}`, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': mediaType }, body: new Uint8Array(body) });
    if (r.status !== 201) throw new Error(`manifest push: HTTP ${r.status} ${await r.text()}`);
  }

  /**
   * Push an image: gzip'd tar layers, a config, an OCI manifest, and (with `index`) an OCI index
   * tagged `tag` that lists it for linux/amd64 (and a foreign arm64 entry the client must skip).
   */
  async push(repo: string, tag: string, layers: Buffer[], config: Record<string, unknown>, opts: { index?: boolean } = {}): Promise<PushedImage> {
    const token = await this.pushToken(repo);
    const layerDigests: string[] = [];
    for (const l of layers) layerDigests.push(await this.putBlob(repo, token, l));
    const manifestFor = async (architecture: string) => {
      const cfg = Buffer.from(JSON.stringify({
        architecture, os: 'linux', config,
        rootfs: { type: 'layers', diff_ids: layers.map(() => sha256(randomBytes(8))) }, history: [],
      }));
      const cfgDigest = await this.putBlob(repo, token, cfg);
      return Buffer.from(JSON.stringify({
        schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfgDigest, size: cfg.length },
        layers: layers.map((l, i) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigests[i], size: l.length })),
      }, null, 2));
    };
    const manifest = await manifestFor(HOST_ARCH);
    const manifestDigest = sha256(manifest);
    if (!opts.index) {
      await this.putManifest(repo, token, tag, 'application/vnd.oci.image.manifest.v1+json', manifest);
      return { manifestDigest, indexDigest: null, layerDigests };
    }
    await this.putManifest(repo, token, manifestDigest, 'application/vnd.oci.image.manifest.v1+json', manifest);
    // A variant for another architecture first: the client must pick by platform, not position.
    const foreign = await manifestFor(FOREIGN_ARCH);
    await this.putManifest(repo, token, sha256(foreign), 'application/vnd.oci.image.manifest.v1+json', foreign);
    const index = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(foreign), size: foreign.length, platform: { os: 'linux', architecture: FOREIGN_ARCH } },
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifestDigest, size: manifest.length, platform: { os: 'linux', architecture: HOST_ARCH } },
      ],
    }));
    await this.putManifest(repo, token, tag, 'application/vnd.oci.image.index.v1+json', index);
    return { manifestDigest, indexDigest: sha256(index), layerDigests };
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null) {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    }
    await new Promise<void>((r) => (this.tokenServer ? this.tokenServer.close(() => r()) : r()));
    await rm(this.dir, { recursive: true, force: true });
  }
}
