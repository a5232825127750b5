/**
 * What a node reports is bound to the node that reports it (issue 4). Everything a node publishes
 * sits under `agent.<its id>.` — with NATS authentication its credentials allow no other subject —
 * and a message whose nodeId is not its subject's is dropped, so node A cannot speak for node B.
 * Reports about instances a node was not assigned change nothing, and its log lines count only for
 * instances it was assigned. Refusals are logged once per (node, instance), not per message:
 * agents republish their whole state every few seconds.
 */
import type { Logger } from 'pino';
import type { AppLogMessage, RouterStatsMessage, RouteTableMessage } from '@shellwego/core';
import type { Store } from '@shellwego/store';

/** The node id in `agent.<id>.…`, or null for any other subject. */
export function subjectNodeId(subject: string): string | null {
  const t = subject.split('.');
  return t.length >= 3 && t[0] === 'agent' && t[1] !== '' ? t[1] : null;
}

/** Remembered refusals and verified instances: bounded, forgotten wholesale when full. */
const MAX_REMEMBERED = 50_000;

export class NodeReports {
  private warned = new Set<string>();
  /** instance id → `<node id> <app id>` it belongs to, or null when it does not exist. */
  private owners = new Map<string, string | null>();

  constructor(private readonly deps: { store: Store; logger: Logger }) {}

  /** True when the message's nodeId is the node its subject names; else logged (once) and false. */
  bound(subject: string, claimed: unknown, kind: string): boolean {
    const node = subjectNodeId(subject);
    if (node !== null && claimed === node) return true;
    this.once(`bound ${subject} ${String(claimed)}`, { subject, claimed, node }, `${kind} whose nodeId is not the node of its subject: dropped (a node may only speak for itself)`);
    return false;
  }

  /** Logs a refusal the first time this key is seen. */
  once(key: string, fields: Record<string, unknown>, msg: string, level: 'warn' | 'info' = 'warn'): void {
    if (this.warned.has(key)) return;
    if (this.warned.size >= MAX_REMEMBERED) this.warned.clear();
    this.warned.add(key);
    this.deps.logger[level](fields, msg);
  }

  /**
   * App log lines from `agent.<node>.logs.<app>`: kept only when every line names an instance of
   * that app assigned to that node (the agent sends one instance's lines per message).
   */
  async logsAllowed(subject: string, m: AppLogMessage): Promise<boolean> {
    const node = subjectNodeId(subject);
    const appId = subject.split('.')[3];
    if (node === null || !m || typeof m !== 'object' || m.appId !== appId || !Array.isArray(m.lines)) {
      this.once(`logs ${subject}`, { subject, appId: m?.appId }, 'app logs whose app is not the app of their subject: dropped');
      return false;
    }
    const ids = new Set(m.lines.map((l) => l?.instanceId));
    for (const id of ids) {
      if (typeof id !== 'string' || (await this.ownerOf(id)) !== `${node} ${appId}`) {
        this.once(`logs ${node} ${String(id)}`, { node, app: appId, instance: id }, 'app logs from a node for an instance it was not assigned: dropped');
        return false;
      }
    }
    return true;
  }

  /**
   * Router stats from `agent.<node>.router.stats` (canary analysis input): dropped unless the
   * routerId is the subject's node; only counts for instances in the route table last published
   * (`table`) are kept — any router may have served them (routing across nodes) — others ignored.
   */
  routerStats(subject: string, m: RouterStatsMessage, table: RouteTableMessage | null): RouterStatsMessage | null {
    if (!this.bound(subject, m?.routerId, 'router stats')) return null;
    if (!m.instances || typeof m.instances !== 'object') return null;
    const routed = new Set<string>();
    for (const r of Object.values(table?.routes ?? {})) for (const b of r.backends) routed.add(b.instanceId);
    const instances: RouterStatsMessage['instances'] = {};
    for (const [id, c] of Object.entries(m.instances)) {
      if (routed.has(id)) instances[id] = c;
      else this.once(`stats ${m.routerId} ${id}`, { node: m.routerId, instance: id }, 'router stats for an instance not in the route table: ignored', 'info');
    }
    return { ...m, instances };
  }

  /** Which node and app an instance belongs to: placement is fixed for an instance's life (a move is a new instance). */
  private async ownerOf(instanceId: string): Promise<string | null> {
    const known = this.owners.get(instanceId);
    if (known !== undefined) return known;
    const row = await this.deps.store.instances.byId(instanceId);
    // Unplaced (pending) is not remembered: the row gets its node when it is placed.
    if (row && row.nodeId === null) return null;
    const owner = row ? `${row.nodeId} ${row.appId}` : null;
    if (this.owners.size >= MAX_REMEMBERED) this.owners.clear();
    this.owners.set(instanceId, owner);
    return owner;
  }
}
