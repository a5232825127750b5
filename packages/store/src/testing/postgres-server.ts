/**
 * A throwaway PostgreSQL server for tests: `initdb` into a temp directory, `postgres` on
 * 127.0.0.1 at a free port (unix socket in the same directory), one fresh database per
 * `createDatabase()`. Uses the Debian `postgresql` package's binaries; when they are missing it
 * throws with the package to install instead of letting tests skip.
 *
 * As root, the server runs as the `postgres` system user (or `nobody`): PostgreSQL refuses to
 * run as root. The server's process is a direct child (spawned with uid/gid), so stop() and the
 * exit hook signal it and nothing else.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

const PG_ROOT = '/usr/lib/postgresql';

export interface PostgresServer {
  readonly port: number;
  /** Connection URL of `database` (default `postgres`) over TCP on loopback. */
  url(database?: string): string;
  /** Creates an empty database with a unique name; returns its URL. */
  createDatabase(): Promise<string>;
  /** Fast shutdown (clients are disconnected); data is kept for start(). */
  stop(): Promise<void>;
  /** Starts the server again on the same port and data directory. */
  start(): Promise<void>;
  /** Stops the server and deletes its directory. */
  close(): Promise<void>;
}

/** The newest installed server's bin directory, or a clear error naming the package. */
export function postgresBinDir(): string {
  const versions = existsSync(PG_ROOT)
    ? readdirSync(PG_ROOT).filter((v) => existsSync(join(PG_ROOT, v, 'bin', 'initdb')) && existsSync(join(PG_ROOT, v, 'bin', 'postgres')))
    : [];
  versions.sort((a, b) => Number(b) - Number(a));
  if (!versions.length) {
    throw new Error(`PostgreSQL server binaries not found (${PG_ROOT}/<version>/bin/initdb): install the Debian package with \`apt-get install -y postgresql\``);
  }
  return join(PG_ROOT, versions[0]!, 'bin');
}

/** uid/gid to run the server as: ourselves, or an unprivileged system user when we are root. */
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  for (const user of ['postgres', 'nobody']) {
    const uid = spawnSync('id', ['-u', user], { encoding: 'utf8' });
    const gid = spawnSync('id', ['-g', user], { encoding: 'utf8' });
    if (uid.status === 0 && gid.status === 0) return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  }
  throw new Error('running as root and neither the `postgres` nor the `nobody` user exists to run PostgreSQL as');
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function run(cmd: string, args: string[], cwd: string, user: { uid: number; gid: number } | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...user, cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code}:\n${out}`))));
  });
}

export async function startPostgres(): Promise<PostgresServer> {
  const bin = postgresBinDir();
  const user = runAs();
  const dir = await mkdtemp(join(tmpdir(), 'swg-pg-'));
  if (user) await chown(dir, user.uid, user.gid);
  const data = join(dir, 'data');
  // An ICU en-US default collation on purpose: the store must not depend on the database's
  // locale (its text columns are created `collate "C"`), and this would catch it if it did.
  await run(join(bin, 'initdb'), [
    '-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '--encoding=UTF8', '--locale=C',
    '--locale-provider=icu', '--icu-locale=en-US',
  ], dir, user);

  let port = 0;
  let child: ChildProcess | undefined;
  let counter = 0;
  let admin: Promise<pg.Client> | undefined;
  const killOnExit = () => child?.kill('SIGKILL');
  process.on('exit', killOnExit);

  const launch = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const proc = spawn(join(bin, 'postgres'), [
        '-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1',
        // A test server: durability is not what is tested here, speed is welcome.
        '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=300',
      ], { ...user, cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
      child = proc;
      let log = '';
      let ready = false;
      proc.stderr!.on('data', (d: Buffer) => {
        log = (log + d.toString()).slice(-8000);
        if (!ready && log.includes('database system is ready to accept connections')) {
          ready = true;
          resolve();
        }
      });
      proc.on('error', reject);
      proc.on('exit', (code, signal) => {
        if (child === proc) child = undefined;
        if (!ready) reject(new Error(`postgres exited (${code ?? signal}) before accepting connections:\n${log}`));
      });
    });

  const stop = async (): Promise<void> => {
    const client = admin;
    admin = undefined;
    await client?.then((c) => c.end()).catch(() => {});
    const proc = child;
    if (!proc) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill('SIGINT'); // fast shutdown: roll back open transactions, disconnect clients
    await exited;
  };

  // The port is free when picked but may be taken before postgres binds it: pick again.
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      await launch();
      break;
    } catch (err) {
      if (attempt >= 3) {
        process.off('exit', killOnExit);
        await rm(dir, { recursive: true, force: true });
        throw err;
      }
    }
  }

  const url = (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`;
  return {
    get port() {
      return port;
    },
    url,
    async createDatabase() {
      // One admin connection, made by the first caller, shared by concurrent ones.
      admin ??= (async () => {
        const c = new pg.Client({ connectionString: url() });
        c.on('error', () => {});
        await c.connect();
        return c;
      })();
      const name = `swg_${process.pid}_${++counter}`;
      await (await admin).query(`create database ${name}`);
      return url(name);
    },
    stop,
    start: launch,
    async close() {
      await stop();
      process.off('exit', killOnExit);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
