/**
 * Control plane at scale: 10,000 apps (100 organizations × 100) with web=3 each, 30,000
 * instances placed on 100 simulated nodes. The agents are simulated in this process: they speak
 * the real protocol over a real nats-server (heartbeats, assignments, instance statuses) but run
 * nothing. The `server` daemon is the real one (deployer, scheduler, SQLite store, API).
 * Measured: first heartbeat → all 30,000 instances running in the store (end-to-end placements/s),
 * the server's RSS once settled (target < 200 MB), and API latency (p50/p99 of 200 sequential
 * requests) of `GET /v1/apps` (an organization's 100 apps) and `GET /v1/apps/:app/instances`.
 * References, same run: the same server on an empty data dir (RSS and the same calls' latency),
 * and the same reads straight on the store from this process (what the API adds on top of them).
 * Also reported: the route table the nodes receive (its size: NATS refuses messages over its
 * max_payload, 1 MB by default) and the server's V8 heap once settled (from /metrics).
 * Run: node --import tsx bench/scale.ts        (smaller: BENCH_ORGS=10 BENCH_APPS_PER_ORG=100)
 * The server runs as `npm start` runs it (scripts/daemon.sh; BENCH_SERVER_LAUNCH=bundle: scripts/daemon.mjs
 * without its process settings, =tsx: through tsx); BENCH_SERVER_ENV="K=V …" adds to its environment,
 * BENCH_SERVER_NODE_ARGS adds node flags to the loaded server, BENCH_HOLD_S keeps it up after measuring.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Sqlite from 'better-sqlite3';
import { AssignmentsAssembler, RouteTableAssembler, newId, splitStatusReport, subjects } from '@shellwego/core';
import type { AssignmentsMessage, HeartbeatMessage, InstanceStatusMessage, RouteTableMessage } from '@shellwego/core';
import { openSqliteStore } from '@shellwego/store';
import { connectNatsBus } from '../packages/bus/src/nats.ts';
import type { NatsBus } from '../packages/bus/src/nats.ts';
import { NatsServerProcess } from '../packages/bus/src/testing.ts';
import { SecretBox } from '../packages/control-plane/src/secrets.ts';
import { bootstrapOwner } from '../packages/control-plane/src/auth.ts';
import { freePort, percentile, ROOT, saveResult } from './lib.ts';

const ORGS = Number(process.env.BENCH_ORGS || 100);
const APPS_PER_ORG = Number(process.env.BENCH_APPS_PER_ORG || 100);
const REPLICAS = 3;
const NODES = Number(process.env.BENCH_NODES || 100);
const REQUESTS = 200;
const EMAIL = 'admin@localhost';
const PASSWORD = 'bench-admin-password-1';
const TOTAL = ORGS * APPS_PER_ORG * REPLICAS;
/** Past this, placement is reported as not finished (with how far it got) and the rest is still measured. */
const PLACE_LIMIT_S = Number(process.env.BENCH_PLACE_LIMIT_S || 1800);

const children: ChildProcess[] = [];
const dirs: string[] = [];
const buses: NatsBus[] = [];
const timers: NodeJS.Timeout[] = [];
let nats: NatsServerProcess | null = null;

async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

/** The RSS split: anonymous memory (heaps, malloc) vs mapped files (the node binary, native modules). */
async function rssSplitMb(pid: number): Promise<{ anon: number; file: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN) / 1024;
  return { anon: kb('RssAnon'), file: kb('RssFile') };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The prepared store: organizations, apps, builds, current releases and formations, written directly. */
async function populate(dir: string): Promise<{ orgId: string; appName: string }> {
  const store = await openSqliteStore(join(dir, 'shellwego.db'));
  try {
    const secrets = await SecretBox.fromFile(join(dir, 'master.key'), store);
    // The owner the server would bootstrap, created here so its organization is one of the 100.
    await bootstrapOwner(store, { email: EMAIL, password: PASSWORD, passwordFile: join(dir, 'admin-password') });
    const user = (await store.users.byEmail(EMAIL))!;
    const first = (await store.organizations.listForUser(user.id))[0];
    const digest = randomBytes(32).toString('hex');
    for (let o = 0; o < ORGS; o++) {
      await store.transaction(async (tx) => {
        const org = o === 0 ? first : await tx.organizations.create({ id: newId('org'), name: `bench-org-${o}` });
        for (let a = 0; a < APPS_PER_ORG; a++) {
          const app = await tx.apps.create({ id: newId('app'), organizationId: org.id, name: `b${o}-a${a}`, plan: 'free' });
          const build = await tx.builds.create({ id: newId('bld'), appId: app.id, organizationId: org.id, sourceDigest: digest, createdBy: user.id });
          const release = await tx.releases.create({
            id: newId('rel'), appId: app.id, organizationId: org.id, buildId: build.id, description: 'bench', processTypes: { web: 'x' },
            artifactDigest: digest, configSealed: await secrets.sealJson(app, {}, tx), configKeys: [], createdBy: user.id,
          });
          await tx.builds.update(build.id, { state: 'succeeded', artifactDigest: digest, processTypes: { web: 'x' }, releaseId: release.id, finishedAt: new Date().toISOString() });
          await tx.apps.update(org.id, app.id, { currentReleaseId: release.id });
          await tx.formation.upsert(org.id, app.id, 'web', { quantity: REPLICAS, command: 'x' });
        }
      });
    }
    return { orgId: first.id, appName: 'b0-a0' };
  } finally {
    await store.close();
  }
}

async function startServer(dir: string, natsUrl: string, profile = false): Promise<{ proc: ChildProcess; api: string; output: () => string }> {
  const port = await freePort();
  // BENCH_SERVER_NODE_ARGS: node flags for the loaded server only, e.g. a V8 tick profile that
  // survives a kill: "--prof --no-logfile-per-isolate --logfile=/tmp/v8.log".
  const prof = profile && process.env.BENCH_SERVER_NODE_ARGS ? process.env.BENCH_SERVER_NODE_ARGS.split(' ').filter(Boolean) : [];
  // As `npm start` runs the daemons (scripts/daemon.sh: malloc and V8 heap settings, then the bundle;
  // ADR 0024); BENCH_SERVER_LAUNCH=bundle: scripts/daemon.mjs without those settings; =tsx: through tsx, as before ADR 0021.
  const launch = process.env.BENCH_SERVER_LAUNCH ?? 'daemon';
  const [command, args] = launch === 'tsx' ? [process.execPath, [...prof, '--import', 'tsx', join(ROOT, 'packages/server/src/main.ts')]]
    : launch === 'bundle' ? [process.execPath, [...prof, join(ROOT, 'scripts/daemon.mjs')]]
    : ['sh', [join(ROOT, 'scripts/daemon.sh')]];
  // BENCH_SERVER_ENV: extra environment for both servers, e.g. "SHELLWEGO_HEAP_GROWING_PERCENT=0".
  const extraEnv = Object.fromEntries((process.env.BENCH_SERVER_ENV ?? '').split(' ').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const proc = spawn(command, [...args, 'server'], {
    cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...(process.env as Record<string, string>), SHELLWEGO_NATS_URL: natsUrl, SHELLWEGO_DATA_DIR: dir, SHELLWEGO_BLOBS_DIR: join(dir, 'blobs'),
      SHELLWEGO_API_PORT: String(port), SHELLWEGO_TLS: 'off', SHELLWEGO_API_TLS: 'off', SHELLWEGO_ISOLATION: 'none', SHELLWEGO_LOG_LEVEL: 'error',
      SHELLWEGO_ADMIN_EMAIL: EMAIL, SHELLWEGO_ADMIN_PASSWORD: PASSWORD,
      // Core NATS, as measured so far (JetStream is split mode's default; this nats-server runs without -js).
      SHELLWEGO_NATS_JETSTREAM: '0',
      ...(launch === 'daemon' && prof.length > 0 ? { SHELLWEGO_NODE_FLAGS: prof.join(' ') } : {}),
      ...extraEnv,
    },
  });
  children.push(proc);
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const api = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + Number(process.env.BENCH_START_LIMIT_S || 900) * 1000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}:\n${out.slice(-3000)}`);
    if (await fetch(`${api}/v1/health`).then((r) => r.ok, () => false)) break;
    if (Date.now() > deadline) throw new Error(`server did not come up:\n${out.slice(-3000)}`);
    await sleep(200);
  }
  return { proc, api, output: () => out };
}

async function login(api: string): Promise<string> {
  const r = await fetch(`${api}/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: EMAIL, password: PASSWORD }) });
  if (!r.ok) throw new Error(`login: ${r.status} ${await r.text()}`);
  return ((await r.json()) as { token: string }).token;
}

/** p50/p99 of REQUESTS sequential GETs; checks each answer is a JSON array of the expected length. */
async function latency(api: string, token: string, path: string, expect: number | null): Promise<{ p50Ms: number; p99Ms: number }> {
  const times: number[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    const t0 = performance.now();
    const r = await fetch(api + path, { headers: { authorization: `Bearer ${token}` } });
    const body = (await r.json()) as unknown[];
    times.push(performance.now() - t0);
    if (!r.ok || !Array.isArray(body) || (expect !== null && body.length !== expect)) throw new Error(`GET ${path}: ${r.status}, ${Array.isArray(body) ? body.length : JSON.stringify(body)} items, expected ${expect}`);
  }
  return { p50Ms: percentile(times, 50), p99Ms: percentile(times, 99) };
}

/** The same reads as the API handlers, straight on the store (this process, read-only use of the server's SQLite). */
async function storeLatency(fn: () => Promise<unknown>): Promise<{ p50Ms: number; p99Ms: number }> {
  const times: number[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  return { p50Ms: percentile(times, 50), p99Ms: percentile(times, 99) };
}

/** Route tables as a node's router receives them. */
const routeTables = { received: 0, largestBytes: 0, tables: 0, gaps: 0, lastRoutes: 0, lastBackends: 0 };

/**
 * One simulated agent: heartbeats every 2 s (with the assignment generation it acts on, and the
 * first one also with its route table's version, as a real node's agent and router report them),
 * answers each new assignment with `running`, and reports every instance it runs again every
 * 10 s in one report, as the real agent does (a status lost in a burst — NATS drops messages to a
 * slow consumer — is repaired by the next report).
 */
async function simulatedAgent(natsUrl: string, i: number, firstHeartbeat: () => void): Promise<() => void> {
  const nodeId = newId('nod');
  const bus = await connectNatsBus({ servers: natsUrl, name: `bench-agent-${i}`, onError: (err) => console.error('agent bus error', err) });
  buses.push(bus);
  const reported = new Map<string, number>();
  const statuses = new Map<string, InstanceStatusMessage>();
  let generation: number | null = null;
  let routesVersion: number | null | undefined;
  if (i === 0) {
    routesVersion = null;
    // Assembles chunks and deltas as a router does (core/src/route-sync.ts).
    const assembler = new RouteTableAssembler();
    let held: RouteTableMessage | null = null;
    bus.subscribe<RouteTableMessage>(subjects.routes, (m) => {
      routeTables.received++;
      routeTables.largestBytes = Math.max(routeTables.largestBytes, Buffer.byteLength(JSON.stringify(m)));
      const got = assembler.accept(m, held);
      if (got === 'gap') {
        routeTables.gaps++;
        void bus.publish(subjects.routesRequest, {});
      }
      if (typeof got === 'string' || (held && got.table.version <= held.version)) return;
      held = got.table;
      routesVersion = held.version;
      routeTables.tables++;
      routeTables.lastRoutes = Object.keys(held.routes).length;
      routeTables.lastBackends = Object.values(held.routes).reduce((s, r) => s + r.backends.length, 0);
    });
  }
  // Sets too large for one message come in chunks (core/src/route-sync.ts): acted on when whole, as the agent does.
  const chunks = new AssignmentsAssembler();
  bus.subscribe<AssignmentsMessage>(subjects.assignments(nodeId), async (msg) => {
    const whole = chunks.accept(msg);
    if (typeof whole === 'string') return;
    const m = whole.message;
    if (generation !== null && m.generation < generation) return;
    generation = m.generation;
    const at = new Date().toISOString();
    for (const s of m.instances) {
      if (reported.get(s.instanceId) === s.restartGeneration) continue;
      reported.set(s.instanceId, s.restartGeneration);
      const status: InstanceStatusMessage = {
        nodeId, instanceId: s.instanceId, state: 'running', exitCode: null, signal: null, oomKilled: false, restarts: 0,
        address: `127.0.0.1:${20_000 + (reported.size % 40_000)}`, startedAt: at, at, restartGeneration: s.restartGeneration,
      };
      statuses.set(s.instanceId, status);
      await bus.publish(subjects.instanceStatus(nodeId), status);
    }
    const assigned = new Set(m.instances.map((s) => s.instanceId));
    for (const id of statuses.keys()) if (!assigned.has(id)) statuses.delete(id);
  });
  // The periodic full report: one message per node, as the agent sends it (split only past the message size).
  timers.push(setInterval(() => {
    if (statuses.size === 0) return;
    for (const part of splitStatusReport({ nodeId, statuses: [...statuses.values()] })) void bus.publish(subjects.instanceStatus(nodeId), part);
  }, 10_000));
  const beat = () => {
    const hb: HeartbeatMessage = {
      nodeId, name: `sim-${i}`, isolation: 'none', capacity: { cpus: 1024, memoryMb: 4_194_304 }, instances: reported.size, at: new Date().toISOString(),
      assignmentsGeneration: generation, ...(routesVersion !== undefined ? { routesVersion } : {}),
    };
    firstHeartbeat();
    void bus.publish(subjects.heartbeat(nodeId), hb);
  };
  // Heartbeats start once every agent is connected (the caller's call): nodes that joined first
  // would otherwise get the whole cluster's instances in one pass (thousands each; an assignment
  // set that large is over NATS's max_payload).
  return () => {
    beat();
    timers.push(setInterval(beat, 2000));
  };
}

async function stopAll(): Promise<void> {
  for (const t of timers) clearInterval(t);
  await Promise.all(buses.map((b) => b.close().catch(() => undefined)));
  for (const c of children) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    const exited = new Promise((r) => c.once('exit', r));
    process.kill(c.pid!, 'SIGTERM');
    const t = setTimeout(() => c.exitCode === null && c.signalCode === null && process.kill(c.pid!, 'SIGKILL'), 20_000);
    await exited;
    clearTimeout(t);
  }
  await nats?.stop().catch(() => undefined);
  for (const d of dirs) await rm(d, { recursive: true, force: true });
}

let serverOutput: (() => string) | null = null;
try {
  nats = await NatsServerProcess.start();

  // Reference: the same server on an empty data dir (one app, no release, for the instances call).
  const emptyDir = await mkdtemp(join(tmpdir(), 'swg-bench-scale-empty-'));
  dirs.push(emptyDir);
  const empty = await startServer(emptyDir, nats.url);
  const emptyToken = await login(empty.api);
  const created = await fetch(`${empty.api}/v1/apps`, { method: 'POST', headers: { authorization: `Bearer ${emptyToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: `bench-empty-${randomBytes(3).toString('hex')}` }) });
  if (!created.ok) throw new Error(`create app: ${created.status} ${await created.text()}`);
  const emptyApp = ((await created.json()) as { name: string }).name;
  await sleep(5000);
  const emptyRss = await rssMb(empty.proc.pid!);
  const emptySplit = await rssSplitMb(empty.proc.pid!);
  const emptyApps = await latency(empty.api, emptyToken, '/v1/apps', 1);
  const emptyInstances = await latency(empty.api, emptyToken, `/v1/apps/${emptyApp}/instances`, 0);
  const exited = new Promise((r) => empty.proc.once('exit', r));
  empty.proc.kill('SIGTERM');
  await exited;

  const dir = await mkdtemp(join(tmpdir(), 'swg-bench-scale-'));
  dirs.push(dir);
  let t = performance.now();
  const { appName } = await populate(dir);
  const populateS = (performance.now() - t) / 1000;
  console.log(`populated ${ORGS * APPS_PER_ORG} apps in ${populateS.toFixed(1)} s`);

  t = performance.now();
  const server = await startServer(dir, nats.url, true);
  serverOutput = server.output;
  const startS = (performance.now() - t) / 1000;
  const idleRss = await rssMb(server.proc.pid!);
  console.log(`server up in ${startS.toFixed(1)} s (RSS ${idleRss.toFixed(0)} MB, no nodes yet)`);

  const db = new Sqlite(join(dir, 'shellwego.db'), { readonly: true });
  const countRunning = () => (db.prepare("SELECT count(*) AS c FROM instances WHERE state = 'running' AND desired = 'running'").get() as { c: number }).c;
  let t0 = 0;
  const first = () => { if (!t0) t0 = performance.now(); };
  const starts: (() => void)[] = [];
  for (let i = 0; i < NODES; i++) starts.push(await simulatedAgent(nats.url, i, first));
  for (const start of starts) start();
  let running = 0;
  let peakRss = 0;
  const deadline = Date.now() + PLACE_LIMIT_S * 1000;
  let lastLog = 0;
  const progress: { s: number; running: number; rssMb: number }[] = [];
  while ((running = countRunning()) < TOTAL) {
    if (server.proc.exitCode !== null || server.proc.signalCode !== null) throw new Error(`server exited with ${server.proc.exitCode ?? server.proc.signalCode}:\n${server.output().slice(-3000)}`);
    if (Date.now() > deadline) break;
    const rss = await rssMb(server.proc.pid!);
    peakRss = Math.max(peakRss, rss);
    if (Date.now() - lastLog > 15_000) {
      lastLog = Date.now();
      progress.push({ s: (performance.now() - t0) / 1000, running, rssMb: rss });
      console.log(`  ${((performance.now() - t0) / 1000).toFixed(0)} s: ${running} running, server RSS ${rss.toFixed(0)} MB`);
    }
    await sleep(250);
  }
  const completed = running >= TOTAL;
  const errors = server.output().split('\n').filter((l) => /"level":(50|60)/.test(l));
  if (errors.length > 0) console.log(`  server logged ${errors.length} error(s); the last: ${errors.at(-1)!.slice(0, 600)}`);
  if (!completed) console.log(`  NOT FINISHED: ${running} of ${TOTAL} running after ${PLACE_LIMIT_S} s`);
  const placeS = (performance.now() - t0) / 1000;
  const total = (db.prepare('SELECT count(*) AS c FROM instances').get() as { c: number }).c;
  db.close();
  // Settled: a few reconcile passes and heartbeats with everything running.
  // The RSS swings by ±100 MB between V8 collections: sampled every second for 30 s, the median is
  // the settled figure (a single reading was a lottery).
  const samples: number[] = [];
  if (completed) await sleep(10_000);
  for (let s = 0; s < (completed ? 30 : 1); s++) {
    if (s > 0) await sleep(1000);
    samples.push(await rssMb(server.proc.pid!));
  }
  const settledRss = percentile(samples, 50);
  const settledSplit = await rssSplitMb(server.proc.pid!);
  peakRss = Math.max(peakRss, ...samples);
  const token = await login(server.api);
  const apps = await latency(server.api, token, '/v1/apps', APPS_PER_ORG);
  const instances = await latency(server.api, token, `/v1/apps/${appName}/instances`, completed ? REPLICAS : null);
  const metricsText = await (await fetch(`${server.api}/metrics`)).text();
  const metric = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metricsText)?.[1] ?? NaN) / 1024 / 1024;
  const heap = { usedMb: metric('shellwego_nodejs_heap_size_used_bytes'), totalMb: metric('shellwego_nodejs_heap_size_total_bytes'), externalMb: metric('shellwego_nodejs_external_memory_bytes') };
  // What the memory costs in time: V8's collections since the start (seconds by kind) and the event loop's delays.
  const gcSeconds = Object.fromEntries([...metricsText.matchAll(/^shellwego_nodejs_gc_duration_seconds_sum\{kind="(\w+)"\} (\S+)$/gm)].map((m) => [m[1], Number(m[2])]));
  // The deployer's passes over every app (the repair; changes go out as they happen): how many, and how long on average.
  const passCount = Number(/^shellwego_reconcile_full_pass_seconds_count (\S+)$/m.exec(metricsText)?.[1] ?? NaN);
  const passes = { count: passCount, meanS: Number(/^shellwego_reconcile_full_pass_seconds_sum (\S+)$/m.exec(metricsText)?.[1] ?? NaN) / passCount };
  const loopLag = { p99Ms: metric('shellwego_nodejs_eventloop_lag_p99_seconds') * 1024 * 1024 * 1000, maxMs: metric('shellwego_nodejs_eventloop_lag_max_seconds') * 1024 * 1024 * 1000 };
  // Reference: what the handlers read, straight on the store (apps of the org + each current release; one app's instances).
  const store = await openSqliteStore(join(dir, 'shellwego.db'));
  let storeApps: { p50Ms: number; p99Ms: number };
  let storeInstances: { p50Ms: number; p99Ms: number };
  try {
    const app = (await store.apps.listAll()).find((a) => a.name === appName)!;
    storeApps = await storeLatency(async () => {
      const list = await store.apps.list(app.organizationId);
      await Promise.all(list.map((a) => (a.currentReleaseId ? store.releases.byId(a.organizationId, a.currentReleaseId) : null)));
    });
    storeInstances = await storeLatency(() => store.instances.listByApp(app.organizationId, app.id));
  } finally {
    await store.close();
  }

  const result = {
    organizations: ORGS, apps: ORGS * APPS_PER_ORG, instances: TOTAL, instanceRows: total, nodes: NODES, populateSeconds: populateS, serverStartSeconds: startS,
    completed, running, placeSeconds: placeS, placementsPerSecond: running / placeS, progress,
    rssMb: { empty: emptyRss, loadedNoNodes: idleRss, peak: peakRss, settled: settledRss, settledMin: Math.min(...samples), settledMax: Math.max(...samples), ratio: settledRss / emptyRss, emptySplit, settledSplit },
    heapSettled: heap, gcSeconds, loopLag, passes,
    listApps: { empty: emptyApps, store: storeApps, loaded: apps, p99Ratio: apps.p99Ms / emptyApps.p99Ms, p99RatioToStore: apps.p99Ms / storeApps.p99Ms },
    listInstances: { empty: emptyInstances, store: storeInstances, loaded: instances, p99Ratio: instances.p99Ms / emptyInstances.p99Ms, p99RatioToStore: instances.p99Ms / storeInstances.p99Ms },
    routeTables,
  };
  const lat = (l: { p50Ms: number; p99Ms: number }) => `p50 ${l.p50Ms.toFixed(1)} ms  p99 ${l.p99Ms.toFixed(1)} ms`;
  console.log(`control plane with ${result.apps} apps / ${TOTAL} instances on ${NODES} simulated nodes (reference: the same server, empty)`);
  console.log(`  ${running} of ${TOTAL} running after  ${placeS.toFixed(1)} s   ${Math.round(result.placementsPerSecond)} placements/s end to end${completed ? '' : '   (NOT FINISHED)'}`);
  console.log(`  RSS ${completed ? 'settled   ' : 'at the end'} (median of 30 s)      ${settledRss.toFixed(0)} MB (${Math.min(...samples).toFixed(0)}–${Math.max(...samples).toFixed(0)})   ${result.rssMb.ratio.toFixed(1)}x empty (${emptyRss.toFixed(0)} MB), peak ${peakRss.toFixed(0)} MB   (target < 200 MB)`);
  console.log(`  RSS split settled: ${settledSplit.anon.toFixed(0)} MB anonymous (heaps, malloc), ${settledSplit.file.toFixed(0)} MB mapped files; empty: ${emptySplit.anon.toFixed(0)} + ${emptySplit.file.toFixed(0)} MB`);
  console.log(`  server GC since start: ${Object.entries(gcSeconds).map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(', ')}; event loop delay p99 ${loopLag.p99Ms.toFixed(0)} ms, max ${loopLag.maxMs.toFixed(0)} ms`);
  console.log(`  server passes over every app: ${passes.count}, ${passes.meanS.toFixed(2)} s each on average`);
  console.log(`  server heap settled: ${heap.usedMb.toFixed(0)} MB used of ${heap.totalMb.toFixed(0)} MB, external ${heap.externalMb.toFixed(0)} MB`);
  console.log(`  GET /v1/apps (${APPS_PER_ORG} apps)            ${lat(apps)}   empty server: ${lat(emptyApps)}   p99 ${result.listApps.p99Ratio.toFixed(1)}x`);
  console.log(`      same reads on the store:        ${lat(storeApps)}   API p99 ${result.listApps.p99RatioToStore.toFixed(1)}x the store's`);
  console.log(`  GET /v1/apps/:app/instances (${REPLICAS})  ${lat(instances)}   empty server: ${lat(emptyInstances)}   p99 ${result.listInstances.p99Ratio.toFixed(1)}x`);
  console.log(`      same read on the store:         ${lat(storeInstances)}   API p99 ${result.listInstances.p99RatioToStore.toFixed(1)}x the store's`);
  console.log(`  route messages received by a node: ${routeTables.received} (chunks and deltas), largest ${(routeTables.largestBytes / 1024).toFixed(0)} KiB; ${routeTables.tables} tables assembled, ${routeTables.gaps} gaps; last: ${routeTables.lastRoutes} routes, ${routeTables.lastBackends} backends`);
  await saveResult('scale', result);
  // BENCH_HOLD_S: keep the loaded server up after measuring (e.g. to take a heap snapshot of it).
  if (process.env.BENCH_HOLD_S) {
    console.log(`holding the server (pid ${server.proc.pid}) for ${process.env.BENCH_HOLD_S} s`);
    await sleep(Number(process.env.BENCH_HOLD_S) * 1000);
  }
} finally {
  // BENCH_SERVER_OUT: the loaded server's output, e.g. with BENCH_SERVER_NODE_ARGS=--trace-gc.
  if (process.env.BENCH_SERVER_OUT && serverOutput) await writeFile(process.env.BENCH_SERVER_OUT, serverOutput());
  await stopAll();
}
