import type { Command } from 'commander';
import type { Ctx } from '../context.ts';
import { UsageError } from '../errors.ts';

export interface AppOpts {
  app?: string;
}
export interface JsonOpts {
  json?: boolean;
}

export function withApp(cmd: Command): Command {
  return cmd.option('-a, --app <name>', 'the app (default: the app linked to this directory)');
}

export function withJson(cmd: Command): Command {
  return cmd.option('--json', 'print the API response as JSON (and nothing else on stdout)');
}

export function plural(n: number, word: string, many = `${word}s`): string {
  return `${n} ${n === 1 ? word : many}`;
}

/**
 * The name typed again before something is destroyed: `--confirm NAME`, or asked for on a
 * terminal; without either (a script) the command refuses with how to confirm.
 */
export async function confirmName(ctx: Ctx, given: string | undefined, name: string, text: { refusal: string; prompt: string; noun: string }): Promise<void> {
  let confirm = given;
  if (confirm === undefined) {
    if (!ctx.io.stdinIsTTY) throw new UsageError(`${text.refusal}: re-run with --confirm ${name}`);
    confirm = (await ctx.io.prompt(`${text.prompt} Type the ${text.noun} to confirm: `)).trim();
  }
  if (confirm !== name) throw new UsageError(`--confirm '${confirm}' does not match the ${text.noun} '${name}'`);
}
