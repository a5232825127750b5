/** Leader election on a real PostgreSQL: one leader at a time, takeover when it dies or quits. */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { PostgresLeaderElection, SoleLeader } from './leader.ts';
import { startPostgres } from './testing/postgres-server.ts';
import type { PostgresServer } from './testing/postgres-server.ts';

const server: PostgresServer = await startPostgres();
after(() => server.close());

async function until(what: string, fn: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Two elections on a fresh database: `a` leads, then `b` starts trying; `log` records their changes. */
async function twoElections() {
  const url = await server.createDatabase();
  const a = new PostgresLeaderElection(url, 100);
  const b = new PostgresLeaderElection(url, 100);
  const log: string[] = [];
  a.start((l) => log.push(`a:${l}`));
  await until('a leads', () => a.leading);
  b.start((l) => log.push(`b:${l}`));
  return { url, a, b, log };
}

describe('leader election', () => {
  it('SQLite: the one process leads', () => {
    const changes: boolean[] = [];
    new SoleLeader().start((l) => changes.push(l));
    assert.deepEqual(changes, [true]);
  });

  it('PostgreSQL: exactly one of two leads; the other takes over when the leader gives up', async () => {
    const { a, b, log } = await twoElections();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(b.leading, false, 'never two leaders');
    await a.close();
    await until('b takes over', () => b.leading);
    assert.deepEqual(log, ['a:true', 'b:true']);
    await b.close();
  });

  it('PostgreSQL: a leader whose connection is killed steps down; then one of the two leads again', async () => {
    const { url, a, b, log } = await twoElections();
    // What a crashed leader looks like to PostgreSQL: its session ends, the lock goes with it.
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    const killed = await admin.query(`select pg_terminate_backend(pid) as ok from pg_stat_activity where application_name = 'shellwego-leader' and pid in (select pid from pg_locks where locktype = 'advisory' and granted)`);
    assert.equal(killed.rowCount, 1, 'the leader session was found');
    await admin.end();
    // a notices and steps down; then exactly one of the two leads again (a may win the race back).
    await until('a steps down', () => log.includes('a:false'));
    await until('a leader again', () => a.leading || b.leading);
    for (let i = 0; i < 20; i++) {
      assert.ok(!(a.leading && b.leading), 'never two leaders');
      await new Promise((r) => setTimeout(r, 25));
    }
    await a.close();
    await b.close();
  });
});
