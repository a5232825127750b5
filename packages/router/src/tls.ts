/**
 * TLS termination for the router: an HTTPS listener that hands decrypted requests to the same
 * request handler as the HTTP listener, certificates picked per SNI name from the set the control
 * plane publishes on the bus, ACME HTTP-01 answers on the HTTP listener, and the per-host
 * HTTP→HTTPS redirect and HSTS flags of the route table.
 */
import https from 'node:https';
import tls from 'node:tls';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Bus, Subscription } from '@shellwego/bus';
import { CertificatesAssembler, certificateCandidates, subjects } from '@shellwego/core';
import type { AcmeChallengesMessage, CertificatesMessage, RouterCertificate } from '@shellwego/core';
import type { HostCache, RouteTable } from './table.ts';

export interface RouterTlsOptions {
  /** Port of the HTTPS listener; 0 picks a free one (see `Router.httpsPort`). */
  port: number;
  /** Port users reach HTTPS on, for redirects (default: the port listened on; 443 is left out of URLs). */
  publicPort?: number;
}

const CHALLENGE_PREFIX = '/.well-known/acme-challenge/';
const TOKEN_RE = /^[A-Za-z0-9_-]{1,256}$/;

/**
 * The certificates a router serves, by DNS name. `select` tries the exact name, then the
 * wildcard one label up. Secure contexts are built once per certificate and reused across
 * table versions (building one parses the key, which is not free).
 */
export class CertificateStore {
  private byName = new Map<string, tls.SecureContext>();
  private byPem = new Map<string, tls.SecureContext>();
  private held: number | null = null;
  /** Served to clients that send no SNI name, or a name we have no certificate for. */
  fallback: tls.SecureContext | null = null;

  get version(): number | null {
    return this.held;
  }

  get size(): number {
    return this.byName.size;
  }

  /** Replaces the whole set unless `msg` is older than the one held; bad entries are skipped. */
  apply(msg: unknown, logger?: Logger): 'applied' | 'stale' | 'invalid' {
    if (!msg || typeof msg !== 'object') return 'invalid';
    const m = msg as Partial<CertificatesMessage>;
    if (typeof m.version !== 'number' || !Array.isArray(m.certificates)) return 'invalid';
    if (this.held !== null && m.version <= this.held) return 'stale';
    const byName = new Map<string, tls.SecureContext>();
    const byPem = new Map<string, tls.SecureContext>();
    let fallback: tls.SecureContext | null = null;
    for (const c of m.certificates as Partial<RouterCertificate>[]) {
      if (!c || typeof c.certPem !== 'string' || typeof c.keyPem !== 'string' || !Array.isArray(c.hostnames)) continue;
      let ctx = this.byPem.get(c.certPem);
      if (ctx === undefined) {
        try {
          ctx = tls.createSecureContext({ cert: c.certPem, key: c.keyPem });
        } catch (err) {
          logger?.warn({ hostnames: c.hostnames, err: (err as Error).message }, 'certificate refused');
          continue;
        }
      }
      byPem.set(c.certPem, ctx);
      for (const h of c.hostnames) if (typeof h === 'string') byName.set(h.toLowerCase(), ctx);
      // Prefer the platform's wildcard certificate for clients without SNI.
      if (fallback === null || c.hostnames.some((h) => typeof h === 'string' && h.startsWith('*.'))) fallback = ctx;
    }
    this.byName = byName;
    this.byPem = byPem;
    this.fallback = fallback;
    this.held = m.version;
    return 'applied';
  }

  select(serverName: string): tls.SecureContext | undefined {
    for (const name of certificateCandidates(serverName)) {
      const ctx = this.byName.get(name);
      if (ctx !== undefined) return ctx;
    }
    return undefined;
  }
}

/** ACME HTTP-01 tokens currently being validated, token → key authorization. */
export class ChallengeTokens {
  private tokens = new Map<string, string>();

  apply(msg: unknown): boolean {
    const t = (msg as Partial<AcmeChallengesMessage> | null)?.tokens;
    if (!t || typeof t !== 'object') return false;
    const next = new Map<string, string>();
    for (const [k, v] of Object.entries(t)) if (TOKEN_RE.test(k) && typeof v === 'string') next.set(k, v);
    this.tokens = next;
    return true;
  }

  get size(): number {
    return this.tokens.size;
  }

  get(token: string): string | undefined {
    return this.tokens.get(token);
  }
}

/**
 * The HTTPS side of one router. `intercept` runs first for every request of both listeners and
 * answers what the router itself owns (challenges, redirects); it returns false to let the
 * normal proxying go on.
 */
export class TlsFrontend {
  readonly certs = new CertificateStore();
  readonly challenges = new ChallengeTokens();
  private server: https.Server | null = null;
  private subs: Subscription[] = [];
  /** Chunks of one certificates version, until all arrived (a half set is never applied). */
  private readonly assembler = new CertificatesAssembler();
  private timer: NodeJS.Timeout | null = null;
  private portText = '';
  port = 0;

  constructor(
    private readonly bus: Bus,
    private readonly opts: RouterTlsOptions,
    private readonly table: RouteTable,
    private readonly hosts: HostCache,
    private readonly logger: Logger | undefined,
  ) {}

  intercept(req: IncomingMessage, res: ServerResponse): boolean {
    const encrypted = (req.socket as tls.TLSSocket).encrypted === true;
    const url = req.url ?? '/';
    if (!encrypted && this.challenges.size > 0 && url.startsWith(CHALLENGE_PREFIX)) {
      const token = url.slice(CHALLENGE_PREFIX.length).split('?')[0];
      const answer = this.challenges.get(token);
      if (answer !== undefined) {
        res.writeHead(200, ['Content-Type', 'text/plain', 'Content-Length', String(Buffer.byteLength(answer)), 'Cache-Control', 'no-store']);
        res.end(answer);
        return true;
      }
      // Unknown token: the app may run its own ACME client, so it gets the request.
    }
    const hostname = this.hosts.get(req.headers.host);
    if (hostname === null) return false;
    const route = this.table.lookup(hostname);
    if (route === undefined) return false;
    if (!encrypted) {
      if (route.redirectHttps !== true || url.charCodeAt(0) !== 47 /* / */) return false;
      const location = `https://${hostname}${this.portText}${url}`;
      res.writeHead(308, ['Location', location, 'Content-Type', 'text/plain; charset=utf-8', 'Content-Length', String(Buffer.byteLength(location) + 1), 'Cache-Control', 'no-store']);
      res.end(`${location}\n`);
      return true;
    }
    if (route.hstsMaxAge !== undefined && route.hstsMaxAge > 0) res.setHeader('Strict-Transport-Security', `max-age=${route.hstsMaxAge}`);
    return false;
  }

  async listen(
    host: string,
    onRequest: (req: IncomingMessage, res: ServerResponse) => void,
    onUpgrade: (req: IncomingMessage, socket: Socket, head: Buffer) => void,
    onClientError: (err: NodeJS.ErrnoException, socket: Socket) => void,
    keepAliveTimeoutMs: number,
  ): Promise<number> {
    this.subs.push(
      this.bus.subscribe<unknown>(subjects.certificates, (m) => {
        const got = this.assembler.accept(m);
        if (typeof got === 'string') return void this.logger?.debug({ result: got }, 'certificates chunk held back');
        const r = this.certs.apply(got.message, this.logger);
        if (r === 'applied') this.logger?.info({ version: this.certs.version, names: this.certs.size }, 'certificates applied');
        else this.logger?.debug({ result: r }, 'certificates ignored');
      }),
      this.bus.subscribe<unknown>(subjects.acmeChallenges, (m) => {
        if (this.challenges.apply(m)) this.logger?.debug({ tokens: this.challenges.size }, 'acme challenges applied');
      }),
    );
    const server = https.createServer({
      SNICallback: (name, cb) => cb(null, this.certs.select(name) ?? this.certs.fallback ?? undefined),
      requireHostHeader: false, requestTimeout: 0, headersTimeout: 60_000, noDelay: true,
    }, onRequest);
    server.keepAliveTimeout = keepAliveTimeoutMs;
    server.on('upgrade', onUpgrade);
    server.on('clientError', onClientError);
    // A client that fails the handshake (unknown name, no certificate yet) just goes away.
    server.on('tlsClientError', (err, socket) => {
      this.logger?.debug({ err: err.message }, 'TLS handshake failed');
      socket.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.logger?.error({ err }, 'router https server error'));
    this.server = server;
    const address = server.address();
    this.port = typeof address === 'object' && address !== null ? address.port : this.opts.port;
    const publicPort = this.opts.publicPort ?? this.port;
    this.portText = publicPort === 443 ? '' : `:${publicPort}`;
    const request = (): void => {
      this.bus.publish(subjects.certificatesRequest, {}).catch((err: unknown) => this.logger?.warn({ err }, 'could not request certificates'));
    };
    // Ask until the control plane has answered once; later changes are pushed.
    this.timer = setInterval(() => {
      if (this.certs.version === null) request();
    }, 2_000);
    this.timer.unref();
    request();
    this.logger?.info({ host, port: this.port }, 'router listening for HTTPS');
    return this.port;
  }

  /** Stops accepting and closes idle connections; in-flight requests go on. */
  stop(): Promise<void> {
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
    if (this.timer) clearInterval(this.timer);
    const server = this.server;
    if (server === null) return Promise.resolve();
    const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    return stopped;
  }

  closeIdleConnections(): void {
    this.server?.closeIdleConnections();
  }

  closeAllConnections(): void {
    this.server?.closeAllConnections();
  }
}
