/**
 * Split mode for integration tests: a real nats-server, a `server` process (control plane +
 * builder) and a `node` process (agent + router) as children, on free loopback ports, each
 * with its own 0700 data dir and sandbox bridge, so tests can kill -9 and restart any of them.
 */
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createClient } from '@shellwego/sdk';
import { NatsServerProcess } from '../../packages/bus/src/testing.ts';
import { initNatsAuth, issueNodeCreds, loadAccountSigner } from '../../packages/bus/src/nats-auth.ts';
import type { AccountSigner } from '../../packages/bus/src/nats-auth.ts';
import { newId } from '@shellwego/core';
import { ADMIN_EMAIL, ADMIN_PASSWORD, ROOT, freePort, runCli, suiteFor } from './platform.ts';
import { LoadGenerator } from './load.ts';
import { writeNatsTls } from '../../packages/server/src/nats-tls.ts';
import type { NatsTlsFiles } from '../../packages/server/src/nats-tls.ts';
import type { LoadOptions } from './load.ts';

const exec = promisify(execFile);

const randomBridge = () => `swgt${Math.random().toString(36).slice(2, 8)}`;
const randomCidr = (second: number) => `10.${second}.0.0/16`;

/** One daemon (`server` or `node`) of main.ts as a child process that can be killed and restarted. */
export class Daemon {
  proc: ChildProcess | null = null;
  /** Everything it printed, across restarts (tests show it when they fail). */
  output = '';

  /**
   * `ready` gets what the daemon printed since this start. `netns`: the command it runs under to
   * start in a network namespace (`ip netns exec NS …`, see netns.ts), which execs the daemon.
   */
  constructor(
    readonly role: 'server' | 'node', private readonly env: () => Record<string, string>, private readonly ready: (printed: string) => Promise<boolean>,
    private readonly netns: string[] = [],
  ) {}

  async start(): Promise<void> {
    if (this.running()) throw new Error(`${this.role} is already running`);
    const argv = [process.execPath, '--import', 'tsx', join(ROOT, 'packages/server/src/main.ts'), this.role];
    const proc = spawn(this.netns[0] ?? argv[0], [...this.netns.slice(1), ...argv.slice(this.netns.length ? 0 : 1)], {
      cwd: ROOT, env: this.env(), stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    const from = this.output.length;
    const tag = (d: Buffer) => (this.output += d);
    proc.stdout!.on('data', tag);
    proc.stderr!.on('data', tag);
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`${this.role} exited with ${proc.exitCode}:\n${this.output.slice(-4000)}`);
      if (await this.ready(this.output.slice(from)).catch(() => false)) return;
      await new Promise((r) => setTimeout(r, 150));
    }
    throw new Error(`${this.role} did not come up:\n${this.output.slice(-4000)}`);
  }

  running(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** A crash: SIGKILL, no cleanup. */
  async kill9(): Promise<void> {
    await this.signal('SIGKILL');
  }

  async stop(): Promise<void> {
    const t = setTimeout(() => this.proc?.kill('SIGKILL'), 20_000);
    await this.signal('SIGTERM');
    clearTimeout(t);
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const p = this.proc;
    if (!p || !this.running()) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill(sig);
    await exited;
  }
}

function get(port: number, path: string, host: string): Promise<number> {
  return new Promise((res, rej) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: { host } }, (r) => {
      r.resume();
      r.on('end', () => res(r.statusCode ?? 0));
    });
    req.on('error', rej);
    req.end();
  });
}

export class SplitPlatform {
  apiPort = 0;
  routerPort = 0;
  nats!: NatsServerProcess;
  server!: Daemon;
  node!: Daemon;
  /** Servers added with addServer() (HA: same database, NATS and data dir, their own API port). */
  readonly extraServers: Daemon[] = [];
  /** Nodes added with addNode(): their own data dir, bridge and router port. */
  readonly extraNodes: ExtraNode[] = [];
  private env: () => Record<string, string> = () => ({});
  readonly nodeBridge = randomBridge();
  readonly nodeCidr = randomCidr(100 + Math.floor(Math.random() * 75));
  readonly buildBridge = randomBridge();
  readonly buildCidr = randomCidr(175 + Math.floor(Math.random() * 75));

  private constructor(readonly serverDir: string, readonly nodeDir: string, private readonly isolation: 'sandbox' | 'none') {}

  get apiUrl(): string {
    return `${this.apiTls ? 'https' : 'http'}://127.0.0.1:${this.apiPort}`;
  }

  // ---------- API TLS ----------
  /** The API is https (the install's CA, in serverDir/tls/local-ca.pem): the default of `server`, off in other tests. */
  apiTls = false;
  /** nats-server runs TLS with a certificate from `writeNatsTls` (the install's CA). */
  natsTlsFiles: NatsTlsFiles | null = null;
  /** Extra environment of the `server` daemon from its next start (e.g. another certificate). */
  serverEnv: Record<string, string> = {};
  /** CA file(s) the test process and the CLI trust for the API. */
  get apiCaFile(): string {
    return this.cliCaFile ?? join(this.serverDir, 'tls', 'local-ca.pem');
  }
  cliCaFile: string | null = null;

  /** Both daemons' output, for failure messages. */
  get output(): string {
    return `--- server ---\n${this.server.output.slice(-3000)}\n--- node ---\n${this.node.output.slice(-3000)}`;
  }

  /** natsAuth: nats-server in operator mode; the server's creds and signing key (from `nats-auth init`); local nodes get a NATS user each. */
  static async start(opts: { isolation?: 'sandbox' | 'none'; env?: Record<string, string>; jetstream?: boolean; natsAuth?: boolean; apiTls?: boolean; natsTls?: boolean } = {}): Promise<SplitPlatform> {
    // mkdtemp is 0700, like an operator's `mktemp -d`.
    const p = new SplitPlatform(await mkdtemp(join(tmpdir(), 'swg-split-server-')), await mkdtemp(join(tmpdir(), 'swg-split-node-')), opts.isolation ?? 'sandbox');
    p.apiPort = await freePort();
    p.routerPort = await freePort();
    const natsConfig = opts.natsAuth ? await p.setUpNatsAuth() : undefined;
    p.apiTls = opts.apiTls ?? false;
    // NATS over TLS: a certificate of the install's CA, made before the server first starts (it creates the CA in the server's store).
    if (opts.natsTls) p.natsTlsFiles = await writeNatsTls({ dataDir: p.serverDir, databaseUrl: null, baseDomain: 'localhost', outDir: join(p.serverDir, 'nats-tls'), hostnames: [], days: 30 });
    p.nats = await NatsServerProcess.start({
      jetstream: opts.jetstream ?? true, ...(natsConfig ? { config: natsConfig } : {}), ...(p.natsTlsFiles ? { tls: { certFile: p.natsTlsFiles.certFile, keyFile: p.natsTlsFiles.keyFile } } : {}),
    });
    const common = () => ({
      ...(process.env as Record<string, string>),
      SHELLWEGO_NATS_URL: p.nats.url,
      SHELLWEGO_DATA_DIR: p.serverDir,
      SHELLWEGO_NODE_DATA_DIR: p.nodeDir,
      SHELLWEGO_BLOBS_DIR: join(p.serverDir, 'blobs'),
      SHELLWEGO_API_PORT: String(p.apiPort),
      SHELLWEGO_HTTP_PORT: String(p.routerPort),
      SHELLWEGO_TLS: 'off',
      SHELLWEGO_API_TLS: p.apiTls ? 'on' : 'off',
      ...(p.natsTlsFiles ? { SHELLWEGO_NATS_TLS_CA: p.natsTlsFiles.caFile } : {}),
      SHELLWEGO_ADMIN_PASSWORD: ADMIN_PASSWORD,
      SHELLWEGO_ISOLATION: p.isolation,
      SHELLWEGO_BRIDGE: p.nodeBridge,
      SHELLWEGO_BRIDGE_CIDR: p.nodeCidr,
      SHELLWEGO_BUILD_BRIDGE: p.buildBridge,
      SHELLWEGO_BUILD_BRIDGE_CIDR: p.buildCidr,
      SHELLWEGO_RECONCILE_MS: '1000',
      SHELLWEGO_LOG_LEVEL: 'warn',
      // Several nodes on this machine: each router's cluster listener on loopback, on a free port.
      SHELLWEGO_ADVERTISE_ADDRESS: '127.0.0.1',
      SHELLWEGO_CLUSTER_PORT: '0',
      // JetStream is split mode's default; `jetstream: false` runs the core-NATS opt-out.
      SHELLWEGO_NATS_JETSTREAM: opts.jetstream === false ? '0' : '1',
      ...opts.env,
    });
    p.env = common;
    p.server = new Daemon('server', () => ({ ...common(), ...p.natsAuth?.serverEnv, ...p.serverEnv }), async () => healthy(p.apiUrl, p.apiTls ? p.apiCaFile : null));
    const nodeNats = await p.localNodeNatsEnv();
    // The banner comes once the agent has started (adopting what runs) and the router listens.
    p.node = new Daemon('node', () => ({ ...common(), ...nodeNats }), async (printed) => printed.includes('ShellWeGo node ') && (await get(p.routerPort, '/', 'nothing.localhost')) > 0);
    try {
      await p.server.start();
      await p.node.start();
    } catch (err) {
      await p.destroy();
      throw err;
    }
    return p;
  }

  async token(): Promise<string> {
    if (this.apiTls) return (JSON.parse(await httpsPost(`${this.apiUrl}/v1/auth/login`, { email: ADMIN_EMAIL, password: ADMIN_PASSWORD }, await readFile(this.apiCaFile, 'utf8'))) as { token: string }).token;
    const r = await createClient({ baseUrl: this.apiUrl }).call('login', { body: { email: ADMIN_EMAIL, password: ADMIN_PASSWORD } });
    return r.token;
  }

  async client(token?: string) {
    return createClient({ baseUrl: this.apiUrl, token: token ?? (await this.token()) });
  }

  /** Runs the CLI against the server's API. */
  cli(args: string[], token: string, opts: { cwd?: string; env?: Record<string, string> } = {}) {
    return runCli(this.apiUrl, join(this.serverDir, 'cli-config'), args, token, this.apiTls ? { ...opts, env: { NODE_EXTRA_CA_CERTS: this.apiCaFile, ...opts.env } } : opts);
  }

  /** Crash of the control plane: kill -9 of the `server` (the node, its apps and router stay). */
  /**
   * Another control plane on the same PostgreSQL and NATS (and the same data dir: master key and
   * blobs), serving the API on its own port; returns it and its API URL.
   */
  async addServer(): Promise<{ daemon: Daemon; apiUrl: string }> {
    const port = await freePort();
    const apiUrl = `http://127.0.0.1:${port}`;
    const daemon = new Daemon('server', () => ({ ...this.env(), ...this.natsAuth?.serverEnv, SHELLWEGO_API_PORT: String(port) }), async () => (await fetch(`${apiUrl}/v1/health`)).ok);
    this.extraServers.push(daemon);
    await daemon.start();
    return { daemon, apiUrl };
  }

  /** Another node (agent + router) on this machine: its own data dir, bridge, IP range and router port. */
  async addNode(): Promise<ExtraNode> {
    const routerPort = await freePort();
    const dataDir = await mkdtemp(join(tmpdir(), 'swg-split-node-'));
    const bridge = randomBridge();
    const cidr = randomCidr(20 + this.extraNodes.length * 5 + Math.floor(Math.random() * 5));
    const nats = await this.localNodeNatsEnv();
    const daemon = new Daemon('node', () => ({
      ...this.env(), ...nats, SHELLWEGO_NODE_DATA_DIR: dataDir, SHELLWEGO_HTTP_PORT: String(routerPort), SHELLWEGO_BRIDGE: bridge, SHELLWEGO_BRIDGE_CIDR: cidr,
    }), async (printed) => printed.includes('ShellWeGo node ') && (await get(routerPort, '/', 'nothing.localhost')) > 0);
    const node: ExtraNode = { daemon, routerPort, dataDir, bridge };
    this.extraNodes.push(node);
    await daemon.start();
    return node;
  }

  // ---------- NATS auth ----------
  /** With natsAuth: where `nats-auth init` wrote its files (in the server's data dir), and the server's env for them. */
  natsAuth: { dir: string; signer: AccountSigner; serverEnv: Record<string, string>; resolverDir: string } | null = null;

  /** `nats-auth init`'s work, as an operator would do it; returns the nats-server config that includes it. */
  private async setUpNatsAuth(): Promise<string> {
    // nats-server keeps account updates (revocations) here: the resolver's own directory.
    const init = await initNatsAuth(join(this.serverDir, 'nats-auth'), { resolverDir: join(this.serverDir, 'nats-jwt') });
    const config = join(init.dir, 'nats-server.conf');
    await writeFile(config, 'include "nats-auth.conf"\n');
    this.natsAuth = {
      dir: init.dir, signer: await loadAccountSigner(init.files.accountSigner),
      serverEnv: {
        SHELLWEGO_NATS_CREDS: init.files.controlPlaneCreds, SHELLWEGO_NATS_ACCOUNT_SEED: init.files.accountSigner,
        SHELLWEGO_NATS_SYSTEM_CREDS: init.files.systemCreds, SHELLWEGO_NATS_OPERATOR_SIGNER: init.files.operatorSigner,
      },
      resolverDir: init.resolverDir,
    };
    return config;
  }

  /** With natsAuth: a NATS user for a node that does not join (`nats-auth node`; the node takes its id from it). */
  private async localNodeNatsEnv(): Promise<Record<string, string>> {
    if (!this.natsAuth) return {};
    const id = newId('nod');
    const file = join(this.natsAuth.dir, `${id}.creds`);
    await writeFile(file, await issueNodeCreds(this.natsAuth.signer, id), { mode: 0o600 });
    return { SHELLWEGO_NATS_CREDS: file };
  }

  // ---------- node join ----------
  /**
   * A node that joins over the network with a join token, as on another machine: its own data
   * dir, bridge and router port, NO blob directory (SHELLWEGO_DATA_DIR points nowhere either):
   * artifacts come from the API. Set `token` to null before a restart: the saved credentials do.
   */
  joinedNode(token: string): JoinedNode {
    const dataDir = join(tmpdir(), `swg-split-joined-${Math.random().toString(36).slice(2, 10)}`);
    const bridge = randomBridge();
    const cidr = randomCidr(50 + this.extraNodes.length * 5 + Math.floor(Math.random() * 5));
    const node = { routerPort: 0, dataDir, bridge, token } as JoinedNode;
    node.daemon = new Daemon('node', () => {
      // Nothing of the server's machine: no blob directory, no NATS CA file (a joined node trusts the CA it pinned).
      const { SHELLWEGO_BLOBS_DIR: _local, SHELLWEGO_NATS_TLS_CA: _natsCa, ...env } = this.env();
      return {
        ...env, SHELLWEGO_DATA_DIR: join(dataDir, 'not-the-server'), SHELLWEGO_NODE_DATA_DIR: dataDir, SHELLWEGO_HTTP_PORT: String(node.routerPort),
        SHELLWEGO_BRIDGE: bridge, SHELLWEGO_BRIDGE_CIDR: cidr, SHELLWEGO_JOIN_URL: this.apiUrl, ...(node.token ? { SHELLWEGO_JOIN_TOKEN: node.token } : {}),
        ...(node.caFingerprint ? { SHELLWEGO_CA_FINGERPRINT: node.caFingerprint } : {}), ...(node.natsTlsCa ? { SHELLWEGO_NATS_TLS_CA: node.natsTlsCa } : {}),
      };
    }, async (printed) => printed.includes('ShellWeGo node ') && (await get(node.routerPort, '/', 'nothing.localhost')) > 0);
    this.extraNodes.push(node);
    return node;
  }

  /** joinedNode(), started (fails with the node's output when it does not come up). */
  async addJoinedNode(token: string): Promise<JoinedNode> {
    const node = this.joinedNode(token);
    node.routerPort = await freePort();
    await node.daemon.start();
    return node;
  }

  /**
   * Power loss of a node: its daemon and every process started from its data dir (the app
   * sandboxes) are SIGKILLed at once.
   */
  async powerOff(node: { daemon: Daemon; dataDir: string }): Promise<void> {
    await node.daemon.kill9();
    await exec('sh', ['-c', `pkill -9 -f "${node.dataDir}" || true`]).catch(() => {});
  }

  killServer(): Promise<void> {
    return this.server.kill9();
  }

  /** Starts the control plane again on the same data dir and ports (kill -9 first if it runs). */
  async restartServer(): Promise<void> {
    await this.server.kill9();
    await this.server.start();
  }

  /** Status of a GET through the node's router with `Host: <app>.localhost`. */
  viaRouter(app: string, path = '/'): Promise<number> {
    return get(this.routerPort, path, `${app}.localhost`);
  }

  /** Body of a GET through the node's router. */
  fetchViaRouter(app: string, path = '/'): Promise<{ status: number; body: string }> {
    return this.fetchViaRouterPort(this.routerPort, app, path);
  }

  /** Body of a GET through the router on `port` (another node's). */
  fetchViaRouterPort(port: number, app: string, path = '/'): Promise<{ status: number; body: string }> {
    return new Promise((res, rej) => {
      const req = httpRequest({ host: '127.0.0.1', port, path, headers: { host: `${app}.localhost` } }, (r) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('end', () => res({ status: r.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      });
      req.on('error', rej);
      req.end();
    });
  }

  /** A load generator against `<app>.localhost` through the node's router. */
  load(app: string, opts: Omit<LoadOptions, 'port' | 'host'> = {}): LoadGenerator {
    return new LoadGenerator({ ...opts, port: this.routerPort, host: `${app}.localhost` });
  }

  /** Stops everything and removes what it left: sandboxes, bridges, data dirs. */
  async destroy(): Promise<void> {
    for (const d of this.extraServers) await d.stop();
    await this.server?.stop();
    await this.node?.stop();
    for (const n of this.extraNodes) await n.daemon.stop();
    await this.nats?.stop();
    for (const dir of [this.serverDir, this.nodeDir, ...this.extraNodes.map((n) => n.dataDir)]) {
      // Anything still running from a data dir (apps left behind by kill -9) dies with it.
      await exec('sh', ['-c', `pkill -9 -f "${dir}" || true`]).catch(() => {});
    }
    for (const bridge of [this.nodeBridge, this.buildBridge, ...this.extraNodes.map((n) => n.bridge)]) await exec('ip', ['link', 'del', bridge]).catch(() => {});
    for (const dir of [this.serverDir, this.nodeDir, ...this.extraNodes.map((n) => n.dataDir)]) await rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

export interface ExtraNode {
  daemon: Daemon;
  routerPort: number;
  dataDir: string;
  bridge: string;
}

/** A node added with joinedNode(): `token` goes to its next start (null: rely on saved credentials). */
export interface JoinedNode extends ExtraNode {
  token: string | null;
  /** https API: the CA fingerprint to pin at join (unset: trust on first use). */
  caFingerprint?: string;
  /** A CA file for NATS instead of the pinned CA. */
  natsTlsCa?: string;
}

/** GET /v1/health is 200: over https verified against `caFile` (the test process cannot make fetch trust a CA). */
async function healthy(apiUrl: string, caFile: string | null): Promise<boolean> {
  if (!caFile) return (await fetch(`${apiUrl}/v1/health`)).ok;
  const ca = await readFile(caFile, 'utf8');
  return new Promise((res, rej) => {
    const req = httpsRequest(`${apiUrl}/v1/health`, { ca, agent: false }, (r) => {
      r.resume();
      res(r.statusCode === 200);
    });
    req.on('error', rej);
    req.end();
  });
}

function httpsPost(url: string, body: unknown, ca: string): Promise<string> {
  return new Promise((res, rej) => {
    const req = httpsRequest(url, { method: 'POST', ca, agent: false, headers: { 'content-type': 'application/json' } }, (r) => {
      let text = '';
      r.on('data', (c: Buffer) => (text += c));
      r.on('end', () => (r.statusCode === 200 || r.statusCode === 201 ? res(text) : rej(new Error(`POST ${url}: HTTP ${r.statusCode} ${text}`))));
    });
    req.on('error', rej);
    req.end(JSON.stringify(body));
  });
}

/** One split platform for the test file (see suiteFor in platform.ts). */
export function splitSuite(opts: { isolation?: 'sandbox' | 'none'; env?: Record<string, string>; jetstream?: boolean; natsAuth?: boolean; apiTls?: boolean; natsTls?: boolean } = {}) {
  return suiteFor(() => SplitPlatform.start(opts));
}
