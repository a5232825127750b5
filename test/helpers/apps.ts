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
