/** In-process entry points, for tests and for tools embedding the CLI. */
export { run } from './run.ts';
export { processIo } from './io.ts';
export type { Io } from './io.ts';
