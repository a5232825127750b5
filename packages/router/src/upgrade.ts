import http from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { pickBackend } from './table.ts';
import type { Backend, HostCache, Route, RouteTable } from './table.ts';
import { forwardContext, rawResponseHead, responseHeaders, scanRequestHeaders, switchingHeaders } from './headers.ts';
import { connectTimeoutError, routerErrors } from './errors.ts';
import type { RouterError } from './errors.ts';
import type { RouterMetrics } from './metrics.ts';
import type { ScannedRequest } from './headers.ts';
import { hopHeaders } from './cluster.ts';

export interface UpgradeDeps {
  table: RouteTable;
  hosts: HostCache;
  proto: 'http' | 'https';
  connectTimeoutMs: number;
  unhealthyMs: number;
  logger: Logger | undefined;
  metrics: RouterMetrics | null;
  /** Both sockets of every live upgraded connection (ended, then destroyed, by `close()`). */
  upgraded: Set<Socket>;
  closing: () => boolean;
  /** The cluster token for another node's router (cluster.ts). */
  clusterToken: () => string | undefined;
  /** Opens the mutual-TLS connection to another node's router (backends with `via`); see upstream.ts. */
  connectVia?: (backend: Backend) => Socket;
}

/** An upgrade another node's router sent to the cluster listener: checked there, headers kept as sent. */
export interface HopUpgrade {
  scan: ScannedRequest;
  /** The one local instance it goes to (null when refused). */
  route: Route | null;
  failure: { err: RouterError; message: string } | null;
}

const REASONS: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 502: 'Bad Gateway', 503: 'Service Unavailable' };

/**
 * Proxies an HTTP Upgrade (WebSocket and the like): picks a backend like a normal request
 * (retrying connect failures on the next one), forwards the handshake, and once the backend
 * answers 101 splices the two sockets together byte for byte. A backend that declines the
 * upgrade has its answer relayed and the connection closed.
 */
export function proxyUpgrade(deps: UpgradeDeps, req: IncomingMessage, socket: Socket, head: Buffer, hop?: HopUpgrade): void {
  // Hold client bytes (the first WebSocket frames may follow the handshake) until spliced.
  socket.pause();
  const started = Date.now();
  let clientGone = false;
  socket.on('error', () => socket.destroy());
  socket.once('close', () => {
    clientGone = true;
  });
  const scan = hop?.scan ?? scanRequestHeaders(req.rawHeaders, forwardContext(socket, deps.proto), true);
  const hostname = deps.hosts.get(scan.host);
  let backend: Backend | null = null;
  let appName: string | null = null;

  const log = (status: number): void => {
    if (deps.logger?.isLevelEnabled('info')) {
      deps.logger.info({
        method: req.method, host: hostname, path: req.url, status, durationMs: Date.now() - started, bytes: 0,
        backend: backend?.address ?? null, instanceId: backend?.instanceId ?? null, requestId: scan.requestId, appName, upgrade: scan.upgrade,
      }, 'request');
    }
    deps.metrics?.observe(status, (Date.now() - started) / 1000);
  };
  const fail = (err: RouterError, message: string): void => {
    deps.metrics?.error(err.code);
    log(err.status);
    if (clientGone || !socket.writable) return void socket.destroy();
    const body = `${message}\n`;
    socket.end(rawResponseHead(err.status, REASONS[err.status] ?? 'Error', [
      'Content-Type', 'text/plain; charset=utf-8', 'Content-Length', String(Buffer.byteLength(body)),
      'X-Shellwego-Error', err.code, 'X-Request-Id', scan.requestId, 'Connection', 'close',
    ]) + body);
  };

  if (hop?.failure) return fail(hop.failure.err, hop.failure.message);
  if (hostname === null && hop === undefined) return fail(routerErrors.badRequest, 'missing or malformed Host header');
  const route = hop?.route ?? deps.table.lookup(hostname!);
  if (route === undefined || route === null) return fail(routerErrors.noSuchApp, `no app at ${hostname}`);
  appName = route.appName;
  if (route.backends.length === 0) return fail(routerErrors.noRunningInstances, `no running instances of ${route.appName}`);
  const tried: Backend[] = [];

  const attempt = (): void => {
    const b = pickBackend(route, Date.now(), tried);
    if (b === undefined) return fail(routerErrors.backendUnavailable, `no instance of ${route.appName} is reachable`);
    backend = b;
    let connected = false;
    let settled = false;
    let headers = scan.headers;
    if (b.via !== null) {
      // Another node's instance: through that node's router (cluster.ts).
      const token = deps.clusterToken();
      if (token === undefined) return fail(routerErrors.backendUnavailable, `instance of ${route.appName} is on another node and the route table has no cluster token`);
      headers = headers.concat(hopHeaders(b.instanceId, token));
    }
    const via = b.via !== null ? deps.connectVia : undefined;
    // Without an agent, createConnection gives the request its socket: the TLS one for a hop.
    const upstream = via
      ? http.request({ host: b.host, port: b.port, method: req.method, path: req.url, headers, createConnection: () => via(b) })
      : http.request({ host: b.host, port: b.port, method: req.method, path: req.url, headers, agent: false });
    upstream.on('socket', (s: Socket) => {
      if (!via && !s.connecting) {
        connected = true;
        return;
      }
      const timer = setTimeout(() => s.destroy(connectTimeoutError(deps.connectTimeoutMs)), deps.connectTimeoutMs);
      // Over TLS the handshake (and the peer's identity check) must have succeeded too.
      s.once(via ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        connected = true;
      });
      s.once('close', () => clearTimeout(timer));
    });
    upstream.on('upgrade', (pres: IncomingMessage, psock: Socket, phead: Buffer) => {
      settled = true;
      b.unhealthyUntil = 0;
      psock.on('error', () => psock.destroy());
      if (clientGone || deps.closing()) {
        psock.destroy();
        socket.destroy();
        return;
      }
      socket.write(rawResponseHead(101, 'Switching Protocols', switchingHeaders(pres.rawHeaders, scan.requestId)));
      if (phead.length > 0) socket.write(phead);
      if (head.length > 0) psock.write(head);
      log(101);
      splice(socket, psock, deps.upgraded);
    });
    upstream.on('response', (pres: IncomingMessage) => {
      // The backend answered without switching protocols: relay that answer and close.
      settled = true;
      b.unhealthyUntil = 0;
      log(pres.statusCode ?? 502);
      if (clientGone) return void upstream.destroy();
      socket.write(rawResponseHead(pres.statusCode ?? 502, pres.statusMessage || 'Unknown', responseHeaders(pres.rawHeaders, scan.requestId, true)));
      pres.on('error', () => socket.destroy());
      pres.pipe(socket);
    });
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      if (settled) return;
      settled = true;
      if (clientGone) return;
      if (!connected) {
        b.unhealthyUntil = Date.now() + deps.unhealthyMs;
        tried.push(b);
        deps.logger?.warn({ backend: b.address, instanceId: b.instanceId, err: err.code ?? err.message }, 'backend connect failed; marked unhealthy');
        if (tried.length < route.backends.length) {
          deps.metrics?.retry();
          return attempt();
        }
        if (hop) return fail(routerErrors.instanceUnreachable, `instance ${b.instanceId} does not accept connections on this node`);
        return fail(routerErrors.backendUnavailable, `no instance of ${route.appName} is reachable`);
      }
      fail(routerErrors.backendUnavailable, `instance of ${route.appName} failed to answer`);
    });
    upstream.end();
  };
  attempt();
}

/**
 * Joins two sockets both ways. An end (FIN) on one side is passed on to the other; when either
 * side closes for good, the other is ended and destroyed shortly after if it lingers.
 */
function splice(client: Socket, upstream: Socket, live: Set<Socket>): void {
  live.add(client);
  live.add(upstream);
  client.setTimeout(0);
  client.setNoDelay(true);
  upstream.setNoDelay(true);
  const closeOther = (other: Socket): void => {
    if (other.destroyed) return;
    other.end();
    setTimeout(() => other.destroy(), 5_000).unref();
  };
  client.once('close', () => {
    live.delete(client);
    closeOther(upstream);
  });
  upstream.once('close', () => {
    live.delete(upstream);
    closeOther(client);
  });
  client.pipe(upstream);
  upstream.pipe(client);
  client.resume();
}
