import http from 'node:http';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Bus, Subscription } from '@shellwego/bus';
import { RouteTableAssembler, subjects } from '@shellwego/core';
import type { RouterStatsMessage, RouteTableMessage } from '@shellwego/core';
import { HostCache, RouteTable, pickBackend } from './table.ts';
import type { Backend, Route } from './table.ts';
import { forwardContext, scanRequestHeaders } from './headers.ts';
import type { ScannedRequest } from './headers.ts';
import { IDEMPOTENT_METHODS, routerErrors } from './errors.ts';
import type { RouterError } from './errors.ts';
import { RouterMetrics } from './metrics.ts';
import type { MetricsRegistry } from './metrics.ts';
import { proxyUpgrade } from './upgrade.ts';
import { UpstreamPool } from './upstream.ts';
import { TlsFrontend } from './tls.ts';
import { ClusterTls, UNDELIVERED_CODES, hopHeaders, hopRefusal, peerNodeId, scanHopRequest } from './cluster.ts';
import type { ClusterIdentity } from './cluster.ts';
import type { RouterTlsOptions } from './tls.ts';
import type { UpstreamConn, UpstreamHandler } from './upstream.ts';

export interface RouterOptions {
  bus: Bus;
  /** Address to listen on (e.g. 0.0.0.0, 127.0.0.1). */
  host: string;
  /** Port to listen on; 0 picks a free one (see `Router.port`). */
  port: number;
  /** Access log (one JSON line per request at info) and table changes. No logger → no logging work. */
  logger?: Logger;
  /**
   * A held table older than this is re-requested from the control plane, and may then be replaced
   * by a lower version (the control plane's counter restarts with it). Default 60 s.
   */
  staleAfterMs?: number;
  /** prom-client `Registry` (or anything with `registerMetric`) to expose router metrics on. */
  metrics?: MetricsRegistry;
  /** Give up connecting to a backend after this long and try the next one. Default 3 s. */
  connectTimeoutMs?: number;
  /**
   * Close pooled backend connections idle this long (a backend's `Keep-Alive: timeout=N` hint
   * shortens it to N−1 s). Default 30 s.
   */
  upstreamIdleMs?: number;
  /** How long a backend that refused a connection is skipped. Default 5 s. */
  unhealthyMs?: number;
  /** How long `close()` lets in-flight requests finish before cutting them. Default 10 s. */
  drainTimeoutMs?: number;
  /** Idle keep-alive timeout of client connections. Default 65 s. */
  keepAliveTimeoutMs?: number;
  /** How often per-instance request/failure counts go to the control plane (canary analysis). Default 2 s. */
  statsIntervalMs?: number;
  /** Names this router in its stats reports (`agent.<id>.router.stats`). Default: `nodeId`, else a random id. */
  routerId?: string;
  /** Value of X-Forwarded-Proto (set to https when TLS is terminated in front). Default http. */
  proto?: 'http' | 'https';
  /** Also terminate TLS (SNI certificates, ACME HTTP-01 answers, redirects, HSTS; see tls.ts). */
  tls?: RouterTlsOptions;
  /** The node this router runs on: its instances are reached directly, other nodes' through their routers (cluster.ts). */
  nodeId?: string;
  /**
   * Take requests for this node's instances from other nodes' routers here (needs `nodeId`);
   * port 0 picks a free one. `tls`: this node's cluster certificate from the install CA — the
   * listener speaks only mutual TLS, and hops to other nodes present it (ADR 0022). A router
   * without `cluster` reaches every instance directly.
   */
  cluster?: { host: string; port: number; tls: ClusterIdentity };
  /**
   * The address (host:port) an instance of this node runs at now, or null (from the agent): lets
   * the cluster listener still reach an instance that just left the route table (it drains),
   * never an address since given to another instance. Without it, only table entries are reached.
   */
  runningAt?: (instanceId: string) => string | null;
}

export interface Router {
  /** The port actually listened on. */
  port: number;
  /** The HTTPS port listened on; null without `tls`. */
  httpsPort: number | null;
  /** The cluster listener's port; null without `cluster`. */
  clusterPort: number | null;
  /** A renewed cluster certificate: new hops (both ways) use it, open connections keep theirs. Throws if it is unusable. */
  setClusterIdentity(identity: ClusterIdentity): void;
  /** Stops accepting, lets in-flight requests finish (bounded), closes everything. Idempotent. */
  close(): Promise<void>;
  /** The route table currently in force (a copy). */
  table(): RouteTableMessage;
  /** The version of the table in force (null: none yet); cheap, unlike `table()`. */
  routesVersion(): number | null;
}

/** Router-wide state the per-request code needs. */
interface Shared {
  pool: UpstreamPool;
  table: RouteTable;
  logger: Logger | undefined;
  metrics: RouterMetrics | null;
  timed: boolean;
  unhealthyMs: number;
  closing: boolean;
  inflight: number;
  /** Called whenever a request finishes while closing. */
  onFinishedWhileClosing: () => void;
}

const kExchange = Symbol('shellwego.exchange');
type TaggedResponse = ServerResponse & { [kExchange]?: Exchange };

function onResponseClose(this: TaggedResponse): void {
  this[kExchange]!.onClientClose();
}

/** One proxied request: picks backends, retries connect failures, relays the response. */
class Exchange implements UpstreamHandler {
  started: number;
  hostname: string | null = null;
  path: string;
  route: Route | null = null;
  backend: Backend | null = null;
  /** Backends that failed to connect for this request. */
  tried: Backend[] | null = null;
  keepAliveRetries = 0;
  conn: UpstreamConn | null = null;
  responded = false;
  bytes = 0;
  clientGone = false;
  /** Came from another node's router: its stats are counted there, and failures say the hop did not deliver. */
  hopped = false;
  private waitingDrain = false;
  private onDrain: (() => void) | null = null;

  constructor(
    private readonly shared: Shared,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    private readonly scan: ScannedRequest,
  ) {
    this.started = shared.timed ? performance.now() : 0;
    this.path = req.url ?? '/';
    (res as TaggedResponse)[kExchange] = this;
    res.on('close', onResponseClose);
  }

  get requestId(): string {
    return this.scan.requestId;
  }

  /** An answer the router gives itself. */
  reply(err: RouterError, message: string): void {
    const { res } = this;
    this.shared.metrics?.error(err.code);
    if (res.headersSent || this.clientGone) {
      res.destroy();
      return;
    }
    const body = `${message}\n`;
    this.bytes = Buffer.byteLength(body);
    const headers = [
      'Content-Type', 'text/plain; charset=utf-8',
      'Content-Length', String(this.bytes),
      'Cache-Control', 'no-store',
      'X-Shellwego-Error', err.code,
      'X-Request-Id', this.scan.requestId,
    ];
    if (this.shared.closing) headers.push('Connection', 'close');
    res.writeHead(err.status, headers);
    res.end(body);
  }

  start(route: Route): void {
    this.route = route;
    this.attempt();
  }

  private attempt(): void {
    const route = this.route!;
    const now = Date.now();
    const backend = pickBackend(route, now, this.tried);
    if (backend === undefined) return this.reply(routerErrors.backendUnavailable, `no instance of ${route.appName} is reachable`);
    this.backend = backend;
    const method = this.req.method ?? 'GET';
    let headers = this.scan.headers;
    if (backend.via !== null) {
      // Another node's instance: through that node's router, which forwards to it alone.
      const token = this.shared.table.clusterToken;
      if (token === undefined) return this.reply(routerErrors.backendUnavailable, `instance of ${route.appName} is on another node and the route table has no cluster token`);
      headers = headers.concat(hopHeaders(backend.instanceId, token));
    }
    const conn = this.shared.pool.acquire(backend, now, !this.scan.hasBody && IDEMPOTENT_METHODS.has(method));
    this.conn = conn;
    conn.send(this, { method, path: this.path, headers, body: this.scan.hasBody ? this.req : null, chunked: this.scan.chunked });
  }

  onResponseHead(status: number, headers: string[]): void {
    const backend = this.backend!;
    if (status === 502 && backend.via !== null && !this.scan.hasBody && undelivered(headers)) {
      // The other node's router did not deliver it (instance gone there, or unreachable): nothing
      // reached an app, so the next backend may take it.
      this.conn?.destroy();
      this.conn = null;
      backend.unhealthyUntil = Date.now() + this.shared.unhealthyMs;
      (this.tried ??= []).push(backend);
      if (this.tried.length < this.route!.backends.length) {
        this.shared.metrics?.retry();
        return this.attempt();
      }
      return this.reply(routerErrors.backendUnavailable, `no instance of ${this.route!.appName} is reachable`);
    }
    this.responded = true;
    if (backend.unhealthyUntil !== 0) backend.unhealthyUntil = 0;
    headers.push('X-Request-Id', this.scan.requestId);
    if (this.shared.closing) headers.push('Connection', 'close');
    try {
      this.res.writeHead(status, headers);
    } catch (err) {
      // Node refused a header (invalid characters): nothing was sent, answer 502 instead.
      this.shared.logger?.warn({ backend: backend.address, err: (err as Error).message }, 'backend response rejected');
      this.conn?.destroy();
      this.conn = null;
      if (this.res.headersSent) this.res.destroy();
      else this.reply(routerErrors.backendUnavailable, `instance of ${this.route!.appName} sent an invalid response`);
    }
  }

  onResponseData(chunk: Buffer): boolean {
    this.bytes += chunk.length;
    if (this.res.write(chunk)) return true;
    if (!this.waitingDrain) {
      this.waitingDrain = true;
      this.onDrain ??= () => {
        this.waitingDrain = false;
        if (this.conn !== null) this.conn.resume();
      };
      this.res.once('drain', this.onDrain);
    }
    return false;
  }

  onResponseEnd(last: Buffer | null): void {
    this.conn = null;
    if (last === null) this.res.end();
    else {
      this.bytes += last.length;
      this.res.end(last);
    }
  }

  onResponseAbort(err: NodeJS.ErrnoException): void {
    this.conn = null;
    this.shared.logger?.warn({ backend: this.backend?.address, err: err.code ?? err.message }, 'backend response cut short');
    this.res.destroy();
  }

  onUpstreamFailure(err: NodeJS.ErrnoException, connectFailed: boolean, reusedSilent: boolean): void {
    this.conn = null;
    if (this.clientGone) return;
    const { shared } = this;
    const backend = this.backend!;
    const route = this.route!;
    if (connectFailed) {
      // Never reached the backend: nothing was sent, mark it and try the next one.
      backend.unhealthyUntil = Date.now() + shared.unhealthyMs;
      (this.tried ??= []).push(backend);
      shared.logger?.warn({ backend: backend.address, instanceId: backend.instanceId, err: err.code ?? err.message }, 'backend connect failed; marked unhealthy');
      if (this.tried.length < route.backends.length) {
        shared.metrics?.retry();
        return this.attempt();
      }
      if (this.hopped) return this.reply(routerErrors.instanceUnreachable, `instance ${backend.instanceId} does not accept connections on this node`);
      return this.reply(routerErrors.backendUnavailable, `no instance of ${route.appName} is reachable`);
    }
    // A pooled connection the backend closed just as we reused it (the keep-alive race):
    // resending is safe for idempotent, body-less requests.
    if (reusedSilent && !this.scan.hasBody && this.keepAliveRetries === 0 && IDEMPOTENT_METHODS.has(this.req.method ?? '')) {
      this.keepAliveRetries++;
      shared.metrics?.retry();
      return this.attempt();
    }
    if (backend.via !== null && !this.scan.hasBody && IDEMPOTENT_METHODS.has(this.req.method ?? '')) {
      // Another node's router failed before any answer (it died, its node lost power): like
      // nginx's proxy_next_upstream, an idempotent request goes to the next backend.
      backend.unhealthyUntil = Date.now() + shared.unhealthyMs;
      (this.tried ??= []).push(backend);
      shared.logger?.warn({ backend: backend.address, via: backend.via, instanceId: backend.instanceId, err: err.code ?? err.message }, "other node's router failed before answering; trying the next backend");
      if (this.tried.length < route.backends.length) {
        shared.metrics?.retry();
        return this.attempt();
      }
    }
    shared.logger?.warn({ backend: backend.address, instanceId: backend.instanceId, err: err.code ?? err.message }, 'backend failed before answering');
    this.reply(routerErrors.backendUnavailable, `instance of ${route.appName} failed to answer`);
  }

  onClientClose(): void {
    const { res, shared } = this;
    if (!res.writableFinished) {
      this.clientGone = true;
      if (this.conn !== null) {
        this.conn.destroy();
        this.conn = null;
      }
    }
    if (shared.timed) {
      const ms = performance.now() - this.started;
      shared.metrics?.observe(res.statusCode, ms / 1000);
      const { logger } = shared;
      if (logger !== undefined && logger.isLevelEnabled('info')) {
        logger.info({
          method: this.req.method, host: this.hostname, path: this.req.url, status: res.statusCode, durationMs: Math.round(ms * 1000) / 1000,
          bytes: this.bytes, backend: this.backend?.address ?? null, instanceId: this.backend?.instanceId ?? null, requestId: this.scan.requestId,
          appName: this.route?.appName ?? null, ...(this.clientGone ? { aborted: true } : {}),
        }, 'request');
      }
    }
    const b = this.backend;
    if (b !== null && !this.hopped) {
      // Counted per backend for the control plane's canary analysis: an answer ≥ 500 (ours or
      // the app's) or a request cut short is a failure.
      b.requests++;
      if (res.statusCode >= 500 || !res.writableFinished) b.failed++;
    }
    shared.inflight--;
    if (shared.closing) shared.onFinishedWhileClosing();
  }
}

export async function createRouter(opts: RouterOptions): Promise<Router> {
  const staleAfterMs = opts.staleAfterMs ?? 60_000;
  const connectTimeoutMs = opts.connectTimeoutMs ?? 3_000;
  const unhealthyMs = opts.unhealthyMs ?? 5_000;
  const drainTimeoutMs = opts.drainTimeoutMs ?? 10_000;
  const proto = opts.proto ?? 'http';
  const logger = opts.logger;
  const metrics = opts.metrics ? new RouterMetrics(opts.metrics) : null;
  const timed = logger !== undefined || metrics !== null;

  if (opts.cluster && !opts.nodeId) throw new Error('a router with a cluster listener needs its nodeId');
  const clusterTls = opts.cluster ? new ClusterTls(opts.cluster.tls) : null;
  const table = new RouteTable(staleAfterMs, opts.nodeId ?? null, clusterTls !== null);
  const hosts = new HostCache();
  // Another node's router: mutual TLS, its certificate must name the node the table says (cluster.ts).
  const connectVia = clusterTls === null ? undefined : (b: Backend) => clusterTls.connect(b.host, b.port, b.nodeId!);
  const pool = new UpstreamPool({ connectTimeoutMs, idleMs: opts.upstreamIdleMs ?? 30_000, maxIdlePerBackend: 512, connectVia });
  const upgraded = new Set<Socket>();
  let drained: (() => void) | null = null;
  const tlsFront = opts.tls ? new TlsFrontend(opts.bus, opts.tls, table, hosts, logger) : null;
  const shared: Shared = {
    pool, table, logger, metrics, timed, unhealthyMs, closing: false, inflight: 0,
    onFinishedWhileClosing: () => {
      server.closeIdleConnections();
      tlsFront?.closeIdleConnections();
      if (shared.inflight === 0 && drained !== null) drained();
    },
  };

  function onRequest(req: IncomingMessage, res: ServerResponse): void {
    // ACME challenges and HTTP→HTTPS redirects are answered by the router itself.
    if (tlsFront !== null && tlsFront.intercept(req, res)) return;
    shared.inflight++;
    const scan = scanRequestHeaders(req.rawHeaders, forwardContext(req.socket, (req.socket as TLSSocket).encrypted ? 'https' : proto), false);
    const ex = new Exchange(shared, req, res, scan);
    const hostname = hosts.get(scan.host);
    ex.hostname = hostname;
    if (hostname === null) return ex.reply(routerErrors.badRequest, 'missing or malformed Host header');
    if (ex.path.charCodeAt(0) !== 47 /* / */) {
      const path = originForm(ex.path);
      if (path === null) return ex.reply(routerErrors.badRequest, 'malformed request target');
      ex.path = path;
    }
    const route = table.lookup(hostname);
    if (route === undefined) return ex.reply(routerErrors.noSuchApp, `no app at ${hostname}`);
    ex.route = route;
    if (route.backends.length === 0) return ex.reply(routerErrors.noRunningInstances, `no running instances of ${route.appName}`);
    ex.start(route);
  }

  /** A request from another node's router: to the named instance of this node, nothing else. */
  function onHopRequest(req: IncomingMessage, res: ServerResponse): void {
    shared.inflight++;
    const hop = scanHopRequest(req.rawHeaders, false);
    const ex = new Exchange(shared, req, res, hop);
    ex.hopped = true;
    ex.hostname = hosts.get(hop.host);
    const refused = hopRefusal(hop, (t) => table.acceptsToken(t), peerNodeId(req.socket), (n) => table.isClusterMember(n));
    if (refused !== null) return ex.reply(refused.err, refused.message);
    const backend = table.localInstance(hop.instanceId!, opts.runningAt);
    if (backend === undefined) return ex.reply(routerErrors.instanceNotOnNode, `instance ${hop.instanceId} does not run on node ${opts.nodeId} (or is not in its route table yet)`);
    ex.start(hopRoute(ex.hostname, backend));
  }

  // ---- server ------------------------------------------------------------------------------

  const server = http.createServer({ requireHostHeader: false, requestTimeout: 0, headersTimeout: 60_000, noDelay: true }, onRequest);
  server.keepAliveTimeout = opts.keepAliveTimeoutMs ?? 65_000;
  const onUpgrade = (req: IncomingMessage, socket: Socket, head: Buffer): void => {
    const p = (socket as TLSSocket).encrypted ? 'https' : proto;
    proxyUpgrade({ table, hosts, proto: p, connectTimeoutMs, unhealthyMs, logger, metrics, upgraded, closing: () => shared.closing, clusterToken: () => table.clusterToken, connectVia }, req, socket, head);
  };
  server.on('upgrade', onUpgrade);
  const onClientError = (err: NodeJS.ErrnoException, socket: Socket): void => {
    const busy = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent;
    if (err.code === 'ECONNRESET' || !socket.writable || busy) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    const body = 'bad request\n';
    socket.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\nX-Shellwego-Error: ${routerErrors.badRequest.code}\r\nConnection: close\r\n\r\n${body}`);
  };
  server.on('clientError', onClientError);

  let clusterServer: https.Server | null = null;
  if (opts.cluster && clusterTls !== null) {
    // Mutual TLS only: a peer without a certificate from the install CA fails the handshake.
    clusterServer = https.createServer({ ...clusterTls.serverOptions(), requireHostHeader: false, requestTimeout: 0, headersTimeout: 60_000, noDelay: true }, onHopRequest);
    clusterServer.keepAliveTimeout = server.keepAliveTimeout;
    clusterServer.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      const hop = scanHopRequest(req.rawHeaders, true);
      const refused = hopRefusal(hop, (t) => table.acceptsToken(t), peerNodeId(socket), (n) => table.isClusterMember(n));
      const backend = refused === null ? table.localInstance(hop.instanceId!, opts.runningAt) : undefined;
      const failure = refused ?? (backend === undefined ? { err: routerErrors.instanceNotOnNode, message: `instance ${hop.instanceId} does not run on node ${opts.nodeId}` } : null);
      proxyUpgrade(
        { table, hosts, proto, connectTimeoutMs, unhealthyMs, logger, metrics, upgraded, closing: () => shared.closing, clusterToken: () => table.clusterToken, connectVia },
        req, socket, head, { scan: hop, route: backend === undefined ? null : hopRoute(hosts.get(hop.host), backend), failure },
      );
    });
    clusterServer.on('clientError', onClientError);
    // Handshakes that fail (no certificate, another CA) end there; logged at debug, they are not the cluster's traffic.
    clusterServer.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => logger?.debug({ err: err.code ?? err.message, from: socket.remoteAddress }, 'cluster listener refused a TLS client'));
  }

  // ---- route table from the bus ------------------------------------------------------------

  // Chunks of a full table are gathered until whole; a delta applies only on the version it is based on.
  const assembler = new RouteTableAssembler();
  let gapRequestedAt = 0;
  const onTable = (msg: unknown): void => {
    const got = assembler.accept(msg, table.held());
    if (got === 'gap') {
      // Missed a change: keep serving the held table and ask for the full one (once a second at most).
      if (Date.now() - gapRequestedAt >= 1_000) {
        gapRequestedAt = Date.now();
        logger?.info({ version: table.version }, 'route delta does not follow the held table: requesting the full table');
        requestTable();
      }
      return;
    }
    if (got === 'pending' || got === 'ignored') return void logger?.debug({ result: got }, 'route message held back');
    const before = table.version;
    const { result, reason, removed } = table.apply(got.table);
    if (removed) for (const b of removed) pool.dropBackend(b);
    if (result === 'applied') logger?.info({ version: table.version, previous: before, hosts: Object.keys(table.held()?.routes ?? {}).length }, 'route table applied');
    else logger?.debug({ result, reason }, 'route table ignored');
  };
  const subscription: Subscription = opts.bus.subscribe<unknown>(subjects.routes, onTable);
  const requestTable = (): void => {
    opts.bus.publish(subjects.routesRequest, {}).catch((err: unknown) => logger?.warn({ err }, 'could not request the route table'));
  };
  // Ask again while we have nothing, then whenever the table has gone stale.
  const refresh = setInterval(() => {
    const age = table.age();
    if (age === Infinity || age >= staleAfterMs) requestTable();
  }, Math.max(50, Math.min(staleAfterMs, 2_000)));
  refresh.unref();
  const sweep = setInterval(() => pool.sweep(table.allBackends()), 1_000);
  sweep.unref();
  // With NATS authentication a node may publish stats only as itself: the control plane takes the id from the subject.
  const routerId = opts.routerId ?? opts.nodeId ?? `rtr_${Math.random().toString(36).slice(2, 10)}`;
  const reportStats = (): void => {
    const instances: RouterStatsMessage['instances'] = {};
    let any = false;
    for (const b of table.allBackends()) {
      if (b.requests === 0) continue;
      instances[b.instanceId] = { requests: b.requests, failed: b.failed };
      b.requests = 0;
      b.failed = 0;
      any = true;
    }
    if (!any) return;
    opts.bus.publish(subjects.routerStats(routerId), { routerId, at: new Date().toISOString(), instances } satisfies RouterStatsMessage)
      .catch((err: unknown) => logger?.warn({ err }, 'could not publish router stats'));
  };
  const stats = setInterval(reportStats, opts.statsIntervalMs ?? 2_000);
  stats.unref();

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => logger?.error({ err }, 'router server error'));
  const httpsPort = tlsFront ? await tlsFront.listen(opts.host, onRequest, onUpgrade, onClientError, server.keepAliveTimeout) : null;
  let clusterPort: number | null = null;
  if (clusterServer !== null) {
    const cs = clusterServer;
    await new Promise<void>((resolve, reject) => {
      cs.once('error', reject);
      cs.listen(opts.cluster!.port, opts.cluster!.host, () => {
        cs.off('error', reject);
        resolve();
      });
    }).catch(async (err: NodeJS.ErrnoException) => {
      await new Promise((r) => server.close(r));
      throw Object.assign(new Error(`router cluster listener on ${opts.cluster!.host}:${opts.cluster!.port}: ${err.message}`), { code: err.code });
    });
    cs.on('error', (err) => logger?.error({ err }, 'router cluster listener error'));
    clusterPort = (cs.address() as { port: number }).port;
    logger?.info({ host: opts.cluster!.host, port: clusterPort, nodeId: opts.nodeId }, 'router cluster listener up');
  }
  requestTable();
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : opts.port;
  logger?.info({ host: opts.host, port }, 'router listening');

  let closed: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      shared.closing = true;
      clearInterval(refresh);
      clearInterval(sweep);
      clearInterval(stats);
      subscription.unsubscribe();
      pool.closeIdle();
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      const clusterStopped = clusterServer === null ? null : new Promise<void>((resolve) => clusterServer!.close(() => resolve()));
      clusterServer?.closeIdleConnections();
      const tlsStopped = tlsFront?.stop();
      server.closeIdleConnections();
      // WebSockets never finish on their own: end them now (clients reconnect).
      for (const s of upgraded) s.end();
      if (shared.inflight > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, drainTimeoutMs);
          timer.unref();
          drained = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      server.closeAllConnections();
      clusterServer?.closeAllConnections();
      tlsFront?.closeAllConnections();
      for (const s of upgraded) s.destroy();
      pool.destroyAll();
      await stopped;
      await clusterStopped;
      await tlsStopped;
    })();
    return closed;
  };

  const setClusterIdentity = (identity: ClusterIdentity): void => {
    if (clusterTls === null || clusterServer === null) throw new Error('this router has no cluster listener');
    clusterTls.set(identity);
    clusterServer.setSecureContext(clusterTls.serverOptions());
  };

  return { port, httpsPort, clusterPort, close, table: () => table.snapshot(), routesVersion: () => table.version, setClusterIdentity };
}

/** A one-backend route for a request another router sent to this node's instance (no retry elsewhere). */
function hopRoute(hostname: string | null, backend: Backend): Route {
  return { hostname: hostname ?? '', appId: '', appName: `instance ${backend.instanceId}`, backends: [backend], next: 0, weights: null, current: null };
}

/** Whether a 502 from another node's router says the request never reached an instance. */
function undelivered(headers: string[]): boolean {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i].toLowerCase() === 'x-shellwego-error') return UNDELIVERED_CODES.has(headers[i + 1]);
  }
  return false;
}

/** Absolute-form request target (`GET http://host/path`) → origin-form; `*` kept; else null. */
function originForm(target: string): string | null {
  if (target === '*') return target;
  try {
    const url = new URL(target);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
    return url.pathname + url.search;
  } catch {
    return null;
  }
}
