/**
 * Child process of bench/router.ts, so the load tool, the proxy and the backend each get their
 * own event loop (as they would in production).
 *
 *   node --import tsx bench/router-child.ts backend
 *   node --import tsx bench/router-child.ts router <backend host:port> <hostname>
 *
 * Prints one JSON line `{"port": N}` on stdout when listening, then serves until SIGTERM.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { InProcessBus } from '@shellwego/bus';
import { subjects } from '@shellwego/core';
import type { RouteTableMessage } from '@shellwego/core';
import { createRouter } from '@shellwego/router';

const [mode, backendAddress, hostname] = process.argv.slice(2);

async function main(): Promise<void> {
  if (mode === 'backend') {
    const body = Buffer.from('hello world');
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
      res.end(body);
    });
    // Longer than the proxies' pool idle times, so no keep-alive races skew the numbers.
    server.keepAliveTimeout = 120_000;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    ready((server.address() as AddressInfo).port);
    process.on('SIGTERM', () => process.exit(0));
    return;
  }
  if (mode === 'router') {
    const bus = new InProcessBus();
    const router = await createRouter({ bus, host: '127.0.0.1', port: 0 });
    const table: RouteTableMessage = {
      version: 1,
      routes: { [hostname]: { appId: 'app_bench', appName: 'bench', backends: [{ instanceId: 'bench-1', address: backendAddress }] } },
    };
    await bus.publish(subjects.routes, table);
    await bus.drain();
    if (router.table().version !== 1) throw new Error('route table not applied');
    ready(router.port);
    process.on('SIGTERM', () => {
      void router.close().then(() => process.exit(0));
    });
    return;
  }
  throw new Error(`unknown mode ${mode}`);
}

function ready(port: number): void {
  process.stdout.write(`${JSON.stringify({ port })}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${String((err as Error).stack ?? err)}\n`);
  process.exit(1);
});
