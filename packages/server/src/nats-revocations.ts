/**
 * Revoking removed nodes' NATS users (ADR: NATS auth). The store's `nats_users` rows are the
 * revocation list's truth; this pushes the ShellWeGo account JWT carrying that list, signed with
 * the operator signing key, to nats-server's full resolver on `$SYS.REQ.CLAIMS.UPDATE` through a
 * system-account user allowed nothing else. nats-server then refuses the revoked users and closes
 * their connections. Pushed at start and after every reconnect too, so a nats-server that lost
 * its resolver directory (or was started from an older config) learns the list again.
 */
import { connect } from 'nats';
import type { NatsConnection } from 'nats';
import type { Logger } from 'pino';
import { credsConnection, encodeAccountJwt, pushAccountJwt } from '@shellwego/bus';
import type { OperatorSigner } from '@shellwego/bus';
import type { Store } from '@shellwego/store';

const RETRY_MS = 5_000;

export interface NatsRevocations {
  /** Pushes the store's revocation list now (`reason` goes to the log); rejects when nats-server did not take it (a retry is scheduled). */
  sync(reason: string): Promise<void>;
  close(): Promise<void>;
}

/** The account's `revocations`: user public key → unix seconds (JWTs issued at or before then are refused). */
export async function revocationList(store: Store): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const u of await store.natsUsers.revoked()) out[u.userKey] = Math.floor(Date.parse(u.revokedAt!) / 1000);
  return out;
}

export async function startNatsRevocations(o: {
  servers: string[]; systemCreds: string; signer: OperatorSigner; store: Store; logger: Logger; tls?: { ca: string } | null;
}): Promise<NatsRevocations> {
  const nc: NatsConnection = await connect({
    servers: o.servers, name: 'shellwego-account-pusher', ...credsConnection(o.systemCreds),
    maxReconnectAttempts: -1, reconnectTimeWait: 500, waitOnFirstConnect: true, ...(o.tls ? { tls: o.tls } : {}),
  });
  let chain: Promise<void> = Promise.resolve();
  let retry: NodeJS.Timeout | null = null;
  let closed = false;

  const push = async (reason: string): Promise<void> => {
    const revocations = await revocationList(o.store);
    await pushAccountJwt(nc, await encodeAccountJwt(o.signer, revocations));
    o.logger.info({ revoked: Object.keys(revocations).length, reason }, 'NATS account revocation list pushed to nats-server');
  };
  // One push at a time: the last one always carries the whole, current list.
  const sync = (reason: string): Promise<void> => {
    const run = chain.then(() => push(reason));
    chain = run.catch(() => undefined);
    return run.catch((err: unknown) => {
      if (!closed && !retry) {
        retry = setTimeout(() => {
          retry = null;
          sync('retry').catch((err: unknown) => o.logger.warn({ err }, 'pushing the NATS revocation list failed again; retrying'));
        }, RETRY_MS);
        retry.unref();
      }
      throw err;
    });
  };
  void (async () => {
    for await (const s of nc.status()) if (s.type === 'reconnect') sync('reconnect').catch((err: unknown) => o.logger.warn({ err }, 'pushing the NATS revocation list after a reconnect failed; retrying'));
  })();
  await sync('start').catch((err: unknown) => o.logger.error({ err }, 'pushing the NATS revocation list at start failed; retrying'));
  return {
    sync,
    async close() {
      closed = true;
      if (retry) clearTimeout(retry);
      await chain;
      await nc.close();
    },
  };
}
