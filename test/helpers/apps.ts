import { mkdtemp, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/** Writes a throwaway app directory from a map of relative path → content. */
export async function appDir(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'swg-app-'));
  for (const [rel, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, rel)), { recursive: true });
    await writeFile(join(dir, rel), content);
  }
  return dir;
}

/** A dependency-free node web app that reports when it booted (to tell a restart from an adoption). */
export const bootStampApp = {
  'Procfile': 'web: node server.js\n',
  'server.js': `
const http = require('http');
const started = Date.now() + '-' + Math.random().toString(36).slice(2);
http.createServer((req, res) => {
  console.log('hit ' + req.url);
  res.end(JSON.stringify({ started, dyno: process.env.DYNO, greeting: process.env.GREETING || null, uid: process.getuid() }));
}).listen(process.env.PORT, () => console.log('listening on ' + process.env.PORT));
`,
};

/** Behaviour set by config vars, so every `config set` is a new release that behaves differently. */
export const knobApp = {
  'Procfile': 'web: node server.js\n',
  'server.js': `
const http = require('http');
const env = process.env;
const version = env.VERSION || 'v?';
const boot = Date.now();
if (env.CRASH_ON_BOOT === '1') { console.error('boom: CRASH_ON_BOOT is set'); process.exit(3); }
const warm = () => env.HEALTH !== 'fail' && Date.now() - boot >= Number(env.HEALTH_DELAY_MS || 0);
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/health') { res.statusCode = warm() ? 200 : 503; return res.end(warm() ? 'ok' : 'warming up'); }
  if (!warm()) { res.statusCode = 503; return res.end(version + ' warming up'); }
  if (url.pathname === '/slow') return setTimeout(() => res.end(version + ' slow'), Number(url.searchParams.get('ms') || 1000));
  if (Math.random() < Number(env.ERROR_RATE || 0)) { res.statusCode = 500; return res.end(version + ' error'); }
  res.end(version);
});
setTimeout(() => server.listen(env.PORT, () => console.log(version + ' listening')), Number(env.BOOT_DELAY_MS || 0));
process.on('SIGTERM', () => {
  if (env.IGNORE_SIGTERM === '1') return console.log(version + ' ignoring SIGTERM');
  console.log(version + ' got SIGTERM: finishing in-flight requests');
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
`,
};

/**
 * Says which instance answered (the platform's SHELLWEGO_INSTANCE), plus a singleton-style
 * `worker` process type that only ticks; both finish on SIGTERM.
 */
export const whoamiApp = {
  'Procfile': 'web: node server.js\nworker: node worker.js\n',
  'server.js': `
const http = require('http');
const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ instance: process.env.SHELLWEGO_INSTANCE, version: process.env.VERSION || 'v?' }));
});
server.listen(process.env.PORT, () => console.log('listening on ' + process.env.PORT));
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
`,
  'worker.js': `
console.log('worker ' + process.env.SHELLWEGO_INSTANCE + ' started');
setInterval(() => console.log('worker tick'), 5000);
process.on('SIGTERM', () => process.exit(0));
`,
};
