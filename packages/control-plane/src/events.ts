import { newId, subjects } from '@shellwego/core';
import type { EventT } from '@shellwego/core';
import type { Bus } from '@shellwego/bus';
import type { EventRow, Store } from '@shellwego/store';

export function toEvent(row: EventRow): EventT {
  return { id: row.id, organizationId: row.organizationId, appId: row.appId, type: row.type, message: row.message, data: row.data, createdAt: row.createdAt };
}

/** Every state change is stored as an Event and published for SSE followers. */
export class EventRecorder {
  constructor(private readonly store: Store, private readonly bus: Bus) {}

  async record(e: { organizationId: string; appId?: string | null; type: string; message: string; data?: Record<string, unknown> }, tx?: Store): Promise<EventT> {
    const row = await (tx ?? this.store).events.append({
      id: newId('evt'), organizationId: e.organizationId, appId: e.appId ?? null, type: e.type, message: e.message, data: e.data ?? {},
    });
    const event = toEvent(row);
    if (!tx) await this.publish(event);
    return event;
  }

  /** For events recorded inside a transaction: publish only after commit. */
  async publish(event: EventT): Promise<void> {
    await this.bus.publish(subjects.events(event.organizationId), event);
  }
}
