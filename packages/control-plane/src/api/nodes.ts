/** Nodes (platform operators only) and per-app placement constraints. */
import { DEFAULT_PLAN, PLANS, badRequest, conflict, nodeMachine, nodeState, notFound, taintString } from '@shellwego/core';
import type { NodeInfoT, NodeTaint } from '@shellwego/core';
import type { NodeRow } from '@shellwego/store';
import type { Handlers } from '../http.ts';
import type { ControlPlaneContext } from '../context.ts';
import { findApp } from './apps.ts';

async function findNode(cp: ControlPlaneContext, idOrName: string): Promise<NodeRow> {
  const byId = await cp.store.nodes.byId(idOrName);
  if (byId) return byId;
  const named = (await cp.store.nodes.list()).filter((n) => n.name === idOrName);
  if (named.length > 1) throw conflict('ambiguous_node', `${named.length} nodes are named '${idOrName}': use the node id (${named.map((n) => n.id).join(', ')})`);
  if (named.length === 0) throw notFound('node', idOrName);
  return named[0];
}

async function toNodeInfo(cp: ControlPlaneContext, n: NodeRow, apps?: Map<string, string>): Promise<NodeInfoT> {
  const plans = apps ?? new Map((await cp.store.apps.listAll()).map((a) => [a.id, a.plan]));
  const running = (await cp.store.instances.listByNode(n.id)).filter((i) => i.desired === 'running');
  const planOf = (appId: string) => PLANS[plans.get(appId) ?? DEFAULT_PLAN] ?? PLANS[DEFAULT_PLAN];
  return {
    id: n.id, name: n.name, state: nodeState(n.state, n.operatorState), isolation: n.isolation,
    capacity: { cpus: n.cpus, memoryMb: n.memoryMb, diskMb: n.diskMb },
    allocated: { cpus: running.reduce((s, i) => s + planOf(i.appId).cpus, 0), memoryMb: running.reduce((s, i) => s + planOf(i.appId).memoryMb, 0) },
    labels: { ...n.agentLabels, ...n.labels }, operatorLabels: n.labels, taints: n.taints.map(taintString),
    instances: running.length, lastHeartbeatAt: n.lastHeartbeatAt,
  };
}

/** Placement inputs changed: every app gets a pass (pending instances may fit now, draining ones move). */
function rescheduleSoon(cp: ControlPlaneContext): void {
  cp.deployer.reconcileAll().catch((err: unknown) => cp.logger.error({ err }, 'reconcile after a node change failed'));
}

export const nodeHandlers = {
  async listNodes({ cp }) {
    const apps = new Map((await cp.store.apps.listAll()).map((a) => [a.id, a.plan]));
    const out = [];
    for (const n of await cp.store.nodes.list()) out.push(await toNodeInfo(cp, n, apps));
    return out;
  },

  async getNode({ params, cp }) {
    return toNodeInfo(cp, await findNode(cp, params.node));
  },

  async setNodeState({ params, body, cp }) {
    const node = await findNode(cp, params.node);
    // Operator state only: liveness (down) is the heartbeats' business, and a down node keeps what the operator said.
    const from = node.operatorState ?? 'ready';
    if (from === body.state) throw conflict('illegal_transition', `node ${node.name} is already ${from}`, { from, to: body.state });
    nodeMachine.assert(from, body.state);
    const updated = await cp.store.nodes.updateSpec(node.id, { operatorState: body.state === 'ready' ? null : body.state });
    if (!updated) throw notFound('node', params.node);
    cp.logger.info({ node: node.id, from, to: body.state }, 'node state changed by an operator');
    rescheduleSoon(cp);
    return toNodeInfo(cp, updated);
  },

  async setNodeLabels({ params, body, cp }) {
    const node = await findNode(cp, params.node);
    const labels = { ...node.labels };
    for (const [k, v] of Object.entries(body.labels)) {
      if (v !== null) labels[k] = v;
      else if (k in labels) delete labels[k];
      else if (k in node.agentLabels) throw badRequest('agent_label', `label '${k}' of node ${node.name} comes from its agent's configuration: change it there (or override it with ${k}=<value>)`);
      else throw badRequest('no_such_label', `node ${node.name} has no label '${k}'`);
    }
    const updated = await cp.store.nodes.updateSpec(node.id, { labels });
    if (!updated) throw notFound('node', params.node);
    rescheduleSoon(cp);
    return toNodeInfo(cp, updated);
  },

  async setNodeTaints({ params, body, cp }) {
    const node = await findNode(cp, params.node);
    let taints: NodeTaint[] = [...node.taints];
    for (const key of body.remove) {
      if (!taints.some((t) => t.key === key)) throw badRequest('no_such_taint', `node ${node.name} has no taint with key '${key}'`);
      taints = taints.filter((t) => t.key !== key);
    }
    for (const t of body.add) {
      // One taint per key and effect: adding it again replaces its value.
      taints = [...taints.filter((x) => !(x.key === t.key && x.effect === t.effect)), { key: t.key, value: t.value, effect: t.effect }];
    }
    const updated = await cp.store.nodes.updateSpec(node.id, { taints });
    if (!updated) throw notFound('node', params.node);
    rescheduleSoon(cp);
    return toNodeInfo(cp, updated);
  },

  async deleteNode({ params, cp }) {
    const node = await findNode(cp, params.node);
    const running = (await cp.store.instances.listByNode(node.id)).filter((i) => i.desired === 'running');
    if (running.length > 0) {
      const state = nodeState(node.state, node.operatorState);
      throw conflict('node_not_empty', `node ${node.name} still has ${running.length} instance(s) assigned: ` +
        (state === 'draining' ? 'wait until the drain has moved them (apps with nowhere else to go keep running there)' : `drain it first (shellwego nodes drain ${node.name})`),
      { instances: running.length, state });
    }
    // Volumes are pinned to their node for good (ADR 0020): forgetting it would strand their data.
    const volumes = await cp.store.volumes.byNode(node.id);
    if (volumes.length > 0) {
      throw conflict('node_has_volumes', `node ${node.name} holds ${volumes.length} volume(s) whose data lives there (${volumes.map((v) => v.name).join(', ')}): destroy them first`,
        { volumes: volumes.map((v) => ({ id: v.id, appId: v.appId, name: v.name })) });
    }
    // A forgotten node's credentials go with it: it has to join again with a new token (and gets a new NATS user).
    const { deleted, revoked } = await cp.store.transaction(async (tx) => {
      await tx.nodeJoin.deleteCredential(node.id);
      return { revoked: await tx.natsUsers.revokeNode(node.id, new Date().toISOString()), deleted: await tx.nodes.delete(node.id) };
    });
    if (revoked > 0 && cp.settings.natsRevoke) {
      // The store is the revocation list's truth: if nats-server cannot take it now, it gets it when it answers again.
      await cp.settings.natsRevoke().then(
        () => cp.logger.info({ node: node.id, users: revoked }, "removed node's NATS user revoked: its connections are closed"),
        (err: unknown) => cp.logger.error({ err, node: node.id }, "removed node's NATS user not revoked yet (nats-server did not take the account update); retrying"),
      );
    } else if (cp.settings.natsNodeCreds && revoked === 0) {
      cp.logger.warn({ node: node.id }, 'removed node has no NATS user recorded (not issued at join, e.g. `nats-auth node`): its NATS credentials were not revoked');
    }
    return { deleted };
  },

  async getPlacement({ auth, params, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    return (await cp.store.placements.get(app.organizationId, app.id)) ?? { requiredLabels: {}, tolerations: [] };
  },

  async setPlacement({ auth, params, body, cp }) {
    const app = await findApp(cp, auth.organization.id, params.app);
    const placement = { requiredLabels: body.requiredLabels, tolerations: body.tolerations.map((t) => ({ key: t.key, effect: t.effect, ...(t.value !== undefined ? { value: t.value } : {}) })) };
    await cp.store.placements.set(app.organizationId, app.id, placement);
    // Pending instances are placed again at once; running ones stay where they are (constraints apply to new placements).
    cp.deployer.wake(app.organizationId, app.id);
    return placement;
  },
} satisfies Partial<Handlers>;
