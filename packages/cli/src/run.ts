/** Runs one command line and turns every outcome into an exit code and at most one `error:` line. */
import { CommanderError } from 'commander';
import { isApiError, isNetworkError } from '@shellwego/sdk';
import { Ctx } from './context.ts';
import { CliError, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ExitWith, UsageError } from './errors.ts';
import type { Io } from './io.ts';
import { buildProgram } from './program.ts';
import { normalizeRunArgs } from './commands/run.ts';

export async function run(argv: string[], io: Io): Promise<number> {
  const ctx = new Ctx(io);
  const program = buildProgram(ctx);
  if (argv.length === 0) {
    program.outputHelp();
    return EXIT_OK;
  }
  try {
    await program.parseAsync(normalizeRunArgs(argv), { from: 'user' });
    return EXIT_OK;
  } catch (err) {
    return report(ctx, err);
  }
}

function report(ctx: Ctx, err: unknown): number {
  // Commander has already printed its own `error: …` (or the help).
  if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  if (err instanceof ExitWith) return err.exitCode;
  if (ctx.env('SHELLWEGO_DEBUG') && err instanceof Error && err.stack) ctx.err(err.stack);
  ctx.err(`error: ${errorLine(err)}`);
  return err instanceof UsageError ? EXIT_USAGE : EXIT_FAILURE;
}

export function errorLine(err: unknown): string {
  if (isApiError(err)) {
    const hint = err.status === 401 ? ' — log in again with `shellwego login`, or check SHELLWEGO_TOKEN' : '';
    return `${oneLine(err.message)}${hint} (${err.code})`;
  }
  if (isNetworkError(err)) return oneLine(err.message);
  if (err instanceof CliError) return err.code ? `${oneLine(err.message)} (${err.code})` : oneLine(err.message);
  if (err instanceof Error) return oneLine(err.message);
  return oneLine(String(err));
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ');
}
