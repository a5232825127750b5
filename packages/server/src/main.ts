import { Command } from 'commander';
import { configFromEnv } from './config.ts';
import { startAllInOne } from './all-in-one.ts';
import { runSplit } from './split.ts';
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
  .option('--isolation <mode>', isolationHelp)
  .action((opts: SplitCommandOptions) => runSplit('server', opts));
program
  .command('node')
  .description('run a node: agent and router, taking assignments and route tables over NATS; keeps serving while the server is away')
  .option('--nats <url>', 'NATS server URL(s), comma-separated (SHELLWEGO_NATS_URL; default nats://127.0.0.1:4222)')
  .option('--data-dir <dir>', "the node's own state: node id, sandboxes, agent state (SHELLWEGO_NODE_DATA_DIR; default .shellwego-node)")
  .option('--blobs-dir <dir>', "the server's blob directory, read locally by a node on the server's machine that did not join with a token " +
    '(SHELLWEGO_BLOBS_DIR; default <SHELLWEGO_DATA_DIR>/blobs)')
  .option('--join <url>', "the control plane's API URL: join it over the network and fetch artifacts from it (SHELLWEGO_JOIN_URL)")
  .option('--token <token>', 'join token for the first start, from `shellwego nodes token` (SHELLWEGO_JOIN_TOKEN); later starts use the saved node credentials')
  .option('--ca-fingerprint <sha256:hex>', "https API: the certificate fingerprint to pin at join (SHELLWEGO_CA_FINGERPRINT); without it the certificate seen at join is pinned (trust on first use)")
  .option('--isolation <mode>', isolationHelp)
  .option('--keep-apps-running', 'on shutdown, leave apps running for the next start to adopt')
  .action((opts: SplitCommandOptions) => runSplit('node', opts));

await program.parseAsync(process.argv);
