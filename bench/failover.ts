/**
 * Failover time: two nodes (split mode over NATS, one machine), an app with one instance on each;
 * one node loses power (daemon and app processes SIGKILLed). Measured: from the power loss until
 * the app has its 2 instances running again, both on the surviving node. Reference, same run: the
 * configured node-down timeout (default settings: 10 s), the floor of any heartbeat-based failover.
 * Run: node --import tsx bench/failover.ts
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SplitPlatform } from '../test/helpers/split.ts';
import { appDir, knobApp } from '../test/helpers/apps.ts';
import { waitFor } from '../test/helpers/platform.ts';
import { LoadGenerator } from '../test/helpers/load.ts';
import { saveResult } from './lib.ts';

const TIMEOUT_MS = 10_000; // the default of SHELLWEGO_NODE_DOWN_AFTER_MS
const p = await SplitPlatform.start({ isolation: 'sandbox', env: { SHELLWEGO_LOG_LEVEL: 'error' } });
try {
  const token = await p.token();
  const cli = async (args: string[]) => {
    const r = await p.cli(args, token);
    if (r.code !== 0) throw new Error(`shellwego ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  };
  const second = await p.addNode();
  const secondId = (await readFile(join(second.dataDir, 'node-id'), 'utf8')).trim();
  await cli(['apps', 'create', 'fo', '--no-link']);
  await cli(['config', 'set', 'VERSION=v1', '--app', 'fo']);
  await cli(['deploy', await appDir(knobApp), '--app', 'fo']);
  await cli(['scale', 'web=2', '--app', 'fo']);
  const running = async () => (JSON.parse(await cli(['ps', '--app', 'fo', '--json'])) as { state: string; nodeId: string }[]).filter((i) => i.state === 'running');
  await waitFor('one instance per node', async () => { const r = await running(); return r.length === 2 && new Set(r.map((i) => i.nodeId)).size === 2; }, 90_000, 200);

  const load = new LoadGenerator({ port: second.routerPort, host: 'fo.localhost', concurrency: 2 }).start();
  await load.succeeded(50);
  const t0 = performance.now();
  await p.powerOff({ daemon: p.node, dataDir: p.nodeDir });
  await waitFor('2 instances on the surviving node', async () => { const r = await running(); return r.length === 2 && r.every((i) => i.nodeId === secondId); }, 120_000, 50);
  const failoverMs = performance.now() - t0;
  await load.succeeded(50);
  const res = await load.stop();
  const result = { nodeDownTimeoutMs: TIMEOUT_MS, failoverMs, ratio: failoverMs / TIMEOUT_MS, failedRequests: res.failed, requests: res.ok + res.failed };
  console.log('node power loss → the app back to 2 running instances on the other node (default settings)');
  console.log(`  reference: node-down timeout      ${(TIMEOUT_MS / 1000).toFixed(1)} s`);
  console.log(`  failover                          ${(failoverMs / 1000).toFixed(2)} s   ${result.ratio.toFixed(2)}x the timeout   (target < 15 s)`);
  console.log(`  failed requests meanwhile         ${res.failed} of ${result.requests} (through the surviving node's router)`);
  await saveResult('failover', result);
} finally {
  await p.destroy();
}
