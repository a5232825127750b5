/**
 * `shellwego-server nats-tls --out DIR`: a certificate and key for nats-server signed by the
 * install's CA (created in the store if this is the first start), so NATS can run with
 * `tls { cert_file key_file }` and everyone verifies it against that CA: the server with
 * SHELLWEGO_NATS_TLS_CA, joined nodes with the CA they pinned at join. Run it again before the
 * certificate expires (nats-server reloads on SIGHUP).
 */
import { chmod, mkdir, rename, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { connectNatsBus } from '@shellwego/bus';
import { certFingerprint, installCa, issueLeaf, SecretBox } from '@shellwego/control-plane';
import { openPostgresStore, openSqliteStore } from '@shellwego/store';

export interface NatsTlsOptions {
  dataDir: string;
  databaseUrl: string | null;
  baseDomain: string;
  outDir: string;
  /** Names and addresses clients reach nats-server by (hostname(), localhost and 127.0.0.1 are added). */
  hostnames: string[];
  days: number;
}

export interface NatsTlsFiles {
  certFile: string;
  keyFile: string;
  caFile: string;
  caFingerprint: string;
  hostnames: string[];
  notAfter: Date;
}

const NAME = /^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;

export async function writeNatsTls(opts: NatsTlsOptions): Promise<NatsTlsFiles> {
  const names = [...new Set([...opts.hostnames.map((h) => h.trim().toLowerCase()).filter(Boolean), hostname().toLowerCase(), 'localhost', '127.0.0.1'])];
  for (const h of names) if (!isIP(h) && !NAME.test(h)) throw new Error(`--hostname must be host names or IP addresses, got '${h}'`);
  if (!Number.isFinite(opts.days) || opts.days < 1 || opts.days > 825) throw new Error(`--days must be a number of days from 1 to 825, got '${opts.days}'`);
  // The same store and master key as the server: the CA is the install's, not a new one.
  await mkdir(opts.dataDir, { recursive: true, mode: 0o711 });
  const dbFile = join(opts.dataDir, 'shellwego.db');
  const store = opts.databaseUrl ? await openPostgresStore(opts.databaseUrl) : await openSqliteStore(dbFile);
  if (!opts.databaseUrl) await chmod(dbFile, 0o600); // as the server keeps it
  try {
    const secrets = await SecretBox.fromFile(join(opts.dataDir, 'master.key'), store);
    const ca = await installCa({ store, secrets, baseDomain: opts.baseDomain, dataDir: opts.dataDir });
    const leaf = await issueLeaf(ca, names, new Date(), opts.days);
    const out = resolve(opts.outDir);
    await mkdir(out, { recursive: true, mode: 0o700 });
    const files = { certFile: join(out, 'cert.pem'), keyFile: join(out, 'key.pem'), caFile: join(out, 'ca.pem') };
    // Each file whole or not at all (nats-server may reload while we write); the key 0600.
    const put = async (file: string, text: string, mode: number) => {
      await writeFile(`${file}.tmp`, text, { mode });
      await chmod(`${file}.tmp`, mode);
      await rename(`${file}.tmp`, file);
    };
    await put(files.keyFile, leaf.keyPem, 0o600);
    await put(files.certFile, `${leaf.certPem.trimEnd()}\n${ca.certPem.trimEnd()}\n`, 0o644);
    await put(files.caFile, ca.certPem, 0o644);
    return { ...files, caFingerprint: certFingerprint(ca.certPem), hostnames: names, notAfter: leaf.notAfter };
  } finally {
    await store.close();
  }
}

/** What to tell the operator after writing the files. */
export function natsTlsInstructions(f: NatsTlsFiles): string {
  return `Wrote a nats-server certificate signed by this install's CA (${f.caFingerprint}):\n` +
    `  certificate: ${f.certFile}   (for ${f.hostnames.join(', ')}; valid until ${f.notAfter.toISOString()})\n` +
    `  key:         ${f.keyFile}   (0600)\n` +
    `  CA:          ${f.caFile}\n` +
    'Add to the nats-server configuration:\n' +
    `  tls {\n    cert_file: "${f.certFile}"\n    key_file: "${f.keyFile}"\n  }\n` +
    `Then start the server with SHELLWEGO_NATS_TLS_CA=${f.caFile}; nodes that join by token verify NATS against the CA they pinned.\n` +
    'Run this again before the certificate expires and send nats-server SIGHUP to reload it.\n';
}

/**
 * One connection attempt with the CA a process trusts for NATS: a nats-server whose certificate
 * that CA did not sign is a startup error with the reason (the client would otherwise retry
 * silently forever). A server that is just not up yet is left to the waiting connect.
 */
export async function checkNatsTls(servers: string[], tls: { ca: string }): Promise<void> {
  try {
    const bus = await connectNatsBus({ servers, name: 'shellwego-tls-check', connection: { tls, maxReconnectAttempts: 0, waitOnFirstConnect: false, reconnect: false } });
    await bus.close();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (/CERT|SELF_SIGNED|UNABLE_TO|ALTNAME|ERR_TLS|ERR_SSL|certificate/i.test(`${e.code ?? ''} ${e.message}`)) {
      throw new Error(`nats-server at ${servers.join(',')} presented a certificate the trusted CA ${certFingerprint(tls.ca)} did not issue for it: refusing to connect (${e.code ?? e.message}). ` +
        'Give nats-server a certificate from `shellwego-server nats-tls`, or the right CA with SHELLWEGO_NATS_TLS_CA', { cause: err });
    }
  }
}
