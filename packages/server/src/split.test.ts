import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { splitConfigFromEnv } from './config.ts';
import { startNode } from './split.ts';

test('split config: defaults, env and the node blob dir next to the server data dir', () => {
  const c = splitConfigFromEnv({ SHELLWEGO_DATA_DIR: '/srv/swg' });
  assert.deepEqual(c.natsUrls, ['nats://127.0.0.1:4222']);
  assert.equal(c.blobsDir, '/srv/swg/blobs');
  assert.equal(c.nodeDataDir, resolve('.shellwego-node'));
  assert.equal(c.buildBridgeName, 'swgb0');
  assert.notEqual(c.buildBridgeCidr, c.bridgeCidr, 'builds and apps never share an IP range');

  const e = splitConfigFromEnv({
    SHELLWEGO_NATS_URL: 'nats://a:4222, nats://b:4222', SHELLWEGO_BLOBS_DIR: '/mnt/blobs', SHELLWEGO_NODE_DATA_DIR: '/var/lib/node',
    SHELLWEGO_BUILD_BRIDGE: 'swgb9', SHELLWEGO_BUILD_BRIDGE_CIDR: '10.91.0.0/16', SHELLWEGO_ISOLATION: 'none',
  });
  assert.deepEqual(e.natsUrls, ['nats://a:4222', 'nats://b:4222']);
  assert.equal(e.blobsDir, '/mnt/blobs');
  assert.equal(e.nodeDataDir, '/var/lib/node');
  assert.equal(e.buildBridgeName, 'swgb9');
  assert.equal(e.buildBridgeCidr, '10.91.0.0/16');
  assert.equal(e.isolation, 'none');
});

test('split config: a bad NATS URL or isolation is refused with the variable named', () => {
  assert.throws(() => splitConfigFromEnv({ SHELLWEGO_NATS_URL: 'http://127.0.0.1:4222' }), /SHELLWEGO_NATS_URL.*nats:\/\/host:port.*http:/);
  assert.throws(() => splitConfigFromEnv({ SHELLWEGO_NATS_URL: 'nats://a:1,127.0.0.1:4222' }), /got '127\.0\.0\.1:4222'/);
  assert.throws(() => splitConfigFromEnv({ SHELLWEGO_ISOLATION: 'vm' }), /SHELLWEGO_ISOLATION/);
});

test('a node pointed at a missing blob directory says where to point it and creates nothing', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'swg-node-'));
  try {
    const config = splitConfigFromEnv({ SHELLWEGO_NODE_DATA_DIR: join(dir, 'node'), SHELLWEGO_BLOBS_DIR: join(dir, 'nope'), SHELLWEGO_ISOLATION: 'none' });
    await assert.rejects(startNode(config, pino({ level: 'silent' })), /blob directory .*nope does not exist: point --blobs-dir \(SHELLWEGO_BLOBS_DIR\)/);
    assert.deepEqual(await readdir(dir), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
