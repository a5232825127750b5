#!/usr/bin/env node
// Runs the platform daemons (packages/server/src/main.ts: up, server, node, …) from one JavaScript
// bundle instead of through tsx (ADR 0021): tsx's loader thread, source maps and per-module
// transformed sources cost the daemon ≈ 40 MB of memory for nothing at run time.
// The bundle (dist/server/main.mjs, not committed) is made with esbuild (a devDependency) on the
// first start and again whenever one of its input files changed; npm dependencies stay outside it
// (node_modules). Without esbuild, or if bundling fails, the daemon runs through
// tsx as before, with a warning. SHELLWEGO_RUN_WITH_TSX=1 asks for tsx (stack traces into .ts).
// Usage: node scripts/daemon.mjs up | server | node | …   (the arguments of main.ts)
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { extname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = resolve(import.meta.dirname, '..');
const ENTRY = join(ROOT, 'packages/server/src/main.ts');
const OUT_DIR = join(ROOT, 'dist/server');
const OUT = join(OUT_DIR, 'main.mjs');
const INPUTS = join(OUT_DIR, 'inputs.json');

/** True when the bundle exists, was made here (it holds absolute paths) and none of the files it was made from changed since. */
function fresh() {
  let built;
  let made;
  try {
    built = statSync(OUT).mtimeMs;
    made = JSON.parse(readFileSync(INPUTS, 'utf8'));
  } catch {
    return false;
  }
  const inputs = made?.root === ROOT ? made.inputs : null;
  if (!Array.isArray(inputs) || inputs.length === 0) return false;
  for (const f of inputs) {
    try {
      if (statSync(join(ROOT, f)).mtimeMs > built) return false;
    } catch {
      return false; // an input was removed or renamed
    }
  }
  return true;
}

/** Workspace sources see their own location in import.meta, as they do under tsx (e.g. files shipped next to them). */
const ownLocation = {
  name: 'own-import-meta',
  setup(b) {
    b.onLoad({ filter: /[\\/]packages[\\/][^\\/]+[\\/]src[\\/].*\.(ts|mjs|js)$/ }, (args) => {
      const source = readFileSync(args.path, 'utf8');
      const contents = source
        .replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href))
        .replaceAll('import.meta.dirname', JSON.stringify(resolve(args.path, '..')))
        .replaceAll('import.meta.filename', JSON.stringify(args.path));
      return { contents, loader: extname(args.path) === '.ts' ? 'ts' : 'js' };
    });
  },
};

/** npm packages (node_modules) are loaded from there at run time; only the workspace's own sources go into the bundle. */
const npmOutside = {
  name: 'npm-outside',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => (args.path.startsWith('@shellwego/') ? undefined : { path: args.path, external: true }));
  },
};

async function bundle() {
  const esbuild = await import('esbuild');
  try {
    mkdirSync(OUT_DIR, { recursive: true });
    // Two daemons started at once may both build: each writes its own file and renames it into place.
    const tmp = `${OUT}.${process.pid}.tmp`;
    // The bundle is dated when bundling began: a file saved meanwhile counts as newer next time.
    const started = new Date();
    const result = await esbuild.build({
      entryPoints: [ENTRY], outfile: tmp, bundle: true, platform: 'node', format: 'esm', target: 'node20',
      absWorkingDir: ROOT, metafile: true, logLevel: 'silent', plugins: [ownLocation, npmOutside],
      // For the odd CommonJS-style require() in workspace code: an ESM bundle has none.
      banner: { js: "import { createRequire as __swgCreateRequire } from 'node:module'; const require = __swgCreateRequire(import.meta.url);" },
    });
    const inputs = Object.keys(result.metafile.inputs).map((p) => relative(ROOT, resolve(ROOT, p)));
    utimesSync(tmp, started, started);
    renameSync(tmp, OUT);
    writeFileSync(`${INPUTS}.${process.pid}.tmp`, JSON.stringify({ root: ROOT, inputs }));
    renameSync(`${INPUTS}.${process.pid}.tmp`, INPUTS);
  } finally {
    rmSync(`${OUT}.${process.pid}.tmp`, { force: true });
    // esbuild's service process is not needed once the bundle is written.
    await esbuild.stop?.();
  }
}

async function withTsx(why) {
  if (why) process.stderr.write(`warning: running the daemon through tsx (${why})\n`);
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(ENTRY).href);
}

// A long-running daemon trades a little collection time for memory (ADR 0024): V8 lets the old
// generation grow 10 % past what a full collection left, not up to 300 % as it does when
// collections look cheap. Set at run time, not on the command line: a V8 that does not know the
// flag ignores it instead of refusing to start. SHELLWEGO_HEAP_GROWING_PERCENT=0: V8's own choice.
const growing = Number(process.env.SHELLWEGO_HEAP_GROWING_PERCENT ?? 10);
if (Number.isInteger(growing) && growing > 0) setFlagsFromString(`--heap-growing-percent=${growing}`);

if (process.env.SHELLWEGO_RUN_WITH_TSX === '1') {
  await withTsx(null);
} else {
  let failed = null;
  if (!fresh()) {
    await bundle().catch((err) => {
      failed = `bundling with esbuild failed: ${String(err?.message ?? err).split('\n')[0]}`;
    });
  }
  if (failed) await withTsx(failed);
  else await import(pathToFileURL(OUT).href);
}
