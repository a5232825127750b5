/** nodes (operators): list, info, cordon, uncordon, drain, remove, label, taint; placement (per app) */
import type { Command } from 'commander';
import { TAINT_EFFECTS } from '@shellwego/core';
import type { NodeInfoT, PlacementT, TaintEffect } from '@shellwego/core';
import type { Ctx } from '../context.ts';
import { UsageError } from '../errors.ts';
import { ago, bytes, table } from '../format.ts';
import { withApp, withJson } from './shared.ts';
import type { AppOpts, JsonOpts } from './shared.ts';

const KV = /^([^=\s]+)=([^=\s:]*)$/;
const TAINT = /^([^=\s]+)=([^=\s:]*):(\S+)$/;

/** `key=value` pairs and `key-` removals, kubectl style. */
export function parseLabelArgs(args: string[]): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const a of args) {
    if (a.endsWith('-') && !a.includes('=')) out[a.slice(0, -1)] = null;
    else {
      const m = KV.exec(a);
      if (!m) throw new UsageError(`'${a}' is not a label: use key=value to set, key- to remove`);
      out[m[1]] = m[2];
    }
  }
  return out;
}

/** `90s`, `30m`, `1h`, `7d` → seconds. */
export function parseDuration(v: string): number {
  const m = /^(\d+)(s|m|h|d)$/.exec(v.trim());
  if (!m) throw new UsageError(`'${v}' is not a duration: use a number with s, m, h or d (e.g. 30m, 1h, 7d)`);
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86_400 }[m[2] as 's' | 'm' | 'h' | 'd'];
}

function effect(e: string, arg: string): TaintEffect {
  if (!(TAINT_EFFECTS as readonly string[]).includes(e)) throw new UsageError(`'${arg}': the effect must be one of ${TAINT_EFFECTS.join(', ')}`);
  return e as TaintEffect;
}

/** `key=value:Effect` to add, `key-` to remove every taint with that key. */
export function parseTaintArgs(args: string[]): { add: { key: string; value: string; effect: TaintEffect }[]; remove: string[] } {
  const add: { key: string; value: string; effect: TaintEffect }[] = [];
  const remove: string[] = [];
  for (const a of args) {
    if (a.endsWith('-') && !a.includes('=')) {
      remove.push(a.slice(0, -1));
      continue;
    }
    const m = TAINT.exec(a);
    if (!m) throw new UsageError(`'${a}' is not a taint: use key=value:NoSchedule (or NoExecute) to add, key- to remove`);
    add.push({ key: m[1], value: m[2], effect: effect(m[3], a) });
  }
  return { add, remove };
}

/** `key=value:Effect`, or `key:Effect` for any value. */
export function parseToleration(a: string): PlacementT['tolerations'][number] {
  const any = /^([^=\s:]+):(\S+)$/.exec(a);
  if (any) return { key: any[1], effect: effect(any[2], a) };
  const m = TAINT.exec(a);
  if (!m) throw new UsageError(`'${a}' is not a toleration: use key=value:Effect, or key:Effect for any value`);
  return { key: m[1], value: m[2], effect: effect(m[3], a) };
}

const labelsText = (l: Record<string, string>) => Object.entries(l).map(([k, v]) => `${k}=${v}`).join(',') || '-';

export function registerNodes(program: Command, ctx: Ctx): void {
  const nodes = program.command('nodes').description('nodes of the platform and where instances may go (operators)');

  withJson(nodes.command('list').description('nodes, their state, capacity and allocation')).action(async (opts: JsonOpts) => {
    const list = await (await ctx.client()).call('listNodes');
    if (opts.json) return ctx.json(list);
    const now = ctx.now();
    const rows = list.map((n) => [
      n.name, n.state, n.isolation, `${n.allocated.cpus}/${n.capacity.cpus}`,
      `${bytes(n.allocated.memoryMb * 1024 * 1024)}/${bytes(n.capacity.memoryMb * 1024 * 1024)}`, String(n.instances),
      labelsText(n.labels), n.taints.join(',') || '-', n.lastHeartbeatAt ? ago(n.lastHeartbeatAt, now) : 'never', n.id,
    ]);
    for (const l of table(['NAME', 'STATE', 'ISOLATION', 'CPUS', 'MEMORY', 'INSTANCES', 'LABELS', 'TAINTS', 'HEARTBEAT', 'ID'], rows)) ctx.out(l);
  });

  const show = (n: NodeInfoT) => {
    const now = ctx.now();
    ctx.out(`=== node ${n.name} (${n.id})`);
    const rows: string[][] = [
      ['state:', n.state],
      ['isolation:', n.isolation],
      ['cpus:', `${n.allocated.cpus} of ${n.capacity.cpus} allocated`],
      ['memory:', `${bytes(n.allocated.memoryMb * 1024 * 1024)} of ${bytes(n.capacity.memoryMb * 1024 * 1024)} allocated`],
      ['disk:', n.capacity.diskMb === null ? 'not reported' : bytes(n.capacity.diskMb * 1024 * 1024)],
      ['instances:', String(n.instances)],
      ['labels:', labelsText(n.labels)],
      ['operator labels:', labelsText(n.operatorLabels)],
      ['taints:', n.taints.join(', ') || '-'],
      ['heartbeat:', n.lastHeartbeatAt ? ago(n.lastHeartbeatAt, now) : 'never'],
    ];
    for (const l of table(null, rows)) ctx.out(l);
  };

  withJson(nodes.command('info').description('one node in detail').argument('<node>', 'node name or id')).action(async (node: string, opts: JsonOpts) => {
    const n = await (await ctx.client()).call('getNode', { params: { node } });
    if (opts.json) return ctx.json(n);
    show(n);
  });

  const stateCommand = (name: string, state: 'ready' | 'cordoned' | 'draining', description: string, done: (n: NodeInfoT) => string) => {
    withJson(nodes.command(name).description(description).argument('<node>', 'node name or id')).action(async (node: string, opts: JsonOpts) => {
      const n = await (await ctx.client()).call('setNodeState', { params: { node }, body: { state } });
      if (opts.json) return ctx.json(n);
      ctx.out(done(n));
    });
  };
  stateCommand('cordon', 'cordoned', 'take no new instances (running ones stay)', (n) => `Cordoned ${n.name}: no new instances go there`);
  stateCommand('uncordon', 'ready', 'take new instances again (ends a cordon or a drain)', (n) => `${n.name} is ${n.state}`);
  stateCommand('drain', 'draining', 'move instances away (replacement first: no downtime with 2+ instances) and take no new ones', (n) =>
    `Draining ${n.name}: ${n.instances} instance(s) move to other nodes as replacements become ready (those with nowhere to go stay)`);

  // ---------- node join ----------
  withJson(
    nodes.command('token').description('create a join token for `shellwego-server node --join <API URL> --token <token>` (shown once)')
      .option('--expires <duration>', 'validity: 30m, 1h, 7d (up to 30 days)', '1h')
      .option('--uses <n>', 'how many nodes may join with it', '1'),
  ).action(async (opts: JsonOpts & { expires: string; uses: string }) => {
    const uses = Number(opts.uses);
    if (!Number.isInteger(uses) || uses < 1) throw new UsageError(`--uses must be a whole number of nodes, at least 1, got '${opts.uses}'`);
    const r = await (await ctx.client()).call('createJoinToken', { body: { expiresInSeconds: parseDuration(opts.expires), uses } });
    if (opts.json) return ctx.json(r);
    // The server's own API URL for nodes (first --api-hostname), else the one this CLI uses.
    const apiUrl = r.apiUrl ?? (await ctx.resolveSession()).apiUrl;
    ctx.out(`Join token (shown once; ${r.uses} use(s), expires ${r.expiresAt}):`);
    ctx.out(`  ${r.token}`);
    ctx.out(`On the new node: shellwego-server node --nats <NATS URL> --join ${apiUrl} --token ${r.token}${r.caFingerprint ? ` --ca-fingerprint ${r.caFingerprint}` : ''}`);
    if (r.caFingerprint) ctx.out(`(--ca-fingerprint pins this install's CA: the node refuses a control plane whose certificate another CA signed)`);
    else ctx.out('(the API is plain http: nothing is pinned; use it on a trusted network only)');
  });

  withJson(nodes.command('remove').description('forget a node and revoke its credentials and NATS user (it must have no instances: drain it first)').argument('<node>', 'node name or id')).action(async (node: string, opts: JsonOpts) => {
    const r = await (await ctx.client()).call('deleteNode', { params: { node } });
    if (opts.json) return ctx.json(r);
    ctx.out(`Removed node ${node}`);
  });

  withJson(
    nodes.command('label').description('set (key=value) or remove (key-) operator labels, e.g. zone=a').argument('<node>', 'node name or id').argument('<labels...>'),
  ).action(async (node: string, args: string[], opts: JsonOpts) => {
    const n = await (await ctx.client()).call('setNodeLabels', { params: { node }, body: { labels: parseLabelArgs(args) } });
    if (opts.json) return ctx.json(n);
    ctx.out(`${n.name} labels: ${labelsText(n.labels)}`);
  });

  withJson(
    nodes.command('taint').description('add (key=value:NoSchedule|NoExecute) or remove (key-) taints').argument('<node>', 'node name or id').argument('<taints...>'),
  ).action(async (node: string, args: string[], opts: JsonOpts) => {
    const n = await (await ctx.client()).call('setNodeTaints', { params: { node }, body: parseTaintArgs(args) });
    if (opts.json) return ctx.json(n);
    ctx.out(`${n.name} taints: ${n.taints.join(', ') || '-'}`);
  });

  withJson(
    withApp(
      program
        .command('placement')
        .description("show or set where the app's instances may run: required node labels and tolerated taints")
        .option('--require <key=value>', 'a label nodes must have (repeatable)', collect, [])
        .option('--tolerate <key=value:Effect>', 'a taint the app accepts (repeatable; key:Effect for any value)', collect, [])
        .option('--clear', 'remove every constraint'),
    ),
  ).action(async (opts: AppOpts & JsonOpts & { require: string[]; tolerate: string[]; clear?: boolean }) => {
    const app = await ctx.app(opts.app);
    const client = await ctx.client();
    const changing = opts.clear || opts.require.length > 0 || opts.tolerate.length > 0;
    if (opts.clear && (opts.require.length > 0 || opts.tolerate.length > 0)) throw new UsageError('--clear cannot be combined with --require or --tolerate');
    let p: PlacementT;
    if (changing) {
      const requiredLabels: Record<string, string> = {};
      for (const [k, v] of Object.entries(parseLabelArgs(opts.require))) {
        if (v === null) throw new UsageError(`--require takes key=value, got '${k}-'`);
        requiredLabels[k] = v;
      }
      p = await client.call('setPlacement', { params: { app }, body: { requiredLabels, tolerations: opts.tolerate.map(parseToleration) } });
    } else p = await client.call('getPlacement', { params: { app } });
    if (opts.json) return ctx.json(p);
    ctx.out(`=== ${app} placement`);
    const tol = p.tolerations.map((t) => (t.value === undefined ? `${t.key}:${t.effect}` : `${t.key}=${t.value}:${t.effect}`));
    for (const l of table(null, [['requires labels:', labelsText(p.requiredLabels)], ['tolerates:', tol.join(', ') || '-']])) ctx.out(l);
  });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
