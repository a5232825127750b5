/** deployments (list|info|abort), deploy-settings, healthcheck (set|clear) */
import type { Command } from 'commander';
import type { DeploymentT } from '@shellwego/core';
import type { Ctx } from '../context.ts';
import { UsageError } from '../errors.ts';
import { ago, table } from '../format.ts';
import { withApp, withJson } from './shared.ts';
import type { AppOpts, JsonOpts } from './shared.ts';

const STRATEGIES = ['rolling', 'blue-green', 'canary', 'recreate'] as const;

function versions(d: DeploymentT): string {
  return d.fromVersion === null ? `v${d.toVersion}` : `v${d.fromVersion} → v${d.toVersion}`;
}

function num(name: string, integer = true): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new UsageError(`--${name} must be ${integer ? 'a whole number' : 'a number'}, got '${v}'`);
    return n;
  };
}

export function registerDeployments(program: Command, ctx: Ctx): void {
  const deployments = withJson(withApp(program.command('deployments').description('how releases were rolled out: strategy, state, and why a deploy failed or rolled back')))
    .option('-n, --limit <n>', 'how many (newest first)', num('limit'));
  deployments.action(async (opts: AppOpts & JsonOpts & { limit?: number }) => {
    const app = await ctx.app(opts.app);
    const list = await (await ctx.client()).call('listDeployments', { params: { app }, query: opts.limit ? { limit: opts.limit } : {} });
    if (opts.json) return ctx.json(list);
    if (list.length === 0) return ctx.err(`${app} has no deployments yet: deploy it with \`shellwego deploy\``);
    const now = ctx.now();
    const rows = list.map((d) => [d.id, versions(d), d.strategy, d.state, d.reason ?? d.phase, d.createdBy ?? '-', ago(d.createdAt, now)]);
    for (const l of table(['ID', 'RELEASES', 'STRATEGY', 'STATE', 'DETAIL', 'BY', 'STARTED'], rows)) ctx.out(l);
  });

  withJson(withApp(deployments.command('info').description('one deployment with its history').argument('<id>'))).action(async (id: string, _o: unknown, cmd: Command) => {
    const opts = cmd.optsWithGlobals<AppOpts & JsonOpts>();
    const app = await ctx.app(opts.app);
    const d = await (await ctx.client()).call('getDeployment', { params: { app, deployment: id } });
    if (opts.json) return ctx.json(d);
    ctx.out(`=== ${app} deployment ${d.id}: ${versions(d)} (${d.strategy})`);
    ctx.out(`State:  ${d.state}${d.finishedAt ? ` (finished ${ago(d.finishedAt, ctx.now())})` : ''}`);
    ctx.out(`Phase:  ${d.phase}`);
    if (d.reason) ctx.out(`Reason: ${d.reason}`);
    ctx.out('History:');
    for (const h of d.history) ctx.out(`  ${h.at}  ${h.message}`);
  });

  withJson(withApp(deployments.command('abort').description('stop a running deployment and roll back to the release before it').argument('<id>'))).action(async (id: string, _o: unknown, cmd: Command) => {
    const opts = cmd.optsWithGlobals<AppOpts & JsonOpts>();
    const app = await ctx.app(opts.app);
    const d = await (await ctx.client()).call('abortDeployment', { params: { app, deployment: id } });
    if (opts.json) return ctx.json(d);
    ctx.out(`Aborted ${d.id}: rolling back to v${d.fromVersion}`);
  });

  const settings = withJson(withApp(program.command('deploy-settings').description('show or change how new releases replace running ones')))
    .option('--strategy <name>', `one of ${STRATEGIES.join(', ')}`)
    .option('--batch-size <n>', 'rolling: instances replaced per step', num('batch-size'))
    .option('--max-surge <n>', 'rolling: extra instances allowed while replacing', num('max-surge'))
    .option('--max-unavailable <n>', 'rolling: ready instances allowed below the formation', num('max-unavailable'))
    .option('--canary-steps <list>', 'canary: traffic percentages, e.g. 10,50')
    .option('--canary-step-seconds <n>', 'canary: how long each step is watched', num('canary-step-seconds'))
    .option('--canary-max-error-rate <rate>', 'canary: abort above this share of failed requests (0..1)', num('canary-max-error-rate', false))
    .option('--canary-min-requests <n>', 'canary: requests needed before the error rate counts', num('canary-min-requests'))
    .option('--health-timeout <seconds>', 'deadline for new instances to become ready', num('health-timeout'))
    .option('--drain <seconds>', 'time out of the router before SIGTERM', num('drain', false))
    .option('--stop-timeout <seconds>', 'time between SIGTERM and SIGKILL', num('stop-timeout'))
    .option('--auto-rollback <on|off>', 'roll back automatically when a deploy fails');
  settings.action(async (opts: AppOpts & JsonOpts & Record<string, string | number | undefined>) => {
    const app = await ctx.app(opts.app);
    const body: Record<string, unknown> = {};
    if (opts.strategy !== undefined) {
      if (!STRATEGIES.includes(opts.strategy as (typeof STRATEGIES)[number])) throw new UsageError(`--strategy must be one of ${STRATEGIES.join(', ')}`);
      body.strategy = opts.strategy;
    }
    const map: [string, string][] = [
      ['batchSize', 'batchSize'], ['maxSurge', 'maxSurge'], ['maxUnavailable', 'maxUnavailable'], ['canaryStepSeconds', 'canaryStepSeconds'],
      ['canaryMaxErrorRate', 'canaryMaxErrorRate'], ['canaryMinRequests', 'canaryMinRequests'], ['healthTimeout', 'healthTimeoutSeconds'],
      ['drain', 'drainSeconds'], ['stopTimeout', 'stopTimeoutSeconds'],
    ];
    for (const [opt, field] of map) if (opts[opt] !== undefined) body[field] = opts[opt];
    if (typeof opts.canarySteps === 'string') {
      const steps = opts.canarySteps.split(',').map((x) => Number(x.trim()));
      if (steps.some((n) => !Number.isInteger(n))) throw new UsageError('--canary-steps takes whole percentages separated by commas, e.g. 10,50');
      body.canarySteps = steps;
    }
    if (opts.autoRollback !== undefined) {
      if (opts.autoRollback !== 'on' && opts.autoRollback !== 'off') throw new UsageError('--auto-rollback takes on or off');
      body.autoRollback = opts.autoRollback === 'on';
    }
    const client = await ctx.client();
    const s = Object.keys(body).length
      ? await client.call('updateDeploySettings', { params: { app }, body: body as never })
      : await client.call('getDeploySettings', { params: { app } });
    if (opts.json) return ctx.json(s);
    ctx.out(`=== ${app} deploy settings`);
    const rows: string[][] = [
      ['strategy:', s.strategy],
      ['rolling:', `batch ${s.batchSize}, max surge ${s.maxSurge}, max unavailable ${s.maxUnavailable}`],
      ['canary:', `steps ${s.canarySteps.join('%, ')}% for ${s.canaryStepSeconds}s each, abort above ${(s.canaryMaxErrorRate * 100).toFixed(1)}% failed (after ${s.canaryMinRequests} requests)`],
      ['health timeout:', `${s.healthTimeoutSeconds}s`],
      ['shutdown:', `out of the router ${s.drainSeconds}s before SIGTERM, SIGKILL ${s.stopTimeoutSeconds}s after`],
      ['auto rollback:', s.autoRollback ? 'on' : 'off'],
    ];
    for (const l of table(null, rows)) ctx.out(l);
  });

  const hc = program.command('healthcheck').description('readiness checks per process type (default: TCP connect on $PORT)');
  withJson(withApp(hc.command('set').description('check a process type with HTTP GET before it gets traffic').argument('<type>', 'process type, e.g. web')))
    .requiredOption('--path <path>', 'path to GET, e.g. /health')
    .option('--interval <seconds>', 'between checks', num('interval', false), 2)
    .option('--timeout <seconds>', 'per check', num('timeout', false), 2)
    .option('--healthy <n>', 'passes in a row to become ready', num('healthy'), 1)
    .option('--unhealthy <n>', 'failures in a row to leave the router', num('unhealthy'), 3)
    .action(async (type: string, _o: unknown, cmd: Command) => {
      const opts = cmd.optsWithGlobals<AppOpts & JsonOpts & { path: string; interval: number; timeout: number; healthy: number; unhealthy: number }>();
      const app = await ctx.app(opts.app);
      const f = await (await ctx.client()).call('setHealthcheck', {
        params: { app, type },
        body: { healthcheck: { type: 'http', path: opts.path, intervalSeconds: opts.interval, timeoutSeconds: opts.timeout, healthyThreshold: opts.healthy, unhealthyThreshold: opts.unhealthy } },
      });
      if (opts.json) return ctx.json(f);
      ctx.out(`${app} ${type}: ready when GET ${opts.path} answers 2xx/3xx ${opts.healthy}× in a row; out after ${opts.unhealthy} failures (every ${opts.interval}s, timeout ${opts.timeout}s)`);
    });
  withJson(withApp(hc.command('clear').description('back to the default check (TCP connect on $PORT)').argument('<type>'))).action(async (type: string, _o: unknown, cmd: Command) => {
    const opts = cmd.optsWithGlobals<AppOpts & JsonOpts>();
    const app = await ctx.app(opts.app);
    const f = await (await ctx.client()).call('setHealthcheck', { params: { app, type }, body: { healthcheck: null } });
    if (opts.json) return ctx.json(f);
    ctx.out(`${app} ${type}: readiness is a TCP connect on $PORT`);
  });
}
