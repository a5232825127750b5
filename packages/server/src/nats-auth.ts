/**
 * NATS authentication for split mode (ADR: NATS auth). `shellwego-server nats-auth init` creates
 * the operator and accounts (packages/bus/src/nats-auth.ts) and says what to give nats-server and
 * `server`; `nats-auth node` issues a node user for a node on a machine that does not join over
 * the network. The `server` connects with its own creds and, holding the account's signing key,
 * issues each joining node a user allowed only that node's subjects. Without any of this NATS is
 * unauthenticated, as before: fine on loopback, not across machines.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Command } from 'commander';
import { DEFAULT_RESOLVER_DIR, credsAccount, credsConnection, credsNodeId, credsUserKey, initNatsAuth, issueNodeCreds, loadAccountSigner, loadOperatorSigner } from '@shellwego/bus';
import type { NatsBusOptions, OperatorSigner } from '@shellwego/bus';
import { newId } from '@shellwego/core';
import type { SplitConfig } from './config.ts';
import type { NodeCredentials } from './node-join.ts';

async function readCreds(file: string, flag: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the NATS credentials ${file} (${flag}): ${(err as Error).message}`);
  }
  credsNodeId(text); // throws when it is not a .creds file
  return text;
}

export interface ServerNatsAuth {
  /** Client options for the server's own connection (none: unauthenticated). */
  connection: NatsBusOptions['connection'] | null;
  /** Issues a joining node's NATS user (its .creds and public key, recorded for revocation); null when the server holds no signing key. */
  issueNodeCreds: ((nodeId: string) => Promise<{ creds: string; userKey: string }>) | null;
  /** What revoking removed nodes' users takes (nats-revocations.ts): a system-account user and the operator signing key. */
  revocation: { systemCreds: string; signer: OperatorSigner } | null;
  /** For the start-up banner. */
  summary: string;
}

export async function serverNatsAuth(config: SplitConfig): Promise<ServerNatsAuth> {
  if (config.natsAccountSeed && !config.natsCreds) {
    throw new Error('--nats-account-seed (SHELLWEGO_NATS_ACCOUNT_SEED) needs --nats-creds (SHELLWEGO_NATS_CREDS): the control-plane.creds written by `shellwego-server nats-auth init` next to it');
  }
  if (!config.natsCreds) {
    return { connection: null, issueNodeCreds: null, revocation: null, summary: 'off: any client of this NATS can read and send every command (loopback/development only; set up with `shellwego-server nats-auth init`)' };
  }
  const creds = await readCreds(config.natsCreds, '--nats-creds');
  if (credsNodeId(creds) !== null) throw new Error(`${config.natsCreds} holds a node's NATS user, not the control plane's (control-plane.creds from \`shellwego-server nats-auth init\`)`);
  if (!config.natsAccountSeed) {
    return { connection: credsConnection(creds), issueNodeCreds: null, revocation: null, summary: 'on, but without --nats-account-seed: joining nodes get no NATS user (give them one from `shellwego-server nats-auth node`)' };
  }
  const signer = await loadAccountSigner(config.natsAccountSeed);
  // Users it issues must be revocable (`nodes remove`): no user without the means to revoke it.
  if (!config.natsSystemCreds || !config.natsOperatorSigner) {
    throw new Error('--nats-account-seed (SHELLWEGO_NATS_ACCOUNT_SEED) needs --nats-system-creds and --nats-operator-signer (SHELLWEGO_NATS_SYSTEM_CREDS, SHELLWEGO_NATS_OPERATOR_SIGNER): ' +
      "system.creds and operator-signer.json from `nats-auth init`, to revoke a removed node's NATS user");
  }
  const systemCreds = await readCreds(config.natsSystemCreds, '--nats-system-creds');
  const opSigner = await loadOperatorSigner(config.natsOperatorSigner);
  if (credsAccount(systemCreds) === opSigner.account) throw new Error(`${config.natsSystemCreds} is a user of the ShellWeGo account, not of the system account (system.creds from \`nats-auth init\`)`);
  if (opSigner.account !== signer.account || credsAccount(creds) !== signer.account) {
    throw new Error(`${config.natsOperatorSigner}, ${config.natsAccountSeed} and ${config.natsCreds} are not from the same \`nats-auth init\``);
  }
  return {
    connection: credsConnection(creds),
    issueNodeCreds: async (nodeId) => {
      const c = await issueNodeCreds(signer, nodeId);
      return { creds: c, userKey: credsUserKey(c) };
    },
    revocation: { systemCreds, signer: opSigner },
    summary: "on: each node gets its own NATS user at join, allowed only its own subjects, revoked when the node is removed",
  };
}

/**
 * A node's NATS user: the one it got at join, else --nats-creds (whose node id then is this
 * node's: written to its node-id file, or checked against it). null: unauthenticated NATS.
 */
export async function nodeNatsAuth(config: SplitConfig, joined: NodeCredentials | null): Promise<{ creds: string; nodeId: string } | null> {
  if (joined?.natsCreds) return { creds: joined.natsCreds, nodeId: joined.nodeId };
  if (!config.natsCreds) return null;
  const creds = await readCreds(config.natsCreds, '--nats-creds');
  const nodeId = credsNodeId(creds);
  if (nodeId === null) throw new Error(`${config.natsCreds} is not a node's NATS user: issue one with \`shellwego-server nats-auth node\` (the control plane's own creds would let this node act for every node)`);
  const idFile = join(config.nodeDataDir, 'node-id');
  const existing = joined?.nodeId ?? (await readFile(idFile, 'utf8').then((t) => t.trim(), () => null));
  if (existing !== null && existing !== nodeId) {
    throw new Error(`${config.natsCreds} was issued for node ${nodeId}, but this node is ${existing} (${idFile}): issue its own with \`shellwego-server nats-auth node --id ${existing}\``);
  }
  if (existing === null) await writeFile(idFile, nodeId + '\n', { mode: 0o600 });
  return { creds, nodeId };
}

/** `shellwego-server nats-auth init|node`. */
export function registerNatsAuthCommand(program: Command): void {
  const cmd = program.command('nats-auth').description("NATS accounts and users (NATS's own JWT auth): each node may use only its own subjects");
  cmd
    .command('init')
    .description('create the operator, the accounts and the control-plane user; prints what to give nats-server and `server`')
    .requiredOption('--out <dir>', 'directory for the files (created 0700; secrets 0600); refuses to overwrite an earlier set-up')
    .option('--resolver-dir <dir>', `where nats-server keeps the account JWTs it is sent (revocations), on the nats-server machine; writable by nats-server (default ${DEFAULT_RESOLVER_DIR})`)
    .action(async (opts: { out: string; resolverDir?: string }) => {
      try {
        const r = await initNatsAuth(opts.out, { resolverDir: opts.resolverDir });
        // Paths as the operator typed them when under the current directory, else absolute.
        const rel = (f: string) => (relative(process.cwd(), f).startsWith('..') ? f : relative(process.cwd(), f));
        process.stdout.write(
          `\nNATS accounts created in ${r.dir} (operator ${r.operator}, account ${r.account})\n` +
          `  nats-server: copy ${r.files.serverConfig} (public JWTs only) next to its config file and add the line\n` +
          `      include "nats-auth.conf"\n` +
          `    (nats-server reads includes relative to the including file; JetStream also needs: jetstream { store_dir: "/var/lib/nats" };\n` +
          `    it keeps account updates in ${r.resolverDir}, which it must be able to write)\n` +
          `  server:      shellwego-server server --nats-creds ${rel(r.files.controlPlaneCreds)} --nats-account-seed ${rel(r.files.accountSigner)} \\\n` +
          `                 --nats-system-creds ${rel(r.files.systemCreds)} --nats-operator-signer ${rel(r.files.operatorSigner)} ...\n` +
          `               (or SHELLWEGO_NATS_CREDS / _ACCOUNT_SEED / _SYSTEM_CREDS / _OPERATOR_SIGNER); nodes that join with a token get\n` +
          `               their own NATS user, revoked by \`shellwego nodes remove\`.\n` +
          `  a node on this machine without --join: shellwego-server nats-auth node --account-seed ${rel(r.files.accountSigner)} --out node.creds,\n` +
          `               then: shellwego-server node --nats-creds node.creds ...\n` +
          `  ${rel(r.files.operatorSeed)} is needed only to change the operator later (e.g. replace a leaked signing key): keep it offline.\n\n`,
        );
      } catch (err) {
        process.stderr.write(`error: ${(err as Error).message}\n`);
        process.exit(1);
      }
    });
  cmd
    .command('node')
    .description("issue a node's NATS user (for a node that does not join with a token); the node takes its id from it")
    .requiredOption('--account-seed <file>', 'account-signer.json from `nats-auth init`')
    .requiredOption('--out <file>', 'where to write the .creds (0600)')
    .option('--id <node id>', 'the node id (default: a new one); an existing node: the id in its data dir\'s node-id file')
    .action(async (opts: { accountSeed: string; out: string; id?: string }) => {
      try {
        const id = opts.id ?? newId('nod');
        const creds = await issueNodeCreds(await loadAccountSigner(opts.accountSeed), id);
        await writeFile(opts.out, creds, { mode: 0o600, flag: 'wx' });
        process.stdout.write(`NATS user for node ${id} written to ${opts.out}: start the node with --nats-creds ${opts.out}\n`);
      } catch (err) {
        process.stderr.write(`error: ${(err as Error).message}\n`);
        process.exit(1);
      }
    });
}
