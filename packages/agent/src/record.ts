/**
 * The on-disk record of one instance, <dataDir>/instances/<id>/instance.json: everything a
 * restarted agent needs to adopt the process, report it truthfully and carry on tailing its log.
 * Except the env (config vars: secrets): `spec.env` is never written here; the runner keeps it in
 * the agent's EnvStore (tmpfs, see secrets.ts). Records of earlier versions held it inline: they
 * still load (readRecord hands the env back) and the next write leaves it out.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { InstanceSpec } from '@shellwego/core';
import type { SandboxExit } from '@shellwego/sandbox';

export const RECORD_FILE = 'instance.json';

/** Where the runner is in an instance's life; persisted so a restart resumes at the right step. */
export type RecordPhase = 'starting' | 'running' | 'backoff' | 'stopping';

export interface InstanceRecord {
  v: 1;
  /** The spec the current (or next) process runs; on disk without `env`. */
  spec: InstanceSpec;
  sandboxId: string;
  uid: number;
  gid: number;
  /** Port the process listens on: spec.port, or one the agent picked (isolation `none`). */
  port: number;
  /** Times the process was restarted after a crash. */
  restarts: number;
  /** Crashes in a row without 60 s of healthy running in between (drives the backoff). */
  consecutiveCrashes: number;
  /** Bytes of output.log already published on the bus. */
  logOffset: number;
  /** Where the current process's output starts in output.log (for lastLog). */
  runLogOffset: number;
  /** restartGeneration of the running process (= spec.restartGeneration). */
  restartGeneration: number;
  phase: RecordPhase;
  desired: 'running' | 'stopped';
  pid: number | null;
  startedAt: string | null;
  ip: string | null;
  /** When the current process became ready (web: first successful connect). */
  runningSince: string | null;
  lastExit: SandboxExit | null;
  lastLog: string[];
}

export interface InstancePaths {
  dir: string;
  record: string;
  app: string;
  log: string;
  state: string;
}

export function instancePaths(instancesRoot: string, instanceId: string): InstancePaths {
  const dir = path.join(instancesRoot, instanceId);
  return {
    dir,
    record: path.join(dir, RECORD_FILE),
    app: path.join(dir, 'app'),
    log: path.join(dir, 'output.log'),
    state: path.join(dir, 'sandbox'),
  };
}

/** Atomic write of the record, `spec.env` left out. */
export async function writeRecord(file: string, rec: InstanceRecord): Promise<void> {
  const { env: _env, ...spec } = rec.spec;
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  await fsp.writeFile(tmp, JSON.stringify({ ...rec, spec }, null, 2) + '\n', { mode: 0o600 });
  await fsp.rename(tmp, file);
}

export interface LoadedRecord {
  /** The record; its `spec.env` is `{}` unless `env` is known. */
  record: InstanceRecord;
  /** The env held inline by a record of an earlier version, else null (look in the EnvStore). */
  inlineEnv: Record<string, string> | null;
}

/** The record, or null when missing or unreadable (a half-created instance dir). */
export async function readRecord(file: string): Promise<LoadedRecord | null> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch {
    return null;
  }
  try {
    const r = JSON.parse(text) as InstanceRecord;
    if (r?.v !== 1 || !r.spec || typeof r.sandboxId !== 'string') return null;
    const env: unknown = r.spec.env;
    const inlineEnv = env && typeof env === 'object' && !Array.isArray(env) ? (env as Record<string, string>) : null;
    r.spec = { ...r.spec, env: inlineEnv ?? {} };
    return { record: r, inlineEnv };
  } catch {
    return null;
  }
}
