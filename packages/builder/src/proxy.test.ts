import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import tls from 'node:tls';
import type net from 'node:net';
import { RegistryProxy } from './proxy.ts';

/** CONNECT through the proxy; resolves with the status code and the socket. */
function connect(proxyPort: number, target: string): Promise<{ status: number; socket: net.Socket; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxyPort, method: 'CONNECT', path: target });
    req.setTimeout(15_000, () => req.destroy(new Error('timeout')));
    req.on('connect', (res, socket) => {
      let body = '';
      if (res.statusCode !== 200) {
        socket.on('data', (d) => (body += d));
        socket.on('end', () => resolve({ status: res.statusCode ?? 0, socket, body }));
        socket.on('close', () => resolve({ status: res.statusCode ?? 0, socket, body }));
        return;
      }
      resolve({ status: res.statusCode, socket, body });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('RegistryProxy', () => {
  let proxy: RegistryProxy;
  const denials: string[] = [];
  before(async () => {
    proxy = new RegistryProxy({ host: '127.0.0.1', onDeny: (t) => denials.push(t) });
    await proxy.listen();
  });
  after(async () => {
    await proxy.close();
  });

  it('tunnels TLS to registry.npmjs.org:443 (handshake completes)', async () => {
    const { status, socket } = await connect(Number(new URL(proxy.url).port), 'registry.npmjs.org:443');
    assert.equal(status, 200);
    const secure = tls.connect({ socket, servername: 'registry.npmjs.org' });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
      setTimeout(() => reject(new Error('TLS handshake timed out')), 15_000).unref();
    });
    assert.equal(secure.authorized, true);
    secure.destroy();
  });

  it('refuses other hosts and ports with 403, and logs the denial', async () => {
    const port = Number(new URL(proxy.url).port);
    for (const target of ['example.com:443', 'registry.npmjs.org:80', 'registry.npmjs.org.evil.com:443', '10.0.0.1:443', '169.254.169.254:80']) {
      const r = await connect(port, target);
      assert.equal(r.status, 403, target);
      assert.ok(denials.includes(target), `denial of ${target} recorded`);
    }
    assert.ok(proxy.denied >= 5);
  });

  it('refuses plain HTTP proxying', async () => {
    const port = Number(new URL(proxy.url).port);
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'GET', path: 'http://registry.npmjs.org/express' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 403);
  });

  it('allow-list is exact host:port, case-insensitive', () => {
    assert.equal(proxy.isAllowed('REGISTRY.npmjs.org:443'), true);
    assert.equal(proxy.isAllowed('files.pythonhosted.org:443'), true);
    assert.equal(proxy.isAllowed('npmjs.org:443'), false);
  });
});

describe('RegistryProxy with restrictSources', () => {
  it('serves only granted client addresses (waiting briefly for a grant)', async () => {
    const proxy = new RegistryProxy({ host: '127.0.0.1', restrictSources: true, grantWaitMs: 300 });
    await proxy.listen();
    try {
      const port = Number(new URL(proxy.url).port);
      const denied = await connect(port, 'registry.npmjs.org:443');
      assert.equal(denied.status, 403);
      // Granted while the request waits.
      const pending = connect(port, 'registry.npmjs.org:443');
      setTimeout(() => proxy.grant('127.0.0.1'), 50);
      const ok = await pending;
      assert.equal(ok.status, 200);
      ok.socket.destroy();
      proxy.revoke('127.0.0.1');
      assert.equal((await connect(port, 'registry.npmjs.org:443')).status, 403);
    } finally {
      await proxy.close();
    }
  });
});
