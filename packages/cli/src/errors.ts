/**
 * The CLI's own failures. Exit codes scripts can rely on: 0 success, 1 the work failed (API
 * error, network, build failure, timeout), 2 the command line was wrong (usage).
 */

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** The command line itself is wrong: exit 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Leave with this exit code and no error line (`run` passes on the remote process's code). */
export class ExitWith extends Error {
  constructor(readonly exitCode: number) {
    super(`exit ${exitCode}`);
    this.name = 'ExitWith';
  }
}

/** The work failed for a reason the CLI found itself (not logged in, build failed, timeout…): exit 1. */
export class CliError extends Error {
  readonly code: string | undefined;
  constructor(message: string, code?: string) {
    super(message);
    this.name = 'CliError';
    this.code = code;
  }
}
