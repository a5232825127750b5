/**
 * Child process of bench/tls.ts: the ShellWeGo router terminating TLS in its own process.
 *
 *   node --import tsx bench/tls-child.ts <backend host:port> <hostname> <cert.pem> <key.pem>
 *
 * Prints one JSON line `{"port": N}` (the HTTPS port) when listening, then serves until SIGTERM.
 */
import { readFileSync } from 'node:fs';
import { InProcessBus } from '@shellwego/bus';
import { subjects } from '@shellwego/core';
import type { CertificatesMessage, RouteTableMessage } from '@shellwego/core';
import { createRouter } from '@shellwego/router';

const [backendAddress, hostname, certFile, keyFile] = process.argv.slice(2);

async function main(): Promise<void> {
  const bus = new InProcessBus();
  const router = await createRouter({ bus, host: '127.0.0.1', port: 0, tls: { port: 0 } });
  const table: RouteTableMessage = {
    version: 1,
    routes: { [hostname]: { appId: 'app_bench', appName: 'bench', backends: [{ instanceId: 'bench-1', address: backendAddress }] } },
  };
  const certs: CertificatesMessage = {
    version: 1,
    certificates: [{ hostnames: [hostname], certPem: readFileSync(certFile, 'utf8'), keyPem: readFileSync(keyFile, 'utf8'), notAfter: '' }],
  };
  await bus.publish(subjects.routes, table);
  await bus.publish(subjects.certificates, certs);
  await bus.drain();
  if (router.table().version !== 1) throw new Error('route table not applied');
  process.stdout.write(`${JSON.stringify({ port: router.httpsPort })}\n`);
  process.on('SIGTERM', () => {
    void router.close().then(() => process.exit(0));
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`${String((err as Error).stack ?? err)}\n`);
  process.exit(1);
});
