/**
 * Parsing of the arguments commander leaves as strings. Every failure is a UsageError (exit 2)
 * that shows the expected form.
 */
import { ENV_KEY_RE, ENV_KEY_RULE, PROCESS_TYPE_RE, ROLES, SCOPES } from '@shellwego/core';
import type { Role } from '@shellwego/core';
import { UsageError } from './errors.ts';

export const MAX_SCALE = 100;

/** `web=2 worker=1` → { web: 2, worker: 1 }. */
export function parseScale(pairs: string[]): Record<string, number> {
  if (pairs.length === 0) throw new UsageError('give at least one TYPE=COUNT, e.g. `shellwego scale web=2`');
  const out: Record<string, number> = {};
  for (const pair of pairs) {
    const m = /^([^=]+)=(.*)$/.exec(pair);
    if (!m) throw new UsageError(`'${pair}' is not TYPE=COUNT, e.g. web=2`);
    const [, type, count] = m;
    if (!PROCESS_TYPE_RE.test(type)) throw new UsageError(`'${type}' is not a process type: lowercase words like web or worker`);
    if (!/^\d+$/.test(count) || Number(count) > MAX_SCALE) {
      throw new UsageError(`'${pair}': the count must be a whole number from 0 to ${MAX_SCALE}, e.g. ${type}=2`);
    }
    out[type] = Number(count);
  }
  return out;
}

/** `K=V` pairs; the value is everything after the first `=` (so `URL=a=b` keeps `a=b`) and may be empty. */
export function parseConfigPairs(pairs: string[]): Record<string, string> {
  if (pairs.length === 0) throw new UsageError('give at least one KEY=VALUE, e.g. `shellwego config set GREETING=hello`');
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq === -1) throw new UsageError(`'${pair}' is not KEY=VALUE (to read a value: \`shellwego config get ${pair}\`)`);
    const key = pair.slice(0, eq);
    checkKey(key);
    out[key] = pair.slice(eq + 1);
  }
  return out;
}

export function parseConfigKeys(keys: string[]): string[] {
  if (keys.length === 0) throw new UsageError('give at least one KEY to unset');
  for (const k of keys) checkKey(k);
  return [...new Set(keys)];
}

function checkKey(key: string): void {
  if (!ENV_KEY_RE.test(key)) throw new UsageError(`'${key}' is not a valid config key: ${ENV_KEY_RULE}`);
}

/** `v3` or `3` → 3. */
export function parseReleaseVersion(v: string): number {
  const m = /^v?(\d+)$/i.exec(v.trim());
  if (!m || Number(m[1]) < 1) throw new UsageError(`'${v}' is not a release version: use v3 or 3`);
  return Number(m[1]);
}

export function parseIntOption(value: string, what: string, min: number, max: number): number {
  if (!/^\d+$/.test(value.trim()) || Number(value) < min || Number(value) > max) {
    throw new UsageError(`${what} must be a whole number from ${min} to ${max} (got '${value}')`);
  }
  return Number(value);
}

/** Seconds, fractions allowed: `--wait-timeout 2.5`. */
export function parseSeconds(value: string, what: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new UsageError(`${what} must be a positive number of seconds (got '${value}')`);
  return n;
}

export type TokenScope = (typeof SCOPES)[number] | '*';

export function parseScopes(scopes: string[]): TokenScope[] {
  const valid = [...SCOPES, '*'] as string[];
  if (scopes.length === 0) throw new UsageError(`give at least one --scope; scopes: ${valid.join(', ')}`);
  for (const s of scopes) {
    if (!valid.includes(s)) throw new UsageError(`unknown scope '${s}'; scopes: ${valid.join(', ')}`);
  }
  return [...new Set(scopes)] as TokenScope[];
}

export function parseRole(role: string | undefined): Role {
  if (!role) throw new UsageError(`give --role: ${ROLES.join(', ')}`);
  if (!(ROLES as readonly string[]).includes(role)) throw new UsageError(`unknown role '${role}'; roles: ${ROLES.join(', ')}`);
  return role as Role;
}
