/**
 * RegistryProxy: a tiny allow-listing HTTP CONNECT proxy. Sandboxed builds get their own network
 * namespace on the platform bridge with no route to the internet; the only way out is this proxy,
 * listening on the bridge gateway address, which tunnels TLS to the package registries only.
 * Everything else (other hosts, other ports, plain-HTTP proxying) gets 403 and a log line.
 */
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';

export const DEFAULT_ALLOWED_HOSTS = [
  'registry.npmjs.org:443',
  'registry.yarnpkg.com:443',
  'pypi.org:443',
  'files.pythonhosted.org:443',
];

export interface RegistryProxyOptions {
  /** Address to listen on (the bridge gateway IP in sandbox mode). Default 127.0.0.1. */
  host?: string;
  /** Port (default 0: any free port). */
  port?: number;
  /** `host:port` entries allowed as CONNECT targets (default DEFAULT_ALLOWED_HOSTS). */
  allow?: string[];
  logger?: Pick<Logger, 'info' | 'warn'>;
  /** Max simultaneous tunnels (default 256). */
  maxConnections?: number;
  /** Idle timeout of a tunnel in ms (default 120 s). */
  idleTimeoutMs?: number;
  /** Called on every denial (tests, metrics). */
  onDeny?: (target: string, reason: string) => void;
  /**
   * Only serve clients whose address was granted with grant() (the builder grants each build
   * sandbox's bridge IP while its step runs), so app instances on the same bridge cannot use the
   * proxy. A client not granted yet is held up to `grantWaitMs` (default 3 s) before the 403,
   * since a step may connect before its start() returned the IP.
   */
  restrictSources?: boolean;
  grantWaitMs?: number;
}

export class RegistryProxy {
  private server: http.Server | null = null;
  private readonly allow: Set<string>;
  private readonly sockets = new Set<Duplex | net.Socket>();
  private addr: { host: string; port: number } | null = null;
  private readonly granted = new Map<string, number>();
  private grantWaiters = new Set<() => void>();
  denied = 0;
  tunnels = 0;

  constructor(private readonly opts: RegistryProxyOptions = {}) {
    this.allow = new Set((opts.allow ?? DEFAULT_ALLOWED_HOSTS).map((h) => h.toLowerCase()));
  }

  /** Start listening; resolves with the bound address. */
  async listen(): Promise<{ host: string; port: number }> {
    if (this.addr) return this.addr;
    const server = http.createServer((req, res) => {
      // Only CONNECT tunnels; refuse absolute-form plain HTTP proxying and everything else.
      this.deny(req.url ?? '', 'plain HTTP proxying is not allowed (use https)');
      res.writeHead(403, { 'content-type': 'text/plain', connection: 'close' });
      res.end('403 Forbidden: this proxy only tunnels HTTPS to package registries\n');
    });
    server.on('connect', (req, socket, head) => void this.onConnect(req, socket, head));
    server.on('clientError', (_err, socket) => socket.destroy());
    server.maxConnections = this.opts.maxConnections ?? 256;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port ?? 0, this.opts.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    const a = server.address() as net.AddressInfo;
    this.addr = { host: a.address, port: a.port };
    return this.addr;
  }

  /** http://host:port of the proxy (after listen). */
  get url(): string {
    if (!this.addr) throw new Error('RegistryProxy is not listening');
    const h = this.addr.host.includes(':') ? `[${this.addr.host}]` : this.addr.host;
    return `http://${h}:${this.addr.port}`;
  }

  /** Allow connections from `ip` (counted: grant twice, revoke twice). */
  grant(ip: string): void {
    const k = normalizeIp(ip);
    this.granted.set(k, (this.granted.get(k) ?? 0) + 1);
    for (const w of [...this.grantWaiters]) w();
  }

  revoke(ip: string): void {
    const k = normalizeIp(ip);
    const n = (this.granted.get(k) ?? 0) - 1;
    if (n > 0) this.granted.set(k, n);
    else this.granted.delete(k);
  }

  private async sourceAllowed(ip: string): Promise<boolean> {
    if (!this.opts.restrictSources) return true;
    const k = normalizeIp(ip);
    if (this.granted.has(k)) return true;
    const deadline = Date.now() + (this.opts.grantWaitMs ?? 3000);
    while (!this.granted.has(k) && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t);
          this.grantWaiters.delete(done);
          resolve();
        };
        const t = setTimeout(done, Math.max(deadline - Date.now(), 0));
        this.grantWaiters.add(done);
      });
    }
    return this.granted.has(k);
  }

  isAllowed(target: string): boolean {
    return this.allow.has(target.toLowerCase());
  }

  private deny(target: string, reason: string): void {
    this.denied++;
    this.opts.logger?.warn({ target: target.slice(0, 300), reason }, 'registry proxy denied a connection');
    this.opts.onDeny?.(target, reason);
  }

  private track(s: Duplex | net.Socket): void {
    this.sockets.add(s);
    s.once('close', () => this.sockets.delete(s));
  }

  private async onConnect(req: http.IncomingMessage, client: Duplex, head: Buffer): Promise<void> {
    this.track(client);
    client.on('error', () => {});
    const target = (req.url ?? '').trim();
    const source = req.socket.remoteAddress ?? '';
    if (!(await this.sourceAllowed(source))) {
      this.deny(target, `client ${source} is not a running build`);
      client.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n403 Forbidden: only build steps may use this proxy\n');
      return;
    }
    if (client.destroyed) return;
    const m = /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(target);
    if (!m || !this.isAllowed(target)) {
      this.deny(target, m ? 'host not in the registry allow-list' : 'malformed CONNECT target');
      client.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n403 Forbidden: only package registries are reachable from builds\n');
      return;
    }
    const [, host, port] = m;
    const upstream = net.connect({ host, port: Number(port) });
    this.track(upstream);
    const idle = this.opts.idleTimeoutMs ?? 120_000;
    upstream.setTimeout(idle, () => upstream.destroy());
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      this.tunnels++;
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head?.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on('error', (e) => {
      if (!connected) {
        this.opts.logger?.warn({ target, err: e.message }, 'registry proxy could not reach upstream');
        client.end('HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n');
      } else client.destroy();
    });
    upstream.on('close', () => client.destroy());
    client.on('close', () => upstream.destroy());
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    this.addr = null;
    for (const sock of this.sockets) sock.destroy();
    this.sockets.clear();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}

function normalizeIp(ip: string): string {
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}
