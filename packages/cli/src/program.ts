/** The command tree. Command modules register themselves; this wires shared behaviour. */
import { Command } from 'commander';
import { CLI_VERSION } from './context.ts';
import type { Ctx } from './context.ts';
import { registerAccount } from './commands/account.ts';
import { registerApps } from './commands/apps.ts';
import { registerAuth } from './commands/auth.ts';
import { registerDeploy } from './commands/deploy.ts';
import { registerDeployments } from './commands/deployments.ts';
import { registerDomains } from './commands/domains.ts';
import { registerGit } from './commands/git.ts';
import { registerProcesses } from './commands/processes.ts';
import { registerNodes } from './commands/nodes.ts';
import { registerReleases } from './commands/releases.ts';
import { registerRun } from './commands/run.ts';
import { registerWebhooks } from './commands/webhooks.ts';
import { registerVolumes } from './commands/volumes.ts';

const HELP_FOOTER = `
Environment:
  SHELLWEGO_API_URL   API to talk to (overrides the stored login's; default http://127.0.0.1:8080)
  SHELLWEGO_TOKEN     token to use (overrides the stored login; for scripts and CI)
  SHELLWEGO_DEBUG=1   print stack traces on errors

Exit codes: 0 ok, 1 the work failed (API error, network, build failure, timeout), 2 usage error.
An app can be left out inside a directory linked to it (.shellwego.json, written by
\`apps create\` and \`deploy --app NAME\`). Every read command takes --json.`;

export function buildProgram(ctx: Ctx): Command {
  const program = new Command();
  // Settings made before commands are added are inherited by every subcommand.
  program
    .name('shellwego')
    .description('ShellWeGo: deploy and run apps on your own platform')
    .version(CLI_VERSION, '-v, --version')
    .exitOverride()
    .showSuggestionAfterError(true)
    .configureOutput({
      writeOut: (s) => void ctx.io.stdout.write(s),
      writeErr: (s) => void ctx.io.stderr.write(s),
    })
    .addHelpText('after', HELP_FOOTER);

  registerAuth(program, ctx);
  registerApps(program, ctx);
  registerDeploy(program, ctx);
  registerDeployments(program, ctx);
  registerDomains(program, ctx);
  registerGit(program, ctx);
  registerProcesses(program, ctx);
  registerReleases(program, ctx);
  registerRun(program, ctx);
  registerAccount(program, ctx);
  registerNodes(program, ctx);
  registerWebhooks(program, ctx);
  registerVolumes(program, ctx);
  return program;
}
