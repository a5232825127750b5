/** The `shellwego` / `swg` executable. */
import { processIo } from './io.ts';
import { run } from './run.ts';

// `shellwego logs | head` closes our stdout early: that is the reader's choice, not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

const code = await run(process.argv.slice(2), processIo());
// Idle keep-alive sockets and signal handlers must not hold the process open: leave once output is flushed.
await new Promise((r) => process.stdout.write('', r));
await new Promise((r) => process.stderr.write('', r));
process.exit(code);
