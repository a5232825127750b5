/** Test helpers that run a built artifact the way the agent does (not exported from index.ts). */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import * as tar from 'tar';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export function httpGet(url: string, timeoutMs = 2000): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

export interface RunningApp {
  port: number;
  output: () => string;
  stop(): Promise<void>;
}

/**
 * Extract `artifact` into `dir` and start `command` like the agent: cwd = app dir, source
 * .profile.d/*.sh, exec the command with $PORT. Resolves once GET / answers.
 */
export async function runArtifact(artifact: string, dir: string, command: string, env: Record<string, string> = {}): Promise<RunningApp> {
  await fsp.mkdir(dir, { recursive: true });
  await tar.x({ file: artifact, cwd: dir });
  const port = await freePort();
  const script = 'for f in ./.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; exec sh -c "$0"';
  const child: ChildProcess = spawn('/bin/sh', ['-c', script, command], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, PORT: String(port), ...env },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((r) => child.once('exit', () => r()));
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {}
    await gone;
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`app exited with ${child.exitCode}: ${out}`);
    try {
      await httpGet(`http://127.0.0.1:${port}/`, 500);
      break;
    } catch {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`app did not answer on port ${port}: ${out}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { port, output: () => out, stop };
}
