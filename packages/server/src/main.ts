import { Command } from 'commander';
import { configFromEnv, splitConfigFromEnv } from './config.ts';
import { natsTlsInstructions, writeNatsTls } from './nats-tls.ts';
import { startAllInOne } from './all-in-one.ts';
import { runSplit } from './split.ts';
import { registerNatsAuthCommand } from './nats-auth.ts';
import { adminLoginLines, exitOnStartupError, stopOnSignals } from './roles.ts';
import type { SplitCommandOptions } from './split.ts';

const program = new Command('shellwego-server')
  .description('ShellWeGo platform daemons');

program
  .command('up')
  .description('run the whole platform in one process (control plane, builder, agent, router) on the embedded defaults')
  .option('--isolation <mode>', "how apps are isolated: 'sandbox' (namespaces + cgroups, default) or 'none' (plain processes; development only)")
  .option('--keep-apps-running', 'on shutdown, leave apps running for the next start to adopt')
  .action(async (opts: { isolation?: 'sandbox' | 'none'; keepAppsRunning?: boolean }) => {
    let config;
    try {
      config = configFromEnv(process.env, {
        ...(opts.isolation ? { isolation: opts.isolation } : {}),
        ...(opts.keepAppsRunning ? { keepAppsRunning: true } : {}),
      });
    } catch (err) {
      process.stderr.write(`error: ${(err as Error).message}\n`);
      process.exit(2);
    }
    let platform;
    try {
      platform = await startAllInOne(config);
    } catch (err) {
      exitOnStartupError(err, 'ShellWeGo');
    }
    const b = platform.bootstrap;
    const login = adminLoginLines(b, config.dataDir);
    process.stdout.write(
      `\nShellWeGo ${'is running'} (isolation: ${config.isolation}, data: ${config.dataDir})\n` +
      `  API:      ${platform.apiUrl}   (OpenAPI: ${platform.apiUrl}/v1/openapi.json)\n` +
      `  Apps:     http://<app>.${config.baseDomain}:${platform.routerPort}\n` +
      (platform.httpsUrl ? `  HTTPS:    https://<app>.${config.baseDomain}:${new URL(platform.httpsUrl).port} (TLS: ${config.tls.mode}${config.tls.mode === 'local-ca' ? `; trust ${config.dataDir}/tls/local-ca.pem` : ''})\n` : '') +
      login +
      `  Log in:   npx shellwego login --email ${b.email} --api ${platform.apiUrl}${b.generatedPassword ? ` --password ${b.generatedPassword}` : ''}\n` +
      `  Deploy:   npx shellwego apps create hello && npx shellwego deploy examples/node-express --app hello\n\n`,
    );
    stopOnSignals(platform);
  });

// ---------- split mode: server / node ----------
const isolationHelp = "how apps (node) and builds (server) are isolated: 'sandbox' (default) or 'none' (development only)";
program
  .command('server')
  .description('run the control plane and builder (API, deployer, builds) on SQLite or PostgreSQL, talking to nodes over NATS')
  .option('--nats <url>', 'NATS server URL(s), comma-separated (SHELLWEGO_NATS_URL; default nats://127.0.0.1:4222)')
  .option('--database <url>', 'postgres://user:password@host:port/db instead of the embedded SQLite (SHELLWEGO_DATABASE_URL)')
  .option('--data-dir <dir>', 'database, master key, blobs, logs (SHELLWEGO_DATA_DIR; default .shellwego)')
  .option('--api-hostname <names>', "host names/IPs nodes reach the API by, comma-separated, for its certificate (SHELLWEGO_API_HOSTNAMES; the bind address, hostname() and loopback are always in it)")
  .option('--nats-creds <file>', 'NATS user credentials for this server (SHELLWEGO_NATS_CREDS): control-plane.creds from `nats-auth init`; without: NATS unauthenticated (loopback/development)')
  .option('--nats-account-seed <file>', 'account-signer.json from `nats-auth init` (SHELLWEGO_NATS_ACCOUNT_SEED): joining nodes get their own NATS user, allowed only their own subjects')
  .option('--nats-system-creds <file>', 'with --nats-account-seed: system.creds from `nats-auth init` (SHELLWEGO_NATS_SYSTEM_CREDS): pushes the account JWT that revokes removed nodes\' NATS users')
  .option('--nats-operator-signer <file>', 'with --nats-account-seed: operator-signer.json from `nats-auth init` (SHELLWEGO_NATS_OPERATOR_SIGNER): signs that account JWT')
  .option('--isolation <mode>', isolationHelp)
  .action((opts: SplitCommandOptions) => runSplit('server', opts));
program
  .command('node')
  .description('run a node: agent and router, taking assignments and route tables over NATS; keeps serving while the server is away')
  .option('--nats <url>', 'NATS server URL(s), comma-separated (SHELLWEGO_NATS_URL; default nats://127.0.0.1:4222)')
  .option('--data-dir <dir>', "the node's own state: node id, sandboxes, agent state (SHELLWEGO_NODE_DATA_DIR; default .shellwego-node)")
  .option('--blobs-dir <dir>', "the server's blob directory, read locally by a node on the server's machine that did not join with a token " +
    '(SHELLWEGO_BLOBS_DIR; default <SHELLWEGO_DATA_DIR>/blobs)')
  .option('--join <url>', "the control plane's API URL: join it over the network and fetch artifacts from it (SHELLWEGO_JOIN_URL); several servers (HA), comma-separated: joins through the first, fetches from any")
  .option('--token <token>', 'join token for the first start, from `shellwego nodes token` (SHELLWEGO_JOIN_TOKEN); later starts use the saved node credentials')
  .option('--ca-fingerprint <sha256:hex>', "https API: the install CA's fingerprint to pin at join, as `shellwego nodes token` prints it (SHELLWEGO_CA_FINGERPRINT); without it the CA seen at join is pinned (trust on first use)")
  .option('--advertise-address <ip>', "the IP other nodes' routers reach this node at (SHELLWEGO_ADVERTISE_ADDRESS; default: the default route's interface, else 127.0.0.1); " +
    'its router listens there on SHELLWEGO_CLUSTER_PORT (default 8001) for requests to its instances')
  .option('--isolation <mode>', isolationHelp)
  .option('--keep-apps-running', 'on shutdown, leave apps running for the next start to adopt')
  .option('--nats-creds <file>', "a node that does not join: its NATS user from `nats-auth node` (SHELLWEGO_NATS_CREDS); the node's id is the one it was issued for")
  .action((opts: SplitCommandOptions) => runSplit('node', opts));

// ---------- API TLS: nats-server certificate ----------
program
  .command('nats-tls')
  .description("write a certificate and key for nats-server signed by this install's CA (nodes that joined verify NATS against it)")
  .requiredOption('--out <dir>', 'where to write cert.pem, key.pem (0600) and ca.pem')
  .option('--hostname <names>', 'names/IPs clients reach nats-server by, comma-separated (hostname(), localhost and 127.0.0.1 are always in it)', '')
  .option('--days <n>', 'validity in days', '365')
  .option('--database <url>', "the server's PostgreSQL (SHELLWEGO_DATABASE_URL); default: the SQLite database in the data dir")
  .option('--data-dir <dir>', "the server's data dir: master key, SQLite database (SHELLWEGO_DATA_DIR; default .shellwego)")
  .action(async (opts: { out: string; hostname: string; days: string; database?: string; dataDir?: string }) => {
    const env = { ...process.env, ...(opts.dataDir ? { SHELLWEGO_DATA_DIR: opts.dataDir } : {}), ...(opts.database ? { SHELLWEGO_DATABASE_URL: opts.database } : {}) };
    try {
      const config = splitConfigFromEnv(env);
      const files = await writeNatsTls({ dataDir: config.dataDir, databaseUrl: config.databaseUrl, baseDomain: config.baseDomain, outDir: opts.out, hostnames: opts.hostname.split(','), days: Number(opts.days) });
      process.stdout.write(natsTlsInstructions(files));
    } catch (err) {
      process.stderr.write(`error: ${(err as Error).message}\n`);
      process.exit(2);
    }
  });

// ---------- NATS auth ----------
registerNatsAuthCommand(program);

await program.parseAsync(process.argv);
