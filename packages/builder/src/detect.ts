/**
 * Stack detection: what kind of app a source tree is, how to install it and how to start it.
 * Reads files only; never runs anything. Order: Node.js (package.json) → Python → static → Procfile.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import semver from 'semver';
import type { Stack } from '@shellwego/core';
import { BuildError } from './errors.ts';

export type PackageManager = 'npm' | 'yarn' | 'pnpm';

export interface NodePlan {
  packageManager: PackageManager;
  /** Lockfile name at the app root, or null (→ `npm install`). */
  lockfile: string | null;
  /** yarn 2+ ("berry"), which has other install flags and no production prune. */
  yarnBerry: boolean;
  /** pnpm-lock.yaml lockfileVersion ×10 (e.g. 90 for '9.0'), to pick a matching pnpm. */
  pnpmLockVersion: number | null;
  /** engines.node as written (validated), or null. */
  engines: string | null;
  /** scripts.build exists. */
  hasBuildScript: boolean;
  /** Anything to install at all (dependencies or install lifecycle scripts). */
  needsInstall: boolean;
  hasDevDependencies: boolean;
  /** Parsed package.json. */
  pkg: Record<string, any>;
}

export interface PythonPlan {
  /** 'requirements.txt' | 'pyproject.toml' | null (stdlib only). */
  requirementsFile: string | null;
  /** Version asked for by runtime.txt / .python-version, if any. */
  requestedVersion: string | null;
}

export interface StaticPlan {
  /** Document root relative to the app: '.', 'public' or 'dist'. */
  root: string;
}

export interface Detection {
  stack: Stack;
  /** Human-readable lines explaining the decision (shown in the build log). */
  reasons: string[];
  /** Process types from the Procfile (null when there is none). */
  procfile: Record<string, string> | null;
  /** Detected default web command (before Procfile override), or null. */
  defaultStart: string | null;
  /** Final process types: the Procfile's, plus `web` = defaultStart when the Procfile has none. */
  processTypes: Record<string, string>;
  node?: NodePlan;
  python?: PythonPlan;
  static?: StaticPlan;
}

export const STATIC_ROOTS = ['.', 'public', 'dist'];
export const PYTHON_ENTRYPOINTS = ['app.py', 'main.py', 'server.py', 'wsgi.py'];
const NODE_ENTRYPOINTS = ['server.js', 'index.js', 'app.js'];
const PROCESS_TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

export const NOTHING_DETECTED =
  'No supported app type detected. Looked for: package.json (Node.js); requirements.txt, pyproject.toml, setup.py, ' +
  `or ${PYTHON_ENTRYPOINTS.join(' / ')} (Python); index.html at the root, in public/ or in dist/ (static site); ` +
  'a Procfile (any command).';

async function isFile(p: string): Promise<boolean> {
  try {
    return (await fsp.lstat(p)).isFile();
  } catch {
    return false;
  }
}

async function readText(p: string, max = 4 * 1024 * 1024): Promise<string | null> {
  try {
    const st = await fsp.lstat(p);
    if (!st.isFile()) return null;
    if (st.size > max) throw new BuildError(`${path.basename(p)} is too large (${st.size} bytes)`);
    return await fsp.readFile(p, 'utf8');
  } catch (e) {
    if (e instanceof BuildError) throw e;
    return null;
  }
}

/** Parse a Procfile: `name: command` lines, `#` comments. Throws BuildError on bad lines. */
export function parseProcfile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const m = /^([^:\s]+)\s*:\s*(.*)$/.exec(line);
    if (!m) throw new BuildError(`Procfile line ${i + 1} is not "name: command": ${line.slice(0, 100)}`);
    const [, name, command] = m;
    if (!PROCESS_TYPE_RE.test(name)) throw new BuildError(`Procfile line ${i + 1}: invalid process type "${name.slice(0, 64)}" (letters, digits, - and _)`);
    if (!command.trim()) throw new BuildError(`Procfile line ${i + 1}: process type "${name}" has no command`);
    if (name in out) throw new BuildError(`Procfile defines process type "${name}" twice`);
    out[name] = command.trim();
  });
  if (Object.keys(out).length === 0) throw new BuildError('Procfile defines no process types');
  return out;
}

/** Quote a relative path for sh when needed. */
function shq(s: string): string {
  return /^[A-Za-z0-9_./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

async function detectNode(dir: string, reasons: string[]): Promise<{ plan: NodePlan; start: string | null }> {
  const text = (await readText(path.join(dir, 'package.json')))!;
  let pkg: any;
  try {
    pkg = JSON.parse(text);
  } catch (e: any) {
    throw new BuildError(`package.json is not valid JSON: ${e.message}`);
  }
  if (!pkg || typeof pkg !== 'object' || Array.isArray(pkg)) throw new BuildError('package.json must contain a JSON object');
  reasons.push('found package.json');

  const locks: Array<[string, PackageManager]> = [
    ['package-lock.json', 'npm'],
    ['npm-shrinkwrap.json', 'npm'],
    ['yarn.lock', 'yarn'],
    ['pnpm-lock.yaml', 'pnpm'],
  ];
  const present: Array<[string, PackageManager]> = [];
  for (const l of locks) if (await isFile(path.join(dir, l[0]))) present.push(l);
  let lockfile: string | null = null;
  let pm: PackageManager = 'npm';
  if (present.length > 0) {
    [lockfile, pm] = present[0];
    reasons.push(`found ${lockfile}: installing with ${pm}`);
    if (present.length > 1) reasons.push(`warning: several lockfiles (${present.map((p) => p[0]).join(', ')}); using ${lockfile}`);
  } else {
    reasons.push('no lockfile: installing with npm install (commit package-lock.json for reproducible builds)');
  }
  const pmField = typeof pkg.packageManager === 'string' ? pkg.packageManager : '';
  let yarnBerry = false;
  if (pm === 'yarn') {
    const head = ((await readText(path.join(dir, 'yarn.lock'), 64 * 1024 * 1024)) ?? '').slice(0, 4096);
    yarnBerry = /^yarn@([2-9]|\d{2,})\./.test(pmField) || /^__metadata:/m.test(head) || (await isFile(path.join(dir, '.yarnrc.yml')));
  }
  let pnpmLockMajor: number | null = null;
  if (pm === 'pnpm') {
    const head = ((await readText(path.join(dir, 'pnpm-lock.yaml'), 64 * 1024 * 1024)) ?? '').slice(0, 1024);
    const m = /^lockfileVersion:\s*['"]?(\d+)(?:\.(\d+))?/m.exec(head);
    if (m) pnpmLockMajor = Number(m[1]) * 10 + Number(m[2] ?? 0);
  }

  let engines: string | null = null;
  const e = pkg.engines?.node;
  if (e !== undefined && e !== null) {
    if (typeof e !== 'string' || !e.trim() || semver.validRange(e) === null) {
      throw new BuildError(`package.json engines.node ${JSON.stringify(e)} is not a valid semver range`);
    }
    engines = e.trim();
    reasons.push(`engines.node "${engines}"`);
  }

  const scripts: Record<string, unknown> = pkg.scripts && typeof pkg.scripts === 'object' ? pkg.scripts : {};
  const hasBuildScript = typeof scripts.build === 'string' && scripts.build.trim() !== '';
  if (hasBuildScript) reasons.push('scripts.build will run after install');

  const depFields = ['dependencies', 'devDependencies', 'optionalDependencies'];
  const hasDeps = depFields.some((f) => pkg[f] && typeof pkg[f] === 'object' && Object.keys(pkg[f]).length > 0);
  const lifecycle = ['preinstall', 'install', 'postinstall', 'prepare'].some((s) => typeof scripts[s] === 'string');
  const hasDevDependencies = !!pkg.devDependencies && typeof pkg.devDependencies === 'object' && Object.keys(pkg.devDependencies).length > 0;
  const hasWorkspaces = pkg.workspaces !== undefined;

  let start: string | null = null;
  if (typeof scripts.start === 'string' && scripts.start.trim()) {
    start = 'npm start';
    reasons.push('scripts.start → web: npm start');
  } else {
    const candidates = typeof pkg.main === 'string' && pkg.main ? [pkg.main, ...NODE_ENTRYPOINTS] : NODE_ENTRYPOINTS;
    for (const c of candidates) {
      const rel = path.posix.normalize(c.replace(/^\.\//, ''));
      if (rel.startsWith('..') || path.posix.isAbsolute(rel)) continue;
      if (await isFile(path.join(dir, rel))) {
        start = `node ${shq(rel)}`;
        reasons.push(`${rel} → web: ${start}`);
        break;
      }
    }
  }
  return {
    plan: {
      packageManager: pm,
      lockfile,
      yarnBerry,
      pnpmLockVersion: pnpmLockMajor,
      engines,
      hasBuildScript,
      needsInstall: hasDeps || lifecycle || hasWorkspaces,
      hasDevDependencies,
      pkg,
    },
    start,
  };
}

/** First static document root (., public, dist) holding an index.html, or null. */
export async function findStaticRoot(dir: string, roots: string[] = STATIC_ROOTS): Promise<string | null> {
  for (const r of roots) if (await isFile(path.join(dir, r, 'index.html'))) return r;
  return null;
}

function meaningfulRequirements(text: string): boolean {
  return text.split(/\r?\n/).some((l) => {
    const t = l.replace(/#.*/, '').trim();
    return t !== '';
  });
}

/**
 * Detect the stack of the source tree in `dir`. Throws BuildError with the list of what was looked
 * for when nothing matches, or when a manifest is malformed.
 */
export async function detect(dir: string): Promise<Detection> {
  const reasons: string[] = [];
  let procfile: Record<string, string> | null = null;
  const procText = await readText(path.join(dir, 'Procfile'), 64 * 1024);
  if (procText !== null) {
    procfile = parseProcfile(procText);
    reasons.push(`Procfile defines: ${Object.keys(procfile).join(', ')}`);
  }

  let stack: Stack | null = null;
  let defaultStart: string | null = null;
  const det: Partial<Detection> = {};

  if (await isFile(path.join(dir, 'package.json'))) {
    stack = 'node';
    const n = await detectNode(dir, reasons);
    det.node = n.plan;
    defaultStart = n.start;
  }

  if (!stack) {
    let requirementsFile: string | null = null;
    let pyMarker: string | null = null;
    const req = await readText(path.join(dir, 'requirements.txt'));
    if (req !== null) {
      pyMarker = 'requirements.txt';
      if (meaningfulRequirements(req)) requirementsFile = 'requirements.txt';
    } else if (await isFile(path.join(dir, 'pyproject.toml'))) {
      pyMarker = 'pyproject.toml';
      requirementsFile = 'pyproject.toml';
    } else if (await isFile(path.join(dir, 'setup.py'))) {
      pyMarker = 'setup.py';
      requirementsFile = 'setup.py';
    }
    let entry: string | null = null;
    for (const f of PYTHON_ENTRYPOINTS) {
      if (await isFile(path.join(dir, f))) {
        entry = f;
        break;
      }
    }
    if (pyMarker || entry) {
      stack = 'python';
      reasons.push(pyMarker ? `found ${pyMarker}` : `found ${entry}`);
      if (!requirementsFile) reasons.push('no dependencies to install (standard library only)');
      let requestedVersion: string | null = null;
      const rt = (await readText(path.join(dir, 'runtime.txt'), 1024)) ?? (await readText(path.join(dir, '.python-version'), 1024));
      if (rt !== null && rt.trim()) requestedVersion = rt.trim().replace(/^python-/, '');
      det.python = { requirementsFile, requestedVersion };
      if (entry) {
        const usesGunicorn = entry === 'wsgi.py' && req !== null && /^\s*gunicorn\b/im.test(req);
        defaultStart = usesGunicorn ? 'python3 -m gunicorn wsgi --bind 0.0.0.0:$PORT' : `python3 ${entry}`;
        reasons.push(`${entry} → web: ${defaultStart}`);
      }
    }
  }

  if (!stack) {
    const root = await findStaticRoot(dir);
    if (root !== null) {
      stack = 'static';
      det.static = { root };
      defaultStart = `node .shellwego/static-server.mjs ${root}`;
      reasons.push(`found ${root === '.' ? '' : root + '/'}index.html → static site served by the platform static server`);
    }
  }

  if (!stack && procfile) {
    stack = 'procfile';
    reasons.push('no language detected: running the Procfile commands as they are');
  }
  if (!stack) throw new BuildError(NOTHING_DETECTED);

  const processTypes: Record<string, string> = { ...(procfile ?? {}) };
  if (procfile?.web) reasons.push('Procfile web overrides the detected start command');
  else if (defaultStart) processTypes.web = defaultStart;

  return { stack, reasons, procfile, defaultStart, processTypes, ...det };
}

/** "Node.js" etc. for log lines. */
export function stackLabel(stack: Stack): string {
  return { node: 'Node.js', python: 'Python', static: 'Static site', procfile: 'Procfile', image: 'OCI image' }[stack];
}
