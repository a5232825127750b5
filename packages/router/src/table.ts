import { timingSafeEqual as cryptoEqual } from 'node:crypto';
import type { RouteTableMessage } from '@shellwego/core';
import type { UpstreamConn } from './upstream.ts';

/**
 * One backend (an app instance's host:port). The object is shared by every table version that
 * lists the same address, so its passive-health state survives table replacements, and an
 * in-flight request keeps a reference to it whatever happens to the table.
 */
export interface Backend {
  instanceId: string;
  /** host:port as published by the control plane. */
  address: string;
  /** Where connections go: the instance's address, or for another node's instance that node's router (`via`). */
  host: string;
  port: number;
  /** The node it runs on, when the table says. */
  nodeId: string | null;
  /** host:port of the other node's router cluster listener it is reached through; null = direct. */
  via: string | null;
  /** Epoch ms until which the backend is skipped after a connect failure (0 = healthy). */
  unhealthyUntil: number;
  /** Idle keep-alive connections, most recently used last (managed by UpstreamPool). */
  idle: UpstreamConn[];
  /** Set once a table without this backend is applied: its connections are no longer pooled. */
  removed: boolean;
  /** Requests answered through this backend, and those that failed (5xx or no answer), since the last stats report. */
  requests: number;
  failed: number;
}

export interface Route {
  hostname: string;
  appId: string;
  appName: string;
  backends: Backend[];
  /** Round-robin cursor: index of the backend to try first for the next request. */
  next: number;
  /** Per-backend weights (same order as `backends`) when the table gives any; null = plain round-robin. */
  weights: number[] | null;
  /** Smooth weighted round-robin state (nginx's algorithm): spreads picks evenly, not in bursts. */
  current: number[] | null;
  /** Per-host TLS flags (custom domains), see tls.ts. */
  redirectHttps?: boolean;
  hstsMaxAge?: number;
}

export type ApplyResult = 'applied' | 'stale' | 'invalid';

/** `ip:port`, `host:port` or `[v6]:port` → host and port; null when it is not one of those. */
export function parseAddress(address: string): { host: string; port: number } | null {
  if (typeof address !== 'string') return null;
  let host: string;
  let portText: string;
  if (address.startsWith('[')) {
    const end = address.indexOf(']');
    if (end < 0 || address[end + 1] !== ':') return null;
    host = address.slice(1, end);
    portText = address.slice(end + 2);
  } else {
    const colon = address.lastIndexOf(':');
    if (colon <= 0) return null;
    host = address.slice(0, colon);
    portText = address.slice(colon + 1);
    if (host.includes(':')) return null;
  }
  if (!/^\d{1,5}$/.test(portText)) return null;
  const port = Number(portText);
  if (port < 1 || port > 65535 || !host) return null;
  return { host, port };
}

const HOSTNAME_RE = /^[a-z0-9_.-]+$/;
const PORT_RE = /^\d{0,5}$/;

/**
 * Host header → route key: lowercased, port and a trailing dot removed. IPv6 literals keep their
 * brackets. Null when the header is missing or is not a plausible host (the caller answers 400).
 */
export function normalizeHost(raw: string | undefined): string | null {
  if (!raw) return null;
  let h = raw.trim().toLowerCase();
  if (h.charCodeAt(0) === 91 /* [ */) {
    const end = h.indexOf(']');
    if (end < 2) return null;
    const rest = h.slice(end + 1);
    if (rest && (rest[0] !== ':' || !PORT_RE.test(rest.slice(1)))) return null;
    const literal = h.slice(1, end);
    if (!/^[0-9a-f:.]+$/.test(literal)) return null;
    return h.slice(0, end + 1);
  }
  const colon = h.indexOf(':');
  if (colon >= 0) {
    if (!PORT_RE.test(h.slice(colon + 1))) return null;
    h = h.slice(0, colon);
  }
  if (h.endsWith('.')) h = h.slice(0, -1);
  if (!h || h.length > 253 || !HOSTNAME_RE.test(h) || h.includes('..')) return null;
  return h;
}

/**
 * The router's copy of the control plane's route table. `apply` swaps in a whole new table in one
 * assignment (requests never see half a table) and refuses out-of-order (older) versions.
 */
export class RouteTable {
  private message: RouteTableMessage | null = null;
  private routes = new Map<string, Route>();
  private backends = new Map<string, Backend>();
  private receivedAt = 0;
  /** This node's instances by id (what the cluster listener may forward to), and those removed lately. */
  private local = new Map<string, Backend>();
  private lingering = new Map<string, { backend: Backend; until: number }>();
  /** Cluster tokens accepted from other routers: the current table's, and the one before it. */
  private tokens: string[] = [];

  /**
   * @param staleAfterMs a table older than this may be replaced by a lower version: the control
   *   plane's counter restarts at 1 when it restarts, and the router must follow it.
   * @param localNodeId the node this router runs on: other nodes' instances go through their routers.
   * @param hops whether this router can hop (it has its node's cluster certificate, cluster.ts);
   *   without one it reaches every instance directly, as before cross-node routing.
   */
  constructor(private readonly staleAfterMs: number, private readonly localNodeId: string | null = null, private readonly hops = localNodeId !== null) {}

  get version(): number | null {
    return this.message ? this.message.version : null;
  }

  /** Milliseconds since the held table was accepted (Infinity when none). */
  age(now = Date.now()): number {
    return this.message ? now - this.receivedAt : Infinity;
  }

  lookup(hostname: string): Route | undefined {
    return this.routes.get(hostname);
  }

  /** Deep copy of the table as last accepted (empty version 0 before the first one). */
  snapshot(): RouteTableMessage {
    return this.message ? structuredClone(this.message) : { version: 0, routes: {} };
  }

  /** The table as last accepted, not copied (read-only: a delta is applied on top of it); null before the first. */
  held(): RouteTableMessage | null {
    return this.message;
  }

  /** Every backend of the current table. */
  allBackends(): IterableIterator<Backend> {
    return this.backends.values();
  }

  /** The cluster token this router presents to other nodes' routers (undefined: none published). */
  get clusterToken(): string | undefined {
    return this.message?.clusterToken;
  }

  /** Whether `nodeId` is in the current table's `nodes` map: the nodes whose routers may hop here (ADR 0022). */
  isClusterMember(nodeId: string): boolean {
    const nodes = this.message?.nodes;
    return nodes !== undefined && Object.hasOwn(nodes, nodeId);
  }

  /** Whether another router's token is one of the control plane's (current, or the one before). */
  acceptsToken(token: string): boolean {
    return this.tokens.some((t) => timingSafeEqual(t, token));
  }

  /**
   * This node's instance `instanceId` for a request from another node's router: in the table, or
   * removed from it lately (the other router may hold an older table for a moment, and a removed
   * instance keeps running through its drain time) if `runningAt` confirms it still runs at that
   * address — addresses are reused at once, and another tenant's instance may have it by now.
   */
  localInstance(instanceId: string, runningAt?: (instanceId: string) => string | null, now = Date.now()): Backend | undefined {
    const b = this.local.get(instanceId);
    if (b !== undefined) return b;
    const l = this.lingering.get(instanceId);
    if (l === undefined || l.until <= now || runningAt === undefined) return undefined;
    return runningAt(instanceId) === l.backend.address ? l.backend : undefined;
  }

  /**
   * Replaces the table with `msg` unless it is invalid or older than the one held. `removed`
   * lists backends the new table no longer has (their pooled connections can be closed).
   */
  apply(msg: unknown, now = Date.now()): { result: ApplyResult; reason?: string; removed?: Backend[] } {
    const checked = validate(msg);
    if (typeof checked === 'string') return { result: 'invalid', reason: checked };
    if (this.message) {
      const held = this.message.version;
      if (checked.version === held) {
        // The control plane republishes an unchanged table as it is: the held one is current.
        this.receivedAt = now;
        return { result: 'stale', reason: `version ${checked.version} already held` };
      }
      if (checked.version < held && now - this.receivedAt <= this.staleAfterMs) {
        return { result: 'stale', reason: `version ${checked.version} is older than held ${held}` };
      }
    }
    const backends = new Map<string, Backend>();
    const routes = new Map<string, Route>();
    const nodes = checked.nodes ?? {};
    for (const [rawHost, entry] of Object.entries(checked.routes)) {
      const hostname = normalizeHost(rawHost);
      if (!hostname) continue;
      const list: Backend[] = [];
      const weights: number[] = [];
      for (const b of entry.backends) {
        // Another node's instance goes through that node's router when the table names it.
        const via = this.hops && b.nodeId !== undefined && b.nodeId !== this.localNodeId && nodes[b.nodeId] !== undefined ? nodes[b.nodeId] : null;
        const key = via === null ? `${b.instanceId}@${b.address}` : `${b.instanceId}@${b.address}>${via}`;
        let backend = backends.get(key) ?? this.backends.get(key);
        if (!backend) {
          const parsed = parseAddress(via ?? b.address)!;
          backend = {
            instanceId: b.instanceId, address: b.address, host: parsed.host, port: parsed.port, nodeId: b.nodeId ?? null, via,
            unhealthyUntil: 0, idle: [], removed: false, requests: 0, failed: 0,
          };
        }
        backends.set(key, backend);
        list.push(backend);
        weights.push(b.weight ?? 1);
      }
      const weighted = weights.some((w) => w !== 1);
      const previous = this.routes.get(hostname);
      routes.set(hostname, {
        hostname, appId: entry.appId, appName: entry.appName, backends: list,
        next: previous && list.length ? previous.next % list.length : 0,
        weights: weighted ? weights : null, current: weighted ? weights.map(() => 0) : null,
        ...tlsFlags(entry),
      });
    }
    const removed: Backend[] = [];
    for (const [key, b] of this.backends) {
      if (!backends.has(key)) {
        b.removed = true;
        removed.push(b);
      }
    }
    if (this.localNodeId !== null) {
      const local = new Map<string, Backend>();
      for (const b of backends.values()) if (b.via === null && b.nodeId === this.localNodeId) local.set(b.instanceId, b);
      for (const [id, l] of this.lingering) if (l.until <= now || local.has(id)) this.lingering.delete(id);
      for (const [id, b] of this.local) if (!local.has(id)) this.lingering.set(id, { backend: b, until: now + LINGER_MS });
      this.local = local;
    }
    if (checked.clusterToken !== undefined && checked.clusterToken !== this.tokens[0]) this.tokens = [checked.clusterToken, ...this.tokens.slice(0, 1)];
    this.message = checked;
    this.routes = routes;
    this.backends = backends;
    this.receivedAt = now;
    return { result: 'applied', removed };
  }
}

/**
 * Round-robin pick, skipping backends marked unhealthy and those already tried for this request.
 * When every candidate is marked unhealthy it still returns one (the mark may be out of date, and
 * trying beats refusing), so a lone backend that blipped is retried rather than shunned.
 */
export function pickBackend(route: Route, now: number, tried: Backend[] | null): Backend | undefined {
  const list = route.backends;
  const n = list.length;
  if (n === 0) return undefined;
  if (route.weights !== null) return pickWeighted(route, now, tried);
  const start = route.next % n;
  let fallback = -1;
  for (let i = 0; i < n; i++) {
    const idx = (start + i) % n;
    const b = list[idx];
    if (tried !== null && tried.includes(b)) continue;
    if (b.unhealthyUntil <= now) {
      route.next = idx + 1;
      return b;
    }
    if (fallback < 0) fallback = idx;
  }
  if (fallback < 0) return undefined;
  route.next = fallback + 1;
  return list[fallback];
}

/**
 * Smooth weighted round-robin over healthy, untried backends with weight > 0; falls back like
 * `pickBackend` (an unhealthy or zero-weight backend beats refusing the request).
 */
function pickWeighted(route: Route, now: number, tried: Backend[] | null): Backend | undefined {
  const list = route.backends;
  const weights = route.weights!;
  const current = route.current!;
  let best = -1;
  let total = 0;
  let fallback = -1;
  for (let i = 0; i < list.length; i++) {
    const b = list[i];
    if (tried !== null && tried.includes(b)) continue;
    if (b.unhealthyUntil > now || weights[i] <= 0) {
      if (fallback < 0) fallback = i;
      continue;
    }
    current[i] += weights[i];
    total += weights[i];
    if (best < 0 || current[i] > current[best]) best = i;
  }
  if (best < 0) return fallback < 0 ? undefined : list[fallback];
  current[best] -= total;
  return list[best];
}

function validate(msg: unknown): RouteTableMessage | string {
  if (!msg || typeof msg !== 'object') return 'not an object';
  const m = msg as Record<string, unknown>;
  if (typeof m.version !== 'number' || !Number.isFinite(m.version)) return 'version is not a number';
  if (!m.routes || typeof m.routes !== 'object' || Array.isArray(m.routes)) return 'routes is not an object';
  const routes: RouteTableMessage['routes'] = {};
  for (const [host, value] of Object.entries(m.routes as Record<string, unknown>)) {
    if (!value || typeof value !== 'object') continue;
    const r = value as Record<string, unknown>;
    if (typeof r.appId !== 'string' || typeof r.appName !== 'string' || !Array.isArray(r.backends)) continue;
    const backends: RouteTableMessage['routes'][string]['backends'] = [];
    for (const b of r.backends as unknown[]) {
      if (!b || typeof b !== 'object') continue;
      const { instanceId, address, weight, nodeId } = b as Record<string, unknown>;
      if (typeof instanceId !== 'string' || typeof address !== 'string' || !parseAddress(address)) continue;
      const w = typeof weight === 'number' && Number.isFinite(weight) && weight >= 0 ? Math.min(weight, 1_000_000) : undefined;
      backends.push({ instanceId, address, ...(w === undefined ? {} : { weight: w }), ...(typeof nodeId === 'string' && nodeId ? { nodeId } : {}) });
    }
    routes[host] = { appId: r.appId, appName: r.appName, backends, ...tlsFlags(r) };
  }
  const out: RouteTableMessage = { version: m.version, routes };
  if (m.nodes && typeof m.nodes === 'object' && !Array.isArray(m.nodes)) {
    const nodes: Record<string, string> = {};
    for (const [id, endpoint] of Object.entries(m.nodes as Record<string, unknown>)) if (typeof endpoint === 'string' && parseAddress(endpoint)) nodes[id] = endpoint;
    out.nodes = nodes;
  }
  if (typeof m.clusterToken === 'string' && m.clusterToken.length >= 16) out.clusterToken = m.clusterToken;
  return out;
}

/** How long a removed local instance stays reachable from other routers (they may hold an older table). */
const LINGER_MS = 30_000;

function timingSafeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && cryptoEqual(x, y);
}

/** The optional per-host TLS flags of a route entry, when well-formed. */
function tlsFlags(entry: object): { redirectHttps?: boolean; hstsMaxAge?: number } {
  const r = entry as Record<string, unknown>;
  const out: { redirectHttps?: boolean; hstsMaxAge?: number } = {};
  if (r.redirectHttps === true) out.redirectHttps = true;
  if (typeof r.hstsMaxAge === 'number' && Number.isInteger(r.hstsMaxAge) && r.hstsMaxAge > 0) out.hstsMaxAge = r.hstsMaxAge;
  return out;
}

/** Bounded memo of Host header → route key; the same few Host values repeat on every request. */
export class HostCache {
  private map = new Map<string, string | null>();
  get(raw: string | undefined): string | null {
    if (raw === undefined) return null;
    let v = this.map.get(raw);
    if (v === undefined) {
      v = normalizeHost(raw);
      if (this.map.size >= 1024) this.map.clear();
      this.map.set(raw, v);
    }
    return v;
  }
}
