/**
 * Nodes joining over the network (issue 4): an operator creates a join token (shown once, kept
 * as its sha256 with an expiry and a number of uses); a node trades it for its own credentials
 * (node id + secret, kept as a sha256) and from then on authenticates with those, e.g. to fetch
 * build artifacts it has to run.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { newId, unauthorized } from '@shellwego/core';
import type { JoinTokenRefusal, Store } from '@shellwego/store';
import { STREAMED } from '../http.ts';
import type { Handlers } from '../http.ts';
import { hashToken } from '../passwords.ts';
import { issueNodeCertificate, nodePublicKey } from '../domains/node-certs.ts';

const REFUSED: Record<JoinTokenRefusal, string> = {
  unknown: 'join token not recognised: create one with `shellwego nodes token` and copy it whole',
  used: 'join token already used up: create a new one with `shellwego nodes token`',
  expired: 'join token expired: create a new one with `shellwego nodes token`',
};

export const newJoinTokenSecret = (): string => 'swj_' + randomBytes(32).toString('base64url');
const newNodeSecret = (): string => 'swn_' + randomBytes(32).toString('base64url');

/**
 * Trades a join token for node credentials, all in one transaction: a refused token (unknown,
 * used up, expired) creates nothing; the use is taken by one conditional update, so two nodes
 * racing for the last use cannot both join.
 */
export async function joinWithToken(
  store: Store, j: { token: string; name: string; isolation: string; capacity: { cpus: number; memoryMb: number; diskMb?: number } }, now = new Date(),
): Promise<{ nodeId: string; secret: string }> {
  return store.transaction(async (tx) => {
    const used = await tx.nodeJoin.consumeToken(hashToken(j.token), now.toISOString());
    if (!used.ok) throw unauthorized(REFUSED[used.reason]);
    const nodeId = newId('nod');
    const secret = newNodeSecret();
    // Registered as down until its first heartbeat: nothing is placed on it before it beats.
    await tx.nodes.upsert({
      id: nodeId, name: j.name, state: 'down', isolation: j.isolation, cpus: j.capacity.cpus, memoryMb: j.capacity.memoryMb,
      diskMb: j.capacity.diskMb ?? null, lastHeartbeatAt: null,
    });
    await tx.nodeJoin.setCredential({ nodeId, secretHash: hashToken(secret), joinTokenId: used.token.id });
    return { nodeId, secret };
  });
}

/** `Authorization: Node <node id>:<secret>`: the node id, or 401 (another node's id with this secret included). */
export async function authenticateNode(store: Store, header: string | undefined): Promise<string> {
  const m = /^Node\s+(nod_[A-Za-z0-9_-]+):(\S+)$/.exec(header ?? '');
  if (!m) throw unauthorized('node credentials required: Authorization: Node <node id>:<secret> (given at join)');
  const cred = await store.nodeJoin.credential(m[1]);
  const given = Buffer.from(hashToken(m[2]), 'hex');
  if (!cred || !timingSafeEqual(Buffer.from(cred.secretHash, 'hex'), given)) throw unauthorized('invalid node credentials');
  return m[1];
}

export const nodeJoinHandlers = {
  async createJoinToken({ body, auth, cp }) {
    const token = newJoinTokenSecret();
    const row = await cp.store.nodeJoin.createToken({
      id: newId('jtk'), tokenHash: hashToken(token), usesLeft: body.uses, expiresAt: new Date(Date.now() + body.expiresInSeconds * 1000).toISOString(), createdBy: auth.user.id,
    });
    cp.logger.info({ joinToken: row.id, uses: row.usesLeft, expiresAt: row.expiresAt, by: auth.user.id }, 'node join token created');
    return { id: row.id, token, expiresAt: row.expiresAt, uses: row.usesLeft, caFingerprint: cp.settings.nodeTls?.caFingerprint ?? null, apiUrl: cp.settings.apiUrl ?? null };
  },

  async joinNode({ body, cp }) {
    // Checked first: a bad key uses up no token and creates nothing.
    const clusterKey = body.clusterPublicKey === undefined ? null : await nodePublicKey(body.clusterPublicKey);
    const joined = await joinWithToken(cp.store, body);
    cp.logger.info({ node: joined.nodeId, name: body.name }, 'node joined with a join token');
    // NATS with authentication: the node's own user, bound to its id (ADR: NATS auth); its key is
    // recorded before the node gets it, so removing the node can always revoke it.
    const nats = cp.settings.natsNodeCreds ? await cp.settings.natsNodeCreds(joined.nodeId) : null;
    if (nats) await cp.store.natsUsers.add({ userKey: nats.userKey, nodeId: joined.nodeId });
    // Its cluster certificate (router-to-router mTLS); the private key stayed on the node.
    const cluster = clusterKey === null ? null : await issueNodeCertificate(cp, joined.nodeId, clusterKey);
    // The CA nodes pin (they check it against the fingerprint they were given) and NATS' trust.
    return {
      ...joined, caPem: cp.settings.nodeTls?.caPem ?? null, natsUsesInstallCa: cp.settings.nodeTls?.natsUsesInstallCa ?? false,
      natsCreds: nats?.creds ?? null, cluster,
    };
  },

  async issueNodeCertificate({ body, req, cp }) {
    const nodeId = await authenticateNode(cp.store, req.headers.authorization);
    const cert = await issueNodeCertificate(cp, nodeId, await nodePublicKey(body.publicKey));
    cp.logger.info({ node: nodeId, notAfter: cert.notAfter }, 'node cluster certificate issued');
    return cert;
  },

  async getNodeBlob({ params, req, reply, cp }) {
    await authenticateNode(cp.store, req.headers.authorization);
    const path = await cp.blobs.pathOf(params.digest);
    void reply.type('application/octet-stream').send(createReadStream(path));
    return STREAMED;
  },
} satisfies Partial<Handlers>;
