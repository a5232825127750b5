/**
 * Test fixtures shared by the agent's tests: a directory-backed BlobStore, artifact tarballs,
 * a status recorder on the bus. Not exported from the package.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { create as createTar } from 'tar';
import { isStatusReport, subjects } from '@shellwego/core';
import type { AppLogMessage, BlobStore, InstanceSpec, InstanceStatusMessage, InstanceStatusReport, LogLineT } from '@shellwego/core';
import type { Bus } from '@shellwego/bus';

/** Content-addressed files in a directory (the real stores live in @shellwego/store). */
export class DirBlobStore implements BlobStore {
  constructor(private readonly dir: string) {}

  async putFile(file: string): Promise<string> {
    await fsp.mkdir(this.dir, { recursive: true });
    const digest = createHash('sha256').update(await fsp.readFile(file)).digest('hex');
    await fsp.copyFile(file, path.join(this.dir, digest));
    return digest;
  }

  async pathOf(digest: string): Promise<string> {
    const p = path.join(this.dir, digest);
    await fsp.access(p);
    return p;
  }

  async has(digest: string): Promise<boolean> {
    return fsp.access(path.join(this.dir, digest)).then(
      () => true,
      () => false,
    );
  }
}

/**
 * The test app: an HTTP server on $PORT answering {pid, started, dyno, greeting, port} as JSON,
 * where greeting comes from .profile.d/x.sh (proves profile scripts are sourced).
 */
export const SERVER_JS = `
const http = require('http');
const started = Date.now() + '-' + process.hrtime.bigint();
const port = Number(process.env.PORT);
http.createServer((req, res) => {
  console.log('request ' + req.url);
  if (req.url === '/crash') { res.end('bye'); setTimeout(() => process.exit(7), 10); return; }
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ pid: process.pid, started, dyno: process.env.DYNO, greeting: process.env.GREETING, port, home: process.env.HOME, uid: process.getuid() }));
}).listen(port, () => console.log('listening on ' + port + ' as ' + process.env.DYNO));
process.on('SIGTERM', () => { console.log('got SIGTERM'); process.exit(0); });
`;

export async function buildArtifact(workDir: string, blobs: BlobStore, files: Record<string, string> = {}, gzip = true): Promise<string> {
  const src = path.join(workDir, `src-${Math.random().toString(36).slice(2)}`);
  await fsp.mkdir(path.join(src, '.profile.d'), { recursive: true });
  await fsp.writeFile(path.join(src, 'server.js'), SERVER_JS);
  await fsp.writeFile(path.join(src, '.profile.d', 'x.sh'), 'export GREETING="hello from profile"\n');
  for (const [name, body] of Object.entries(files)) {
    await fsp.mkdir(path.dirname(path.join(src, name)), { recursive: true });
    await fsp.writeFile(path.join(src, name), body);
  }
  const tarball = path.join(workDir, `artifact-${Math.random().toString(36).slice(2)}.tar${gzip ? '.gz' : ''}`);
  await createTar({ file: tarball, cwd: src, gzip, portable: true }, ['.']);
  return blobs.putFile(tarball);
}

export function makeSpec(id: string, digest: string, over: Partial<InstanceSpec> = {}): InstanceSpec {
  return {
    instanceId: id,
    appId: 'app_test1',
    appName: 'demo',
    organizationId: 'org_1',
    releaseId: 'rel_1',
    releaseVersion: 1,
    processType: 'web',
    index: 1,
    command: 'node server.js',
    env: { NODE_ENV: 'production' },
    artifactDigest: digest,
    limits: { memoryMb: 256, cpus: 1, pids: 128 },
    port: 5000,
    restartGeneration: 0,
    ...over,
  };
}

/** Records what the agent publishes: status per instance, app log lines, heartbeats. */
export class BusRecorder {
  statuses: InstanceStatusMessage[] = [];
  logs: LogLineT[] = [];
  heartbeats = 0;
  private waiters: Array<() => void> = [];

  constructor(bus: Bus) {
    bus.subscribe<InstanceStatusMessage | InstanceStatusReport>(subjects.allInstanceStatus, (m) => {
      // The periodic report counts as the statuses in it.
      if (isStatusReport(m)) this.statuses.push(...m.statuses);
      else this.statuses.push(m);
      this.notify();
    });
    bus.subscribe<AppLogMessage>(subjects.allAppLogs, (m) => {
      this.logs.push(...m.lines);
      this.notify();
    });
    bus.subscribe(subjects.allHeartbeats, () => {
      this.heartbeats++;
      this.notify();
    });
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  of(instanceId: string): InstanceStatusMessage[] {
    return this.statuses.filter((s) => s.instanceId === instanceId);
  }

  last(instanceId: string): InstanceStatusMessage | undefined {
    return this.of(instanceId).at(-1);
  }

  /** Distinct consecutive states reported for an instance. */
  states(instanceId: string): string[] {
    const out: string[] = [];
    for (const s of this.of(instanceId)) if (out.at(-1) !== s.state) out.push(s.state);
    return out;
  }

  async until<T>(what: string, fn: () => T | undefined | null | false, ms = 20_000): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const v = fn();
      if (v) return v;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; statuses: ${JSON.stringify(this.statuses.map((s) => [s.instanceId, s.state, s.exitCode, s.restarts]))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 100));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Waits for a status report of `instanceId` matching `pred`, newer than index `from`. */
  untilStatus(instanceId: string, pred: (s: InstanceStatusMessage) => boolean, ms?: number, from = 0): Promise<InstanceStatusMessage> {
    return this.until(`${instanceId} status`, () => this.statuses.slice(from).find((s) => s.instanceId === instanceId && pred(s)), ms);
  }
}

export async function httpJson(address: string, urlPath = '/', timeoutMs = 2000): Promise<Record<string, unknown>> {
  const res = await fetch(`http://${address}${urlPath}`, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    return { text };
  }
}

/** A live (non-zombie) process. */
export async function pidAlive(pid: number): Promise<boolean> {
  try {
    const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}
