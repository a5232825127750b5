/**
 * Route table (and certificates, and a node's assignments) over the bus at any size: a full table too large for one message (NATS refuses
 * payloads over max_payload, 1 MB by default; at 10,000 apps the table is megabytes) goes as
 * chunks of one version, and changes go as deltas against the version before. A router swaps in a
 * table only when it is whole: all chunks of one version, or a delta whose base it holds.
 */
import type { AssignmentsMessage, CertificatesMessage, InstanceStatusMessage, InstanceStatusReport, RouteTableMessage } from './messages.ts';

/** Serialised size a route message stays under (well below NATS's 1 MB default max_payload). */
export const ROUTE_CHUNK_BYTES = 256 * 1024;

type Routes = RouteTableMessage['routes'];

/**
 * `items` in groups that each fit one message of at most `maxBytes` next to `headBytes` of
 * envelope, or null when all of them fit in one. An item too large for any message is an error
 * (`what` names it).
 */
function packItems<T>(items: T[], sizeOf: (item: T) => number, headBytes: number, maxBytes: number, what: (item: T, bytes: number) => string): T[][] | null {
  const parts: T[][] = [];
  let part: T[] = [];
  let size = headBytes;
  let total = headBytes;
  for (const item of items) {
    const bytes = sizeOf(item);
    if (headBytes + bytes > maxBytes) throw new Error(`${what(item, bytes)}: larger than a message may be (${maxBytes})`);
    if (size + bytes > maxBytes) {
      parts.push(part);
      part = [];
      size = headBytes;
    }
    part.push(item);
    size += bytes;
    total += bytes;
  }
  if (total <= maxBytes) return null;
  parts.push(part);
  return parts;
}

const jsonBytes = (v: unknown) => Buffer.byteLength(JSON.stringify(v));

/** `table` as messages each at most `maxBytes` serialised: itself when it fits, else chunks (every one with nodes and token). */
export function splitRouteTable(table: RouteTableMessage, maxBytes = ROUTE_CHUNK_BYTES): RouteTableMessage[] {
  const { version, routes, chunk: _c, delta: _d, ...rest } = table;
  const whole: RouteTableMessage = { version, routes, ...rest };
  const head = jsonBytes({ ...whole, routes: {}, chunk: { index: 0, count: 0 } }) + 64;
  const parts = packItems(Object.entries(routes), ([host, entry]) => jsonBytes(host) + jsonBytes(entry) + 2, head, maxBytes, ([host], bytes) => `route entry for ${host} is ${bytes} bytes`);
  if (parts === null) return [whole];
  return parts.map((p, index) => ({ version, routes: Object.fromEntries(p), ...rest, chunk: { index, count: parts.length } }));
}

/**
 * What changed from `prev` to `next` as one delta message (hosts added or changed in `routes`,
 * gone in `delta.removed`; nodes and token ride along), or null when it would not fit in
 * `maxBytes` (then the full table goes instead).
 */
export function routeTableDelta(prev: RouteTableMessage, next: RouteTableMessage, maxBytes = ROUTE_CHUNK_BYTES): RouteTableMessage | null {
  const changed: Routes = {};
  for (const [host, entry] of Object.entries(next.routes)) {
    const before = prev.routes[host];
    // Unchanged entries are mostly the same object (the deployer keeps them per app): no JSON needed.
    if (before !== entry && (before === undefined || JSON.stringify(before) !== JSON.stringify(entry))) changed[host] = entry;
  }
  const removed = Object.keys(prev.routes).filter((h) => !(h in next.routes));
  const msg: RouteTableMessage = {
    version: next.version, routes: changed, delta: { base: prev.version, removed },
    ...(next.nodes ? { nodes: next.nodes } : {}), ...(next.clusterToken !== undefined ? { clusterToken: next.clusterToken } : {}),
  };
  return Buffer.byteLength(JSON.stringify(msg)) <= maxBytes ? msg : null;
}

/**
 * Chunks of one version, in index order once all arrived; a newer version abandons an older
 * incomplete one (its missing chunks will never come), an older one or a malformed chunk is ignored.
 */
class ChunkCollector<M extends { chunk?: { index: number; count: number } }> {
  private pending: { version: number; count: number; parts: Map<number, M> } | null = null;

  /** `versionOf`: what orders the messages (a table's version, an assignment set's generation). */
  constructor(private readonly versionOf: (m: M) => number) {}

  add(m: M): M[] | 'pending' | 'ignored' {
    if (!m.chunk || typeof m.chunk !== 'object') return 'ignored';
    const { index, count } = m.chunk;
    const version = this.versionOf(m);
    if (typeof version !== 'number' || !Number.isInteger(index) || !Number.isInteger(count) || index < 0 || index >= count || count > 100_000) return 'ignored';
    if (this.pending !== null && version < this.pending.version) return 'ignored';
    if (this.pending === null || version > this.pending.version) this.pending = { version, count, parts: new Map() };
    if (count !== this.pending.count) return 'ignored';
    this.pending.parts.set(index, m);
    if (this.pending.parts.size < count) return 'pending';
    const parts = [...this.pending.parts.entries()].sort((a, b) => a[0] - b[0]).map(([, p]) => p);
    this.pending = null;
    return parts;
  }
}

/**
 * The router's side: turns the messages on `router.routes` into whole tables. `accept` returns a
 * whole table to apply, 'pending' (chunks of a version still missing), 'gap' (a delta whose base
 * is not the table held: ask for the full table and keep serving the held one), or 'ignored'.
 */
export class RouteTableAssembler {
  private readonly chunks = new ChunkCollector<RouteTableMessage>((m) => m.version);

  /** `held`: the table the router serves now (null: none yet). */
  accept(msg: unknown, held: RouteTableMessage | null): { table: RouteTableMessage } | 'pending' | 'gap' | 'ignored' {
    if (!msg || typeof msg !== 'object') return { table: msg as RouteTableMessage }; // the table's own checks refuse it
    const m = msg as RouteTableMessage;
    if (m.delta !== undefined) {
      if (!m.delta || typeof m.delta.base !== 'number' || !Array.isArray(m.delta.removed) || !m.routes || typeof m.routes !== 'object') return 'ignored';
      if (held !== null && m.version === held.version) return { table: m }; // a copy of what is held: refreshes its age
      if (held === null || held.version !== m.delta.base) return held !== null && m.version < held.version ? 'ignored' : 'gap';
      const routes: Routes = { ...held.routes, ...m.routes };
      for (const h of m.delta.removed) delete routes[h];
      const { delta: _d, ...rest } = m;
      return { table: { ...rest, routes, ...(m.nodes ? {} : held.nodes ? { nodes: held.nodes } : {}), ...(m.clusterToken !== undefined || held.clusterToken === undefined ? {} : { clusterToken: held.clusterToken }) } };
    }
    if (m.chunk === undefined) return { table: m };
    const parts = this.chunks.add(m);
    if (typeof parts === 'string') return parts;
    const routes: Routes = {};
    for (const p of parts) if (p.routes && typeof p.routes === 'object') Object.assign(routes, p.routes);
    const { chunk: _c, ...first } = parts[0];
    return { table: { ...first, routes } };
  }
}

/** Certificates (with keys) for routers as messages each at most `maxBytes`: itself when it fits, else chunks of one version. */
export function splitCertificates(msg: CertificatesMessage, maxBytes = ROUTE_CHUNK_BYTES): CertificatesMessage[] {
  const head = jsonBytes({ version: msg.version, certificates: [], chunk: { index: 0, count: 0 } }) + 64;
  const parts = packItems(msg.certificates, (c) => jsonBytes(c) + 1, head, maxBytes, (c, bytes) => `certificate for ${c.hostnames.join(', ')} is ${bytes} bytes`);
  if (parts === null) return [{ version: msg.version, certificates: msg.certificates }];
  return parts.map((certificates, index) => ({ version: msg.version, certificates, chunk: { index, count: parts.length } }));
}

/** The router's side of splitCertificates: a whole message once every chunk of one version arrived (a newer version abandons an older one). */
export class CertificatesAssembler {
  private readonly chunks = new ChunkCollector<CertificatesMessage>((m) => m.version);

  accept(msg: unknown): { message: CertificatesMessage } | 'pending' | 'ignored' {
    if (!msg || typeof msg !== 'object' || (msg as CertificatesMessage).chunk === undefined) return { message: msg as CertificatesMessage };
    const m = msg as CertificatesMessage;
    if (!Array.isArray(m.certificates)) return 'ignored';
    const parts = this.chunks.add(m);
    if (typeof parts === 'string') return parts;
    return { message: { version: m.version, certificates: parts.flatMap((p) => p.certificates) } };
  }
}

/**
 * A status report in messages under `maxBytes` each (one when it fits); each part is a report of
 * its own. A status larger than that alone (last lines full of escaped bytes) goes in a part by
 * itself, as it would as a single status: the report never fails for one instance's output.
 */
export function splitStatusReport(msg: InstanceStatusReport, maxBytes = ROUTE_CHUNK_BYTES): InstanceStatusReport[] {
  const head = jsonBytes({ ...msg, statuses: [] });
  const fits: InstanceStatusMessage[] = [];
  const alone: InstanceStatusReport[] = [];
  for (const s of msg.statuses) {
    if (head + jsonBytes(s) + 1 > maxBytes) alone.push({ nodeId: msg.nodeId, statuses: [s] });
    else fits.push(s);
  }
  const parts = packItems(fits, (s) => jsonBytes(s) + 1, head, maxBytes, (s, bytes) => `the status of instance ${s.instanceId} is ${bytes} bytes`);
  const packed = parts ? parts.map((statuses) => ({ nodeId: msg.nodeId, statuses })) : fits.length > 0 ? [{ nodeId: msg.nodeId, statuses: fits }] : [];
  return alone.length === 0 && packed.length === 1 && fits.length === msg.statuses.length ? [msg] : [...packed, ...alone];
}

/**
 * A node's assignment set as messages each at most `maxBytes`: itself when it fits, else chunks
 * of one generation (a node given thousands of instances in one pass is over NATS's max_payload).
 */
export function splitAssignments(msg: AssignmentsMessage, maxBytes = ROUTE_CHUNK_BYTES): AssignmentsMessage[] {
  const { nodeId, generation, instances } = msg;
  const head = jsonBytes({ nodeId, generation, instances: [], chunk: { index: 0, count: 0 } }) + 64;
  const parts = packItems(instances, (spec) => jsonBytes(spec) + 1, head, maxBytes, (spec, bytes) => `the spec of instance ${spec.instanceId} is ${bytes} bytes`);
  if (parts === null) return [{ nodeId, generation, instances }];
  return parts.map((p, index) => ({ nodeId, generation, instances: p, chunk: { index, count: parts.length } }));
}

/** The agent's side of splitAssignments: a whole set once every chunk of one generation arrived. */
export class AssignmentsAssembler {
  private readonly chunks = new ChunkCollector<AssignmentsMessage>((m) => m.generation);

  accept(msg: unknown): { message: AssignmentsMessage } | 'pending' | 'ignored' {
    if (!msg || typeof msg !== 'object' || (msg as AssignmentsMessage).chunk === undefined) return { message: msg as AssignmentsMessage };
    const m = msg as AssignmentsMessage;
    if (!Array.isArray(m.instances)) return 'ignored';
    const parts = this.chunks.add(m);
    if (typeof parts === 'string') return parts;
    return { message: { nodeId: m.nodeId, generation: m.generation, instances: parts.flatMap((p) => p.instances) } };
  }
}
