/**
 * Everything the CLI touches in its process (streams, environment, cwd, signals, a browser),
 * gathered in one object so commands can run in-process under test.
 */
import { spawn } from 'node:child_process';
import { homedir } from 'node:os';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';

export interface OutStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
}

export interface Io {
  env: Record<string, string | undefined>;
  cwd: string;
  home: string;
  stdout: OutStream;
  stderr: OutStream;
  stdinIsTTY: boolean;
  /** Asks on the terminal; `hidden` for passwords. Only called when stdinIsTTY. */
  prompt(question: string, opts?: { hidden?: boolean }): Promise<string>;
  /** Best effort: opens a URL in a browser. */
  openUrl(url: string): void;
  /** Runs `fn` on Ctrl-C / SIGTERM until the returned function is called. */
  onInterrupt(fn: () => void): () => void;
  now(): number;
}

export function processIo(): Io {
  return {
    env: process.env,
    cwd: process.cwd(),
    home: homedir(),
    stdout: process.stdout,
    stderr: process.stderr,
    stdinIsTTY: Boolean(process.stdin.isTTY),
    prompt: terminalPrompt,
    openUrl(url) {
      try {
        const child = spawn('xdg-open', [url], { detached: true, stdio: 'ignore' });
        child.on('error', () => {});
        child.unref();
      } catch {}
    },
    onInterrupt(fn) {
      process.on('SIGINT', fn);
      process.on('SIGTERM', fn);
      return () => {
        process.off('SIGINT', fn);
        process.off('SIGTERM', fn);
      };
    },
    now: () => Date.now(),
  };
}

async function terminalPrompt(question: string, opts: { hidden?: boolean } = {}): Promise<string> {
  let muted = false;
  // readline echoes what is typed through `output`; a muting sink hides a password.
  const output = new Writable({
    write(chunk, _enc, cb) {
      if (!muted) process.stderr.write(chunk);
      cb();
    },
  });
  const rl = createInterface({ input: process.stdin, output, terminal: true });
  try {
    const answer = new Promise<string>((resolve, reject) => {
      rl.question(question, resolve);
      rl.once('SIGINT', () => reject(new Error('cancelled')));
      rl.once('close', () => reject(new Error('cancelled')));
    });
    muted = Boolean(opts.hidden);
    const value = await answer;
    if (opts.hidden) process.stderr.write('\n');
    return value;
  } finally {
    rl.close();
  }
}
