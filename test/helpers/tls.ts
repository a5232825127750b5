/** HTTPS and plain requests to the router with an explicit SNI name and Host header. */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTarGz } from './tarball.ts';

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  cert: PeerCertificate | null;
  authorized: boolean | null;
}

/** GET over HTTPS to 127.0.0.1:port with SNI `host`, verified against `ca` unless `ca` is null. */
export function httpsGet(port: number, host: string, path: string, ca: string | null): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1', port, path, servername: host, headers: { host }, agent: false,
      ...(ca === null ? { rejectUnauthorized: false } : { ca }),
    }, (res) => {
      const socket = res.socket as TLSSocket;
      const cert = socket.getPeerCertificate();
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, cert: cert && Object.keys(cert).length ? cert : null, authorized: socket.authorized }));
    });
    req.on('error', reject);
    req.end();
  });
}

export function httpGet(port: number, host: string, path: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, cert: null, authorized: null }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A dependency-free node app that echoes what the router forwarded. */
export function echoAppTarball(marker: string): Buffer {
  return makeTarGz([
    { name: 'Procfile', content: 'web: node server.js\n' },
    {
      name: 'server.js',
      content: `require('http').createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ marker: ${JSON.stringify(marker)}, proto: req.headers['x-forwarded-proto'] || null, host: req.headers.host }));
}).listen(process.env.PORT);\n`,
    },
  ]);
}

/** Files under `dir` (recursively) whose content contains `needle`. */
export async function filesContaining(dir: string, needle: string): Promise<string[]> {
  const hits: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && (await readFile(p)).includes(needle)) hits.push(p);
    }
  };
  await walk(dir);
  return hits;
}
