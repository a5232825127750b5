/**
 * Which control plane runs the controllers (deployer, builds, certificates) when several serve
 * the API against one database. PostgreSQL: a session-level advisory lock held on a dedicated
 * connection — an existing, well-understood mechanism, no home-made consensus. The lock is the
 * connection's: when the leader dies, or its connection breaks, PostgreSQL releases it and
 * another control plane takes it on its next try. SQLite has one process by construction, so it
 * always leads.
 */
import type pg from 'pg';

export interface LeaderElection {
  /** True while this process holds the leadership. */
  readonly leading: boolean;
  /** Starts trying; `onChange(true)` when it becomes leader, `onChange(false)` when it loses it. */
  start(onChange: (leading: boolean) => void): void;
  /** Gives the leadership up (another process may take it at once) and stops trying. */
  close(): Promise<void>;
}

/** The embedded store's election: one process, always the leader. */
export class SoleLeader implements LeaderElection {
  leading = false;

  start(onChange: (leading: boolean) => void): void {
    this.leading = true;
    onChange(true);
  }

  async close(): Promise<void> {
    this.leading = false;
  }
}

/** A fixed 64-bit key for the lock: the bytes of "shellwe" (0x7368656c6c7765), recognisable in pg_locks. */
const LOCK_KEY = '32484407141758821';

export class PostgresLeaderElection implements LeaderElection {
  leading = false;
  private client: pg.Client | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private onChange: (leading: boolean) => void = () => {};
  private trying: Promise<void> = Promise.resolve();

  /**
   * @param url the database URL
   * @param retryMs how often a follower tries to take the lock, and a leader checks its
   *   connection is alive (default 1 s: takeover within a couple of seconds of the leader's death)
   */
  constructor(private readonly url: string, private readonly retryMs = 1000) {}

  start(onChange: (leading: boolean) => void): void {
    this.onChange = onChange;
    const tick = () => {
      this.trying = this.trying.then(() => this.tick()).catch(() => {});
    };
    tick();
    this.timer = setInterval(tick, this.retryMs);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.client) {
        // Loaded on first use: a daemon on SQLite never needs pg.
        const { Client } = (await import('pg')).default;
        const client = new Client({ connectionString: this.url, application_name: 'shellwego-leader', connectionTimeoutMillis: Math.max(1000, this.retryMs) });
        client.on('error', () => this.lost());
        await client.connect();
        this.client = client;
      }
      if (this.leading) {
        await this.client.query('select 1'); // still connected, so still holding the lock
        return;
      }
      const r = await this.client.query<{ ok: boolean }>(`select pg_try_advisory_lock(${LOCK_KEY}) as ok`);
      if (r.rows[0]?.ok && !this.closed) this.set(true);
    } catch {
      this.lost();
    }
  }

  /** The connection broke: the server has released the lock (or will, when it notices). */
  private lost(): void {
    const c = this.client;
    this.client = null;
    c?.end().catch(() => {});
    if (this.leading) this.set(false);
  }

  private set(leading: boolean): void {
    this.leading = leading;
    this.onChange(leading);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.trying;
    const c = this.client;
    this.client = null;
    if (c) {
      if (this.leading) await c.query(`select pg_advisory_unlock(${LOCK_KEY})`).catch(() => {});
      await c.end().catch(() => {});
    }
    this.leading = false;
  }
}
