/**
 * `shellwego run [--app NAME] [--no-tty] [--env K=V] -- <cmd...>`: a one-off process in the app's
 * environment over the run WebSocket (`GET /v1/apps/:app/run`, see control-plane run-ws.ts),
 * like `heroku run`. On a terminal stdin goes raw and window resizes follow; without one stdin and
 * stdout are plain streams (stderr separate). Exits with the remote exit code.
 */
import type { Command } from 'commander';
import WebSocket from 'ws';
import { ShellWeGoApiError, ShellWeGoNetworkError } from '@shellwego/sdk';
import { parseConfigPairs } from '../args.ts';
import type { Ctx } from '../context.ts';
import { CliError, ExitWith, UsageError } from '../errors.ts';
import { withApp } from './shared.ts';
import type { AppOpts } from './shared.ts';

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGUSR1: 10, SIGUSR2: 12, SIGTERM: 15 };

/** One shell line from argv: a single word is used as typed (`run -- 'echo $X'`), several are quoted. */
export function shellCommand(argv: string[]): string {
  if (argv.length === 1) return argv[0];
  return argv.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

export interface RunParams {
  command: string;
  tty: boolean;
  cols?: number;
  rows?: number;
  env: Record<string, string>;
}

/** ws(s)://…/v1/apps/<app>/run?command=…&tty=…&env=K=V… */
export function runUrl(apiUrl: string, app: string, p: RunParams): string {
  const u = new URL(`${apiUrl.replace(/\/+$/, '')}/v1/apps/${encodeURIComponent(app)}/run`);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.searchParams.set('command', p.command);
  u.searchParams.set('tty', p.tty ? '1' : '0');
  if (p.cols) u.searchParams.set('cols', String(p.cols));
  if (p.rows) u.searchParams.set('rows', String(p.rows));
  for (const [k, v] of Object.entries(p.env)) u.searchParams.append('env', `${k}=${v}`);
  return u.toString();
}

/** The process exit code for a remote exit: its code, else 128 + signal, else 1. */
export function exitCodeOf(e: { exitCode: number | null; signal: string | null }): number {
  if (e.exitCode !== null) return e.exitCode;
  if (e.signal && SIGNALS[e.signal]) return 128 + SIGNALS[e.signal];
  return 1;
}

interface RunOpts extends AppOpts {
  tty: boolean;
  env: string[];
}

/**
 * `shellwego run APP -- cmd` (the app as the first word, like `heroku run`) → `run --app APP -- cmd`.
 * Only before `--`: everything after it is the command, whatever it looks like.
 */
export function normalizeRunArgs(argv: string[]): string[] {
  if (argv[0] !== 'run') return argv;
  const dashes = argv.indexOf('--');
  if (dashes < 0) return argv;
  const before = argv.slice(1, dashes);
  const positional: number[] = [];
  for (let i = 0; i < before.length; i++) {
    const t = before[i];
    if (['-e', '--env', '-a', '--app'].includes(t)) i++; // its value follows
    else if (!t.startsWith('-')) positional.push(i);
  }
  if (positional.length !== 1) return argv; // none: --app or the linked app; more: commander says what is wrong
  const app = before[positional[0]];
  return ['run', '--app', app, ...before.filter((_, i) => i !== positional[0]), ...argv.slice(dashes)];
}

export function registerRun(program: Command, ctx: Ctx): void {
  withApp(
    program
      .command('run')
      .description("run a one-off process in the app's environment: `shellwego run APP -- bash` (or --app / the linked app); exits with its exit code")
      .option('--no-tty', 'no terminal: stream stdin/stdout/stderr (default when stdin is not a terminal)')
      .option('-e, --env <KEY=VALUE>', 'extra environment for this run (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
      .argument('<command...>', 'the command, after `--`'),
  ).action(async (argv: string[], opts: RunOpts) => {
    if (argv.length === 0) throw new UsageError('give a command to run, e.g. `shellwego run -- bash`');
    const env = opts.env.length ? parseConfigPairs(opts.env) : {};
    const app = await ctx.app(opts.app);
    await ctx.client(); // "not logged in" before anything else
    const session = await ctx.resolveSession();
    const stdin = process.stdin;
    const stdout = process.stdout;
    const tty = opts.tty && Boolean(stdin.isTTY);
    const url = runUrl(session.apiUrl, app, {
      command: shellCommand(argv), tty, env, cols: tty ? stdout.columns || 80 : undefined, rows: tty ? stdout.rows || 24 : undefined,
    });
    const code = await runSession(ctx, url, session.token!, tty);
    if (code !== 0) throw new ExitWith(code);
  });
}

function runSession(ctx: Ctx, url: string, token: string, tty: boolean): Promise<number> {
  const stdin = process.stdin;
  const stdout = process.stdout;
  return new Promise<number>((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
    let result: number | Error | null = null;
    const cleanups: Array<() => void> = [];
    const finish = () => {
      for (const c of cleanups.splice(0)) c();
      if (result instanceof Error) reject(result);
      else resolve(result ?? 1);
    };
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        let err: { code?: string; message?: string } = {};
        try {
          err = JSON.parse(body).error ?? {};
        } catch {}
        result = new ShellWeGoApiError(res.statusCode ?? 0, err.code ?? 'http_error', err.message ?? `the API answered HTTP ${res.statusCode}`);
        finish();
      });
    });
    ws.on('error', (err) => {
      if (result !== null) return;
      result = new ShellWeGoNetworkError(url, err);
      finish();
    });
    ws.on('open', () => {
      const onData = (d: Buffer) => ws.send(d, { binary: true });
      stdin.on('data', onData);
      cleanups.push(() => stdin.off('data', onData));
      if (tty) {
        stdin.setRawMode(true);
        cleanups.push(() => stdin.setRawMode(false));
        const onResize = () => ws.send(JSON.stringify({ type: 'resize', cols: stdout.columns, rows: stdout.rows }));
        process.on('SIGWINCH', onResize);
        cleanups.push(() => process.off('SIGWINCH', onResize));
      } else {
        const onEnd = () => ws.send(JSON.stringify({ type: 'eof' }));
        stdin.on('end', onEnd);
        cleanups.push(() => stdin.off('end', onEnd));
        // Without a terminal Ctrl-C reaches us, not the remote process: pass it on.
        cleanups.push(ctx.io.onInterrupt(() => ws.send(JSON.stringify({ type: 'signal', signal: 'SIGINT' }))));
      }
      stdin.resume();
      cleanups.push(() => stdin.pause());
    });
    ws.on('message', (data, isBinary) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      if (isBinary) return void stdout.write(buf);
      let m: { type?: string; data?: string; exitCode?: number | null; signal?: string | null; message?: string };
      try {
        m = JSON.parse(buf.toString('utf8'));
      } catch {
        return;
      }
      if (m.type === 'stderr' && typeof m.data === 'string') process.stderr.write(Buffer.from(m.data, 'base64'));
      else if (m.type === 'exit') result = exitCodeOf({ exitCode: m.exitCode ?? null, signal: m.signal ?? null });
      else if (m.type === 'error') result = new CliError(`the process could not run: ${m.message}`, 'run_failed');
    });
    ws.on('close', () => {
      if (result === null) result = new CliError('the connection closed before the process exited', 'run_disconnected');
      finish();
    });
  });
}
