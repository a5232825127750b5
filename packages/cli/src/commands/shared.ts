import type { Command } from 'commander';

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
