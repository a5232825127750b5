import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigKeys, parseConfigPairs, parseIntOption, parseReleaseVersion, parseRole, parseScale, parseScopes, parseSeconds } from './args.ts';
import { UsageError } from './errors.ts';

const usage = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: unknown) => e instanceof UsageError && re.test(e.message));

test('scale pairs: TYPE=COUNT with whole counts 0..100', () => {
  assert.deepEqual(parseScale(['web=2', 'worker=1', 'clock=0']), { web: 2, worker: 1, clock: 0 });
  assert.deepEqual(parseScale(['web=1', 'web=3']), { web: 3 }, 'the last one wins');
  usage(() => parseScale(['web=two']), /'web=two': the count must be a whole number from 0 to 100/);
  usage(() => parseScale(['web=-1']), /whole number/);
  usage(() => parseScale(['web=1.5']), /whole number/);
  usage(() => parseScale(['web=101']), /from 0 to 100/);
  usage(() => parseScale(['web=']), /whole number/);
  usage(() => parseScale(['web']), /'web' is not TYPE=COUNT/);
  usage(() => parseScale(['Web=1']), /not a process type/);
  usage(() => parseScale([]), /at least one/);
});

test('config pairs: split at the first =, values may contain = or be empty', () => {
  assert.deepEqual(parseConfigPairs(['GREETING=hi there', 'OTHER=x=y', 'EMPTY=', 'URL=postgres://u:p@h/db?a=b']), {
    GREETING: 'hi there',
    OTHER: 'x=y',
    EMPTY: '',
    URL: 'postgres://u:p@h/db?a=b',
  });
  usage(() => parseConfigPairs(['GREETING']), /'GREETING' is not KEY=VALUE.*config get GREETING/);
  usage(() => parseConfigPairs(['=value']), /'' is not a valid config key/);
  usage(() => parseConfigPairs(['1X=a']), /'1X' is not a valid config key/);
  usage(() => parseConfigPairs(['MY-KEY=a']), /not a valid config key/);
  usage(() => parseConfigPairs([]), /at least one KEY=VALUE/);
});

test('config keys to unset are validated and deduplicated', () => {
  assert.deepEqual(parseConfigKeys(['A', 'B', 'A']), ['A', 'B']);
  usage(() => parseConfigKeys(['A=1']), /not a valid config key/);
  usage(() => parseConfigKeys([]), /at least one KEY/);
});

test('release versions: v3, V3 or 3', () => {
  assert.equal(parseReleaseVersion('v3'), 3);
  assert.equal(parseReleaseVersion('V12'), 12);
  assert.equal(parseReleaseVersion('3'), 3);
  usage(() => parseReleaseVersion('v0'), /not a release version/);
  usage(() => parseReleaseVersion('three'), /use v3 or 3/);
  usage(() => parseReleaseVersion('v3.1'), /not a release version/);
});

test('numbers, scopes and roles', () => {
  assert.equal(parseIntOption('100', '--lines', 1, 10000), 100);
  usage(() => parseIntOption('0', '--lines', 1, 10000), /--lines must be a whole number from 1 to 10000/);
  usage(() => parseIntOption('ten', '--lines', 1, 10000), /got 'ten'/);
  assert.equal(parseSeconds('2.5', '--wait-timeout'), 2.5);
  usage(() => parseSeconds('0', '--wait-timeout'), /positive number of seconds/);
  usage(() => parseSeconds('soon', '--wait-timeout'), /positive number of seconds/);
  assert.deepEqual(parseScopes(['apps:read', 'apps:deploy', 'apps:read']), ['apps:read', 'apps:deploy']);
  assert.deepEqual(parseScopes(['*']), ['*']);
  usage(() => parseScopes(['apps:everything']), /unknown scope 'apps:everything'; scopes: apps:read/);
  usage(() => parseScopes([]), /at least one --scope/);
  assert.equal(parseRole('developer'), 'developer');
  usage(() => parseRole('god'), /unknown role 'god'; roles: viewer, developer, admin, owner/);
  usage(() => parseRole(undefined), /give --role/);
});
