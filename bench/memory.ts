/**
 * Memory of the all-in-one process: RSS idle, and with 50 running instances. Reference, same
 * run: RSS of a bare Node.js process (the runtime's own floor).
 * Run: node --import tsx bench/memory.ts
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { TestPlatform, waitFor } from '../test/helpers/platform.ts';
import { appDir } from '../test/helpers/apps.ts';
import { saveResult } from './lib.ts';

const INSTANCES = Number(process.env.BENCH_INSTANCES || 50);

async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

const bare = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
await new Promise((r) => setTimeout(r, 1000));
const bareMb = await rssMb(bare.pid!);
bare.kill();

const p = await TestPlatform.start({ isolation: 'sandbox', env: { SHELLWEGO_LOG_LEVEL: 'error' } });
try {
  const token = await p.token();
  await new Promise((r) => setTimeout(r, 5000));
  const idleMb = await rssMb(p.proc!.pid!);

  const dir = await appDir({ Procfile: 'web: node server.js\n', 'server.js': "require('http').createServer((q,s)=>s.end('ok')).listen(process.env.PORT)" });
  const run = async (args: string[]) => {
    const r = await p.cli(args, token, { cwd: dir });
    if (r.code !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  await run(['apps', 'create', 'many', '--plan', 'free', '--no-link']);
  await run(['deploy', dir, '--app', 'many']);
  const t0 = performance.now();
  await run(['scale', `web=${INSTANCES}`, '--app', 'many']);
  const c = await p.client(token);
  await waitFor(`${INSTANCES} running`, async () => (await c.call('listInstances', { params: { app: 'many' } })).filter((i) => i.state === 'running').length === INSTANCES, 300_000, 500);
  const scaleSeconds = (performance.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 5000));
  const loadedMb = await rssMb(p.proc!.pid!);
  for (let i = 0; i < 100; i++) await (await p.viaRouter('many')).text();

  const result = { instances: INSTANCES, bareNodeMb: bareMb, idleMb, withInstancesMb: loadedMb, perInstanceKb: ((loadedMb - idleMb) * 1024) / INSTANCES, scaleSeconds, ratios: { idle: idleMb / bareMb, loaded: loadedMb / bareMb } };
  console.log(`all-in-one process RSS (reference: bare node process ${bareMb.toFixed(0)} MB)`);
  console.log(`  idle:                    ${idleMb.toFixed(0)} MB   ${result.ratios.idle.toFixed(1)}x`);
  console.log(`  with ${INSTANCES} instances running:  ${loadedMb.toFixed(0)} MB   ${result.ratios.loaded.toFixed(1)}x   (+${result.perInstanceKb.toFixed(0)} KB per instance)`);
  console.log(`  scale 1 → ${INSTANCES}: all running after ${scaleSeconds.toFixed(1)} s`);
  await saveResult('memory', result);
} finally {
  await p.destroy();
}
