/**
 * Several "hosts" on one machine for cluster tests: one network namespace per node, each with a
 * veth pair to a test bridge in the root namespace (random 10.x.y.0/24; the bridge holds .1). The
 * control plane, PostgreSQL and NATS run in the root namespace (NATS and the API on the bridge
 * address); each `node` daemon runs inside its namespace (`ip netns exec`), so its sandbox bridge,
 * its instances and its router live there, and another node reaches them only over the test
 * bridge — as on separate machines. Partition = the host-side veth down; heal = up.
 *
 * `ip netns exec` gives the command a fresh /sys for the namespace, without the cgroup mounts
 * under /sys/fs/cgroup; the launcher mounts the same hierarchies again there (from the root
 * namespace's /proc/mounts), so sandboxed instances keep their cgroup limits.
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, unlink, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startPostgres } from '../../packages/store/src/testing/postgres-server.ts';
import type { PostgresServer } from '../../packages/store/src/testing/postgres-server.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, ROOT, freePort, runCli } from './platform.ts';
import { Daemon } from './split.ts';
import { initNatsAuth } from '../../packages/bus/src/nats-auth.ts';
import { LoadGenerator } from './load.ts';
import type { LoadOptions } from './load.ts';

const exec = promisify(execFile);
const rand = (n: number) => Math.random().toString(36).slice(2, 2 + n);

/** Fails with the command's stderr. */
async function ip(args: string[]): Promise<void> {
  try {
    await exec('ip', args);
  } catch (err) {
    throw new Error(`ip ${args.join(' ')}: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`);
  }
}

export interface NetnsHost {
  /** Namespace name (/run/netns/<ns>). */
  ns: string;
  /** Host-side veth on the test bridge (down = partitioned). */
  veth: string;
  /** The host's address on the test bridge. */
  ip: string;
}

/** Shell lines that mount the root namespace's cgroup hierarchies again under a fresh /sys. */
async function cgroupRemount(): Promise<string> {
  const lines: string[] = [];
  for (const line of (await readFile('/proc/self/mounts', 'utf8')).split('\n')) {
    const [source, target, type, options] = line.split(' ');
    if (!target || (target !== '/sys/fs/cgroup' && !target.startsWith('/sys/fs/cgroup/'))) continue;
    if (!/^[\w./=,-]+$/.test(source + target + type + options)) continue; // nothing odd goes into the shell line
    lines.push(`mkdir -p ${target} && mount -t ${type} -o ${options} ${source} ${target}`);
  }
  return lines.join(' && ');
}

/** N namespaces on a test bridge. `destroy()` removes them (and whatever was left in them). */
export class NetnsTopology {
  readonly hosts: NetnsHost[] = [];
  private remount = '';

  private constructor(readonly bridge: string, readonly subnet: string) {}

  /** The bridge's address in the root namespace: where the control plane and NATS listen. */
  get gateway(): string {
    return `${this.subnet}.1`;
  }

  static async create(n: number): Promise<NetnsTopology> {
    const tag = rand(5);
    const t = new NetnsTopology(`swn${tag}`, `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 250)}`);
    try {
      t.remount = await cgroupRemount();
      await ip(['link', 'add', t.bridge, 'type', 'bridge']);
      await ip(['addr', 'add', `${t.gateway}/24`, 'dev', t.bridge]);
      await ip(['link', 'set', t.bridge, 'up']);
      for (let i = 0; i < n; i++) {
        const host: NetnsHost = { ns: `swn${tag}h${i}`, veth: `swn${tag}v${i}`, ip: `${t.subnet}.${10 + i}` };
        t.hosts.push(host);
        await ip(['netns', 'add', host.ns]);
        await ip(['link', 'add', host.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.ns]);
        await ip(['link', 'set', host.veth, 'master', t.bridge]);
        await ip(['link', 'set', host.veth, 'up']);
        await ip(['-n', host.ns, 'addr', 'add', `${host.ip}/24`, 'dev', 'eth0']);
        await ip(['-n', host.ns, 'link', 'set', 'lo', 'up']);
        await ip(['-n', host.ns, 'link', 'set', 'eth0', 'up']);
        await ip(['-n', host.ns, 'route', 'add', 'default', 'via', t.gateway]);
      }
    } catch (err) {
      await t.destroy();
      throw err;
    }
    return t;
  }

  /** The command prefix that runs a command inside `host`'s namespace (cgroups mounted again). */
  launcher(host: NetnsHost): string[] {
    return ['ip', 'netns', 'exec', host.ns, 'sh', '-c', `${this.remount ? `${this.remount} && ` : ''}exec "$@"`, 'sh'];
  }

  /** Cuts `host` off the network (its processes keep running). */
  partition(host: NetnsHost): Promise<void> {
    return ip(['link', 'set', host.veth, 'down']);
  }

  heal(host: NetnsHost): Promise<void> {
    return ip(['link', 'set', host.veth, 'up']);
  }

  async destroy(): Promise<void> {
    // Deleting a namespace deletes its end of the veth pair, and the host end with it.
    for (const h of this.hosts) await exec('ip', ['netns', 'del', h.ns]).catch(() => {});
    await exec('ip', ['link', 'del', this.bridge]).catch(() => {});
  }
}

function get(host: string, port: number, path: string, hostHeader: string): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const req = httpRequest({ host, port, path, headers: { host: hostHeader } }, (r) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => res({ status: r.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')));
    req.on('error', rej);
    req.end();
  });
}

/** A node daemon in its own namespace. */
export interface ClusterNode {
  host: NetnsHost;
  daemon: Daemon;
  dataDir: string;
  /** Its sandbox bridge (inside its namespace) and address range. */
  bridge: string;
  cidr: string;
  /** The command an operator runs on that host (from `shellwego nodes token`, the NATS URL and every server filled in). */
  joinCommand: string;
}

/** A control plane server: its API URL on the bridge address. */
export interface ClusterServer {
  daemon: Daemon;
  apiUrl: string;
}

const ROUTER_PORT = 8000;

/** A GET or POST over https verified against `ca` only (fetch cannot be given a CA). */
function httpsCall(url: string, ca: string, opts: { method?: string; body?: unknown; token?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const req = httpsRequest(url, {
      method: opts.method ?? 'GET', ca, agent: false,
      headers: { 'content-type': 'application/json', ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}) },
    }, (r) => {
      let text = '';
      r.on('data', (c: Buffer) => (text += c));
      r.on('end', () => res({ status: r.statusCode ?? 0, body: text }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')));
    req.on('error', rej);
    req.end(opts.body === undefined ? undefined : JSON.stringify(opts.body));
  });
}

/** `shellwego-server <args>` as an operator runs it; fails with its output. */
async function serverCli(args: string[], env: Record<string, string>): Promise<string> {
  try {
    return (await exec(process.execPath, ['--import', 'tsx', join(ROOT, 'packages/server/src/main.ts'), ...args], { cwd: ROOT, env: { ...(process.env as Record<string, string>), ...env } })).stdout;
  } catch (err) {
    throw new Error(`shellwego-server ${args.join(' ')}: ${(err as { stderr?: string }).stderr || (err as Error).message}`);
  }
}

/**
 * A cluster on one machine set up as on separate hosts: PostgreSQL and NATS in the root
 * namespace, NATS authenticated (`nats-auth init`: operator mode, a user per node issued at join)
 * and over TLS (`nats-tls`: a certificate of the install's CA for the bridge address), with
 * JetStream; two control plane servers (HA on PostgreSQL) serving the API over https with leaves
 * of that one install CA; one `node` per namespace that joins with a token from `shellwego nodes
 * token` over the network (the CA pinned by the printed fingerprint, both servers listed in
 * --join) and so shares nothing with the servers but the network: artifacts come over https.
 * Each router listens on port 8000 of its host's address and its cluster listener on the default
 * port (8001) there.
 */
export class MultiHostCluster {
  readonly servers: ClusterServer[] = [];
  readonly nodes: ClusterNode[] = [];
  private nats: ChildProcess | null = null;
  private natsPort = 0;
  private pg: PostgresServer | null = null;
  private databaseUrl = '';
  /** The servers' NATS credentials and signing keys (from `nats-auth init`). */
  private natsAuthEnv: Record<string, string> = {};
  private readonly buildBridges: string[] = [];
  /** The install CA (PEM), which the test process and the CLI trust for the API and NATS. */
  caPem = '';

  private constructor(readonly topo: NetnsTopology, readonly serverDir: string, private readonly opts: { isolation: 'sandbox' | 'none'; env: Record<string, string> }) {}

  /** The API URL of the first server, which the CLI uses and the nodes joined through. */
  get apiUrl(): string {
    return this.servers[0].apiUrl;
  }

  get natsUrl(): string {
    return `nats://${this.topo.gateway}:${this.natsPort}`;
  }

  /** The install CA's file in the servers' data dir (written by the server at start). */
  get caFile(): string {
    return join(this.serverDir, 'tls', 'local-ca.pem');
  }

  /** Every daemon's output, for failure messages. */
  get output(): string {
    return [...this.servers.map((s, i) => `--- server ${i} ---\n${s.daemon.output.slice(-2500)}`), ...this.nodes.map((n) => `--- node ${n.host.ns} ---\n${n.daemon.output.slice(-2500)}`)].join('\n');
  }

  static async start(opts: { nodes: number; isolation?: 'sandbox' | 'none'; env?: Record<string, string> }): Promise<MultiHostCluster> {
    const topo = await NetnsTopology.create(opts.nodes);
    const c = new MultiHostCluster(topo, await mkdtemp(join(tmpdir(), 'swg-multi-server-')), { isolation: opts.isolation ?? 'sandbox', env: opts.env ?? {} });
    try {
      c.pg = await startPostgres();
      c.databaseUrl = await c.pg.createDatabase();
      c.natsPort = await freePort();
      await c.startNats();
      await c.addServer();
      await c.addServer();
      const token = await c.token();
      for (const host of topo.hosts) await c.joinNode(host, token);
    } catch (err) {
      await c.destroy();
      throw err;
    }
    return c;
  }

  /** The operator's NATS set-up: accounts, a certificate from the install CA for the bridge address, JetStream. */
  private async startNats(): Promise<void> {
    const dir = join(this.serverDir, 'nats');
    // `nats-auth init`'s work (its account JWTs kept under this test's dir, not /var/lib/nats).
    const init = await initNatsAuth(join(dir, 'auth'), { resolverDir: join(dir, 'resolver') });
    this.natsAuthEnv = {
      SHELLWEGO_NATS_CREDS: init.files.controlPlaneCreds, SHELLWEGO_NATS_ACCOUNT_SEED: init.files.accountSigner,
      SHELLWEGO_NATS_SYSTEM_CREDS: init.files.systemCreds, SHELLWEGO_NATS_OPERATOR_SIGNER: init.files.operatorSigner,
    };
    await serverCli(['nats-tls', '--out', join(dir, 'tls'), '--hostname', this.topo.gateway, '--database', this.databaseUrl, '--data-dir', this.serverDir], {});
    const config = join(dir, 'auth', 'nats-server.conf');
    await writeFile(config, [
      `listen: "${this.topo.gateway}:${this.natsPort}"`,
      `jetstream { store_dir: "${join(dir, 'store')}" }`,
      `tls { cert_file: "${join(dir, 'tls', 'cert.pem')}"\n  key_file: "${join(dir, 'tls', 'key.pem')}" }`,
      'include "nats-auth.conf"', '',
    ].join('\n'));
    const proc = spawn('nats-server', ['-c', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.nats = proc;
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer) => {
        out += d;
        if (out.includes('Server is ready')) resolve();
      };
      proc.stdout!.on('data', onData);
      proc.stderr!.on('data', onData);
      proc.once('error', (err) => reject(new Error(`cannot run nats-server: ${err.message}`)));
      proc.once('exit', (code) => reject(new Error(`nats-server exited with ${code}:\n${out}`)));
    });
  }

  /** Keeps what nodes must not see (the servers' data dir, database, NATS creds) out of their environment. */
  private baseEnv(): Record<string, string> {
    const env = { ...(process.env as Record<string, string>) };
    for (const k of Object.keys(env)) if (k.startsWith('SHELLWEGO_')) delete env[k];
    return {
      ...env,
      SHELLWEGO_NATS_URL: this.natsUrl,
      SHELLWEGO_TLS: 'off',
      SHELLWEGO_ISOLATION: this.opts.isolation,
      SHELLWEGO_RECONCILE_MS: '1000',
      SHELLWEGO_LOG_LEVEL: 'warn',
      ...this.opts.env,
    };
  }

  /**
   * A control plane server on the same PostgreSQL, NATS and data dir (master key, blobs), its
   * https API on the bridge address (in its certificate: it is the bind address), its own build bridge.
   */
  async addServer(): Promise<ClusterServer> {
    const port = await freePort();
    const apiUrl = `https://${this.topo.gateway}:${port}`;
    const buildBridge = `swb${rand(6)}`;
    this.buildBridges.push(buildBridge);
    const buildCidr = `10.${175 + this.servers.length * 10 + Math.floor(Math.random() * 10)}.0.0/16`;
    const daemon = new Daemon('server', () => ({
      ...this.baseEnv(),
      SHELLWEGO_DATABASE_URL: this.databaseUrl,
      SHELLWEGO_DATA_DIR: this.serverDir,
      SHELLWEGO_ADMIN_PASSWORD: ADMIN_PASSWORD,
      ...this.natsAuthEnv,
      SHELLWEGO_NATS_TLS_CA: join(this.serverDir, 'nats', 'tls', 'ca.pem'),
      SHELLWEGO_BIND: this.topo.gateway,
      SHELLWEGO_API_PORT: String(port),
      SHELLWEGO_BUILD_BRIDGE: buildBridge,
      SHELLWEGO_BUILD_BRIDGE_CIDR: buildCidr,
    }), async () => {
      this.caPem ||= await readFile(this.caFile, 'utf8');
      return (await httpsCall(`${apiUrl}/v1/health`, this.caPem)).status === 200;
    });
    const server = { daemon, apiUrl };
    this.servers.push(server);
    await daemon.start();
    return server;
  }

  /** On `host`: the command `shellwego nodes token` prints, with the NATS URL and both servers filled in, run there. */
  private async joinNode(host: NetnsHost, token: string): Promise<ClusterNode> {
    const printed = (await this.cliOk(['nodes', 'token'], token)).stdout;
    const line = /shellwego-server node .*/.exec(printed)?.[0];
    if (!line) throw new Error(`nodes token printed no join command:\n${printed}`);
    const joinCommand = line.replace('<NATS URL>', this.natsUrl).replace(`--join ${this.apiUrl}`, `--join ${this.servers.map((s) => s.apiUrl).join(',')}`);
    const flag = (name: string) => {
      const v = new RegExp(`--${name} (\\S+)`).exec(joinCommand)?.[1];
      if (!v) throw new Error(`no --${name} in the join command: ${joinCommand}`);
      return v;
    };
    // The node creates its data dir (0711, as on a fresh host).
    const dataDir = join(tmpdir(), `swg-multi-node-${rand(8)}`);
    const node: ClusterNode = { host, dataDir, joinCommand, bridge: `swg${rand(6)}`, cidr: `10.${20 + this.nodes.length * 10}.0.0/16`, daemon: undefined as unknown as Daemon };
    node.daemon = new Daemon('node', () => ({
      ...this.baseEnv(),
      SHELLWEGO_NATS_URL: flag('nats'), SHELLWEGO_JOIN_URL: flag('join'), SHELLWEGO_JOIN_TOKEN: flag('token'), SHELLWEGO_CA_FINGERPRINT: flag('ca-fingerprint'),
      // Nothing of the servers' machine: their data dir is not there.
      SHELLWEGO_DATA_DIR: join(dataDir, 'no-server-here'),
      SHELLWEGO_NODE_DATA_DIR: dataDir, SHELLWEGO_BIND: host.ip, SHELLWEGO_HTTP_PORT: String(ROUTER_PORT),
      SHELLWEGO_ADVERTISE_ADDRESS: host.ip, SHELLWEGO_BRIDGE: node.bridge, SHELLWEGO_BRIDGE_CIDR: node.cidr,
    }), async (out) => out.includes('ShellWeGo node ') && (await get(host.ip, ROUTER_PORT, '/', 'nothing.localhost')).status > 0, this.topo.launcher(host));
    this.nodes.push(node);
    await node.daemon.start();
    return node;
  }

  async nodeId(node: ClusterNode): Promise<string> {
    return (await readFile(join(node.dataDir, 'node-id'), 'utf8')).trim();
  }

  /** What the node saved at join: its id, its NATS user, the pinned CA. */
  async nodeCredentials(node: ClusterNode): Promise<{ nodeId: string; natsCreds: string; ca: { fingerprint: string; pem: string }; natsUsesInstallCa: boolean }> {
    return JSON.parse(await readFile(join(node.dataDir, 'node-credentials.json'), 'utf8'));
  }

  async token(): Promise<string> {
    const r = await httpsCall(`${this.apiUrl}/v1/auth/login`, this.caPem, { method: 'POST', body: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD } });
    if (r.status !== 200) throw new Error(`login: HTTP ${r.status} ${r.body}`);
    return (JSON.parse(r.body) as { token: string }).token;
  }

  /** The CLI against `apiUrl` (default: the first server), trusting the install CA. */
  cli(args: string[], token: string, opts: { cwd?: string; env?: Record<string, string>; apiUrl?: string } = {}) {
    return runCli(opts.apiUrl ?? this.apiUrl, join(this.serverDir, 'cli-config'), args, token, { ...opts, env: { NODE_EXTRA_CA_CERTS: this.caFile, ...opts.env } });
  }

  private async cliOk(args: string[], token: string) {
    const r = await this.cli(args, token);
    if (r.code !== 0) throw new Error(`shellwego ${args.join(' ')} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
    return r;
  }

  /** A GET through `node`'s router with `Host: <app>.localhost`. */
  viaNode(node: ClusterNode, app: string, path = '/'): Promise<{ status: number; body: string }> {
    return get(node.host.ip, ROUTER_PORT, path, `${app}.localhost`);
  }

  load(node: ClusterNode, app: string, opts: Omit<LoadOptions, 'port' | 'host' | 'address'> = {}): LoadGenerator {
    return new LoadGenerator({ ...opts, address: node.host.ip, port: ROUTER_PORT, host: `${app}.localhost` });
  }

  /** Power loss: the node daemon and every process started from its data dir, SIGKILLed at once. */
  async powerOff(node: ClusterNode): Promise<void> {
    await node.daemon.kill9();
    await exec('sh', ['-c', `pkill -9 -f "${node.dataDir}" || true`]).catch(() => {});
  }

  partition(node: ClusterNode): Promise<void> {
    return this.topo.partition(node.host);
  }

  heal(node: ClusterNode): Promise<void> {
    return this.topo.heal(node.host);
  }

  async destroy(): Promise<void> {
    const serverPids = this.servers.map((s) => s.daemon.proc?.pid).filter((pid): pid is number => pid !== undefined);
    for (const s of this.servers) await s.daemon.stop();
    // A server killed with -9 leaves its builder's pre-built sandbox namespaces (named after its pid).
    for (const name of await readdir('/run/netns').catch(() => [] as string[])) {
      if (serverPids.some((pid) => name.startsWith(`shellwego-Pool.${pid}.`))) await exec('ip', ['netns', 'del', name]).catch(() => {});
    }
    for (const n of this.nodes) await n.daemon.stop();
    for (const n of this.nodes) {
      await exec('sh', ['-c', `pkill -9 -f "${n.dataDir}" || true`]).catch(() => {});
      await removeNetnsFiles(n.dataDir);
    }
    if (this.nats && this.nats.exitCode === null) {
      const exited = new Promise((r) => this.nats!.once('exit', r));
      this.nats.kill('SIGTERM');
      await exited;
    }
    await this.pg?.close();
    await exec('sh', ['-c', `pkill -9 -f "${this.serverDir}" || true`]).catch(() => {});
    for (const b of this.buildBridges) await exec('ip', ['link', 'del', b]).catch(() => {});
    await this.topo.destroy();
    for (const dir of [this.serverDir, ...this.nodes.map((n) => n.dataDir)]) await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

/**
 * A node inside `ip netns exec` mounts its instances' namespaces in its own mount namespace, so
 * after a kill -9 only the empty /run/netns/<name> files are left in the root namespace. Their
 * names are the node's IP leases (<data dir>/sandbox/ipam-*.json); any still a mount point here
 * belongs to someone else and stays.
 */
async function removeNetnsFiles(dataDir: string): Promise<void> {
  const dir = join(dataDir, 'sandbox');
  const mounted = new Set((await readFile('/proc/self/mounts', 'utf8')).split('\n').map((l) => l.split(' ')[1]));
  for (const f of await readdir(dir).catch(() => [] as string[])) {
    if (!/^ipam-.*\.json$/.test(f)) continue;
    const leases = (JSON.parse(await readFile(join(dir, f), 'utf8').catch(() => '{}')) as { leases?: Record<string, unknown> }).leases ?? {};
    for (const name of Object.keys(leases)) {
      const path = `/run/netns/${name}`;
      if (!/^[\w.-]+$/.test(name) || mounted.has(path)) continue;
      await unlink(path).catch(() => {});
    }
  }
}
