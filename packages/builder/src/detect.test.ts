import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { detect, parseProcfile, NOTHING_DETECTED } from './detect.ts';
import { BuildError } from './errors.ts';
import { EXAMPLES, tempRoot, writeTree } from './test-helpers.ts';

let root: string;
let n = 0;
const fixture = (files: Record<string, string>) => writeTree(path.join(root, `f${++n}`), files);
const pkg = (o: Record<string, unknown>) => JSON.stringify({ name: 'x', version: '1.0.0', ...o });

before(async () => {
  root = await tempRoot('swgb-detect-');
});
after(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

describe('detect: node', () => {
  it('package-lock.json → npm ci, scripts.start → npm start', async () => {
    const d = await detect(await fixture({ 'package.json': pkg({ scripts: { start: 'node s.js' }, dependencies: { a: '1' } }), 'package-lock.json': '{}' }));
    assert.equal(d.stack, 'node');
    assert.equal(d.node!.packageManager, 'npm');
    assert.equal(d.node!.lockfile, 'package-lock.json');
    assert.equal(d.node!.needsInstall, true);
    assert.deepEqual(d.processTypes, { web: 'npm start' });
    assert.ok(d.reasons.some((r) => r.includes('package-lock.json')));
  });

  it('yarn.lock → yarn, pnpm-lock.yaml → pnpm, none → npm install', async () => {
    const y = await detect(await fixture({ 'package.json': pkg({ dependencies: { a: '1' } }), 'yarn.lock': '', 'index.js': '' }));
    assert.equal(y.node!.packageManager, 'yarn');
    assert.equal(y.node!.yarnBerry, false);
    const yb = await detect(await fixture({ 'package.json': pkg({ packageManager: 'yarn@4.1.0' }), 'yarn.lock': '', 'index.js': '' }));
    assert.equal(yb.node!.yarnBerry, true);
    const p = await detect(await fixture({ 'package.json': pkg({}), 'pnpm-lock.yaml': '', 'index.js': '' }));
    assert.equal(p.node!.packageManager, 'pnpm');
    const none = await detect(await fixture({ 'package.json': pkg({ dependencies: { a: '1' } }), 'index.js': '' }));
    assert.equal(none.node!.packageManager, 'npm');
    assert.equal(none.node!.lockfile, null);
    assert.ok(none.reasons.some((r) => r.includes('npm install')));
  });

  it('start falls back to main, then server.js / index.js / app.js', async () => {
    const main = await detect(await fixture({ 'package.json': pkg({ main: 'lib/boot.js' }), 'lib/boot.js': '', 'index.js': '' }));
    assert.equal(main.processTypes.web, 'node lib/boot.js');
    const server = await detect(await fixture({ 'package.json': pkg({ main: 'missing.js' }), 'server.js': '', 'index.js': '' }));
    assert.equal(server.processTypes.web, 'node server.js');
    const app = await detect(await fixture({ 'package.json': pkg({}), 'app.js': '' }));
    assert.equal(app.processTypes.web, 'node app.js');
    const none = await detect(await fixture({ 'package.json': pkg({}) }));
    assert.deepEqual(none.processTypes, {});
  });

  it('engines.node, scripts.build, devDependencies', async () => {
    const d = await detect(
      await fixture({ 'package.json': pkg({ engines: { node: '18.x' }, scripts: { build: 'tsc', start: 'node dist' }, devDependencies: { typescript: '5' } }) }),
    );
    assert.equal(d.node!.engines, '18.x');
    assert.equal(d.node!.hasBuildScript, true);
    assert.equal(d.node!.hasDevDependencies, true);
    await assert.rejects(detect(await fixture({ 'package.json': pkg({ engines: { node: 'banana' } }) })), /engines\.node "banana" is not a valid semver range/);
  });

  it('no dependencies and no install scripts → nothing to install', async () => {
    const d = await detect(await fixture({ 'package.json': pkg({ scripts: { start: 'node x' } }) }));
    assert.equal(d.node!.needsInstall, false);
    const d2 = await detect(await fixture({ 'package.json': pkg({ scripts: { start: 'node x', postinstall: 'echo hi' } }) }));
    assert.equal(d2.node!.needsInstall, true);
  });

  it('invalid package.json is a clear error', async () => {
    await assert.rejects(detect(await fixture({ 'package.json': '{ nope' })), /package.json is not valid JSON/);
  });
});

describe('detect: python, static, procfile', () => {
  it('python with requirements, stdlib-only and entry points', async () => {
    const r = await detect(await fixture({ 'requirements.txt': 'flask==3.0\n', 'app.py': '' }));
    assert.equal(r.stack, 'python');
    assert.equal(r.python!.requirementsFile, 'requirements.txt');
    assert.equal(r.processTypes.web, 'python3 app.py');
    const empty = await detect(await fixture({ 'requirements.txt': '# nothing\n\n', 'main.py': '' }));
    assert.equal(empty.python!.requirementsFile, null);
    assert.equal(empty.processTypes.web, 'python3 main.py');
    const bare = await detect(await fixture({ 'wsgi.py': '' }));
    assert.equal(bare.stack, 'python');
    assert.equal(bare.processTypes.web, 'python3 wsgi.py');
    const guni = await detect(await fixture({ 'wsgi.py': '', 'requirements.txt': 'gunicorn\n' }));
    assert.match(guni.processTypes.web, /gunicorn wsgi --bind 0\.0\.0\.0:\$PORT/);
    const pyproject = await detect(await fixture({ 'pyproject.toml': '[project]\nname="x"\n', 'app.py': '' }));
    assert.equal(pyproject.python!.requirementsFile, 'pyproject.toml');
  });

  it('static: index.html at the root, in public/ or dist/', async () => {
    for (const [where, rootDir] of [['index.html', '.'], ['public/index.html', 'public'], ['dist/index.html', 'dist']]) {
      const d = await detect(await fixture({ [where]: '<h1>x</h1>' }));
      assert.equal(d.stack, 'static');
      assert.equal(d.static!.root, rootDir);
      assert.equal(d.processTypes.web, `node .shellwego/static-server.mjs ${rootDir}`);
    }
  });

  it('Procfile overrides the start command of any stack', async () => {
    const node = await detect(await fixture({ 'package.json': pkg({ scripts: { start: 'node a' } }), Procfile: 'web: node b.js\nworker: node w.js\n' }));
    assert.equal(node.stack, 'node');
    assert.deepEqual(node.processTypes, { web: 'node b.js', worker: 'node w.js' });
    const py = await detect(await fixture({ 'app.py': '', Procfile: 'web: python3 other.py' }));
    assert.equal(py.processTypes.web, 'python3 other.py');
    const st = await detect(await fixture({ 'index.html': '', Procfile: 'web: ./serve.sh' }));
    assert.equal(st.processTypes.web, './serve.sh');
    // A Procfile without web keeps the detected web command.
    const w = await detect(await fixture({ 'package.json': pkg({ scripts: { start: 'node a' } }), Procfile: 'worker: node w.js' }));
    assert.deepEqual(w.processTypes, { worker: 'node w.js', web: 'npm start' });
  });

  it('Procfile only → procfile stack', async () => {
    const d = await detect(await fixture({ Procfile: '# comment\nweb: ./run.sh\n', 'run.sh': '#!/bin/sh\n' }));
    assert.equal(d.stack, 'procfile');
    assert.deepEqual(d.processTypes, { web: './run.sh' });
  });

  it('nothing detectable → error listing what was looked for', async () => {
    const err = await detect(await fixture({ 'README.md': 'hi', 'src/main.go': 'package main' })).then(
      () => null,
      (e) => e,
    );
    assert.ok(err instanceof BuildError);
    assert.equal(err.message, NOTHING_DETECTED);
    for (const w of ['package.json', 'requirements.txt', 'pyproject.toml', 'index.html', 'public/', 'dist/', 'Procfile']) assert.ok(err.message.includes(w), w);
  });

  it('parseProcfile rejects malformed lines', () => {
    assert.deepEqual(parseProcfile('web: a b c\n\n# x\nrelease:   migrate  \n'), { web: 'a b c', release: 'migrate' });
    assert.throws(() => parseProcfile('just a command'), /not "name: command"/);
    assert.throws(() => parseProcfile('web:'), /has no command/);
    assert.throws(() => parseProcfile('web: a\nweb: b'), /twice/);
    assert.throws(() => parseProcfile('# only comments'), /no process types/);
  });
});

describe('detect: examples', () => {
  it('each example is detected as expected', async () => {
    const expect: Record<string, [string, Record<string, string>]> = {
      'node-express': ['node', { web: 'npm start' }],
      'python-stdlib': ['python', { web: 'python3 app.py' }],
      'static-site': ['static', { web: 'node .shellwego/static-server.mjs .' }],
      'procfile-worker': ['procfile', { web: 'node web.mjs', worker: 'node worker.mjs' }],
    };
    for (const [name, [stack, types]] of Object.entries(expect)) {
      const d = await detect(path.join(EXAMPLES, name));
      assert.equal(d.stack, stack, name);
      assert.deepEqual(d.processTypes, types, name);
    }
  });
});
