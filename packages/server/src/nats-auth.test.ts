import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credsNodeId, initNatsAuth, issueNodeCreds, loadAccountSigner } from '@shellwego/bus';
import type { NatsAuthInit } from '@shellwego/bus';
import { splitConfigFromEnv } from './config.ts';
import { nodeNatsAuth, serverNatsAuth } from './nats-auth.ts';

let dir: string;
let init: NatsAuthInit;
let nodeCredsFile: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'swg-nats-auth-'));
  init = await initNatsAuth(join(dir, 'auth'), { resolverDir: join(dir, 'jwt') });
  nodeCredsFile = join(dir, 'node.creds');
  await writeFile(nodeCredsFile, await issueNodeCreds(await loadAccountSigner(init.files.accountSigner), 'nod_local1'), { mode: 0o600 });
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('split config: JetStream on by default with an opt-out; NATS creds and account seed from the environment', () => {
  assert.equal(splitConfigFromEnv({}).natsJetStream, true);
  for (const off of ['0', 'false', 'no', 'off']) assert.equal(splitConfigFromEnv({ SHELLWEGO_NATS_JETSTREAM: off }).natsJetStream, false);
  const c = splitConfigFromEnv({});
  assert.equal(c.natsCreds, null);
  assert.equal(c.natsAccountSeed, null);
  const e = splitConfigFromEnv({ SHELLWEGO_NATS_CREDS: 'cp.creds', SHELLWEGO_NATS_ACCOUNT_SEED: '/etc/swg/account-signer.json' });
  assert.equal(e.natsCreds, join(process.cwd(), 'cp.creds'));
  assert.equal(e.natsAccountSeed, '/etc/swg/account-signer.json');
});

test('server: no creds = unauthenticated (said so); a seed without creds or a node user as creds is refused', async () => {
  const none = await serverNatsAuth(splitConfigFromEnv({}));
  assert.equal(none.connection, null);
  assert.equal(none.issueNodeCreds, null);
  assert.match(none.summary, /^off: .*development only/);
  await assert.rejects(serverNatsAuth(splitConfigFromEnv({ SHELLWEGO_NATS_ACCOUNT_SEED: init.files.accountSigner })), /needs --nats-creds/);
  await assert.rejects(serverNatsAuth(splitConfigFromEnv({ SHELLWEGO_NATS_CREDS: nodeCredsFile })), /holds a node's NATS user/);
  await assert.rejects(serverNatsAuth(splitConfigFromEnv({ SHELLWEGO_NATS_CREDS: join(dir, 'missing.creds') })), /cannot read the NATS credentials/);
  const seeded = { SHELLWEGO_NATS_CREDS: init.files.controlPlaneCreds, SHELLWEGO_NATS_ACCOUNT_SEED: init.files.accountSigner };
  // Issuing users takes the means to revoke them; the files must be of one init, each the right kind.
  await assert.rejects(serverNatsAuth(splitConfigFromEnv(seeded)), /needs --nats-system-creds and --nats-operator-signer/);
  const revoking = { SHELLWEGO_NATS_SYSTEM_CREDS: init.files.systemCreds, SHELLWEGO_NATS_OPERATOR_SIGNER: init.files.operatorSigner };
  await assert.rejects(serverNatsAuth(splitConfigFromEnv({ ...seeded, ...revoking, SHELLWEGO_NATS_SYSTEM_CREDS: init.files.controlPlaneCreds })), /not of the system account/);
  await assert.rejects(serverNatsAuth(splitConfigFromEnv({ ...seeded, ...revoking, SHELLWEGO_NATS_OPERATOR_SIGNER: init.files.accountSigner })), /not a NATS operator signing key/);
  const other = await initNatsAuth(join(dir, 'other'), { resolverDir: join(dir, 'other-jwt') });
  await assert.rejects(serverNatsAuth(splitConfigFromEnv({ ...seeded, ...revoking, SHELLWEGO_NATS_OPERATOR_SIGNER: other.files.operatorSigner })), /not from the same `nats-auth init`/);
  const on = await serverNatsAuth(splitConfigFromEnv({ ...seeded, ...revoking }));
  assert.ok(on.connection?.authenticator);
  const issued = await on.issueNodeCreds!('nod_x');
  assert.equal(credsNodeId(issued.creds), 'nod_x');
  assert.match(issued.userKey, /^U[A-Z0-9]{55}$/);
  assert.equal(on.revocation?.signer.account, init.account);
  assert.match(on.summary, /^on: each node gets its own NATS user.*revoked when the node is removed/);
});

test("node: --nats-creds names the node (written to node-id, or checked against it); the control plane's creds are refused", async () => {
  const nodeDir = join(dir, 'node');
  await mkdir(nodeDir);
  const config = splitConfigFromEnv({ SHELLWEGO_NODE_DATA_DIR: nodeDir, SHELLWEGO_NATS_CREDS: nodeCredsFile });
  assert.equal(await nodeNatsAuth(splitConfigFromEnv({ SHELLWEGO_NODE_DATA_DIR: nodeDir }), null), null);
  const a = await nodeNatsAuth(config, null);
  assert.equal(a?.nodeId, 'nod_local1');
  assert.equal((await readFile(join(nodeDir, 'node-id'), 'utf8')).trim(), 'nod_local1');
  await writeFile(join(nodeDir, 'node-id'), 'nod_other\n');
  await assert.rejects(nodeNatsAuth(config, null), /issued for node nod_local1, but this node is nod_other/);
  await assert.rejects(nodeNatsAuth(splitConfigFromEnv({ SHELLWEGO_NODE_DATA_DIR: nodeDir, SHELLWEGO_NATS_CREDS: init.files.controlPlaneCreds }), null), /not a node's NATS user/);
  // A joined node's own user (from the join answer) comes first.
  const joined = { apiUrl: 'http://cp', nodeId: 'nod_joined', secret: 's', ca: null, natsUsesInstallCa: false, natsCreds: 'CREDS' };
  assert.deepEqual(await nodeNatsAuth(config, joined), { creds: 'CREDS', nodeId: 'nod_joined' });
});
