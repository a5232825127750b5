/**
 * Names and ids the agent derives from an assignment: the unprivileged uid/gid an app runs as,
 * the sandbox id of an instance, and the checks that keep assignment fields safe to use in paths.
 */
import { createHash } from 'node:crypto';
import { mountPathProblem } from '@shellwego/core';
import type { InstanceSpec } from '@shellwego/core';

export const APP_UID_BASE = 100_000;
export const APP_UID_RANGE = 50_000;

/**
 * Every app runs as its own unprivileged uid (gid = uid): 100000 + (first 6 bytes of
 * sha256(appId) mod 50000). Stable across agents and restarts, so files an app wrote keep their
 * owner, and no table has to be shared between nodes. The range sits above the ids Debian hands
 * out to people and services (< 65536) and inside the usual subuid window. Two apps can share a
 * uid (it is a hash); under `sandbox` isolation that does not matter, because each sandbox only
 * sees its own /app, its own /tmp and its own processes.
 */
export function appUid(appId: string): number {
  const h = createHash('sha256').update(appId).digest();
  return APP_UID_BASE + (h.readUIntBE(0, 6) % APP_UID_RANGE);
}

const SANDBOX_ID_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** Sandbox ids allow [a-z0-9_-]; platform instance ids (`ins_…`) already fit, others are hashed. */
export function sandboxIdFor(instanceId: string): string {
  if (SANDBOX_ID_RE.test(instanceId)) return instanceId;
  return 'i-' + createHash('sha256').update(instanceId).digest('hex').slice(0, 40);
}

const INSTANCE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
const DIGEST_RE = /^[A-Za-z0-9_-]{1,128}$/;
const VOLUME_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/** A volume id that is safe as a directory name under `<dataDir>/volumes`. */
export const isVolumeId = (id: unknown): id is string => typeof id === 'string' && VOLUME_ID_RE.test(id);
const PROCESS_TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

/** Why an assigned spec cannot be run (it is used in paths and argv), or null when it is fine. */
export function specProblem(s: InstanceSpec): string | null {
  if (!s || typeof s !== 'object') return 'instance spec is not an object';
  if (typeof s.instanceId !== 'string' || !INSTANCE_ID_RE.test(s.instanceId)) return `invalid instanceId ${JSON.stringify(s.instanceId)}`;
  if (typeof s.appId !== 'string' || s.appId.length === 0) return 'missing appId';
  if (typeof s.artifactDigest !== 'string' || !DIGEST_RE.test(s.artifactDigest)) return `invalid artifactDigest ${JSON.stringify(s.artifactDigest)}`;
  if (typeof s.processType !== 'string' || !PROCESS_TYPE_RE.test(s.processType)) return `invalid processType ${JSON.stringify(s.processType)}`;
  if (!Number.isInteger(s.index) || s.index < 0) return `invalid index ${JSON.stringify(s.index)}`;
  if (typeof s.command !== 'string' || s.command.trim() === '' || s.command.includes('\0')) return 'missing or invalid command';
  if (!Number.isInteger(s.port) || s.port < 1 || s.port > 65535) return `invalid port ${JSON.stringify(s.port)}`;
  if (!Number.isInteger(s.restartGeneration)) return `invalid restartGeneration ${JSON.stringify(s.restartGeneration)}`;
  const l = s.limits;
  if (!l || !(l.memoryMb > 0) || !(l.cpus > 0) || !(l.pids > 0)) return 'invalid limits';
  if (!s.env || typeof s.env !== 'object') return 'invalid env';
  if (s.volumes !== undefined) {
    if (!Array.isArray(s.volumes)) return 'invalid volumes';
    for (const v of s.volumes) {
      if (!v || !isVolumeId(v.id)) return `invalid volume id ${JSON.stringify(v?.id)}`;
      const problem = typeof v.path === 'string' ? mountPathProblem(v.path) : 'not a string';
      if (problem) return `invalid volume mount path ${JSON.stringify(v.path)}: ${problem}`;
    }
  }
  for (const [k, v] of Object.entries(s.env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || typeof v !== 'string' || v.includes('\0')) return `invalid environment variable ${JSON.stringify(k)}`;
  }
  return null;
}

/** `web.1`: the dyno name users see in logs and `ps`. */
export function dynoName(s: Pick<InstanceSpec, 'processType' | 'index'>): string {
  return `${s.processType}.${s.index}`;
}

/** Words that are shell syntax or builtins: `exec` in front of them would not run them. */
const SHELL_WORDS = new Set([
  'if', 'then', 'else', 'elif', 'fi', 'for', 'while', 'until', 'do', 'done', 'case', 'esac', '!', '{', '}',
  'exit', 'cd', 'export', 'set', 'unset', 'eval', '.', 'source', 'trap', 'wait', 'read', 'shift', 'ulimit', 'umask', 'true', 'false', ':',
]);

/**
 * The shell line that runs a Procfile command after the .profile.d scripts. A simple command
 * (`node server.js`, `bin/web --port $PORT`) is exec'd, so the app itself is the sandbox's main
 * process and receives signals directly. A compound one (`a && b`, `x; exit 3`) runs as is:
 * putting `exec` in front would run only its first part.
 */
export function commandLine(command: string): string {
  const c = command.trim();
  if (/^exec\s/.test(c)) return c;
  const first = c.split(/\s+/)[0];
  const compound = /[;&|\n`(){}]/.test(c) || SHELL_WORDS.has(first) || /^[A-Za-z_][A-Za-z0-9_]*=/.test(first);
  return compound ? c : `exec ${c}`;
}
