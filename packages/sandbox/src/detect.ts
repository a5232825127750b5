import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { detectCgroups } from './cgroups.ts';
import type { CgroupLayout } from './cgroups.ts';
import type { IsolationReport } from './types.ts';
import { HELPER_ENV, readText, which } from './util.ts';

export interface Tools {
  sh: string;
  /** preferred launcher shell (can close multi-digit fds); optional */
  bash?: string;
  bwrap: string;
  setpriv: string;
  nsenter: string;
  ip: string;
  /** mount staging (staging.ts); optional: without them unreachable mount sources are refused */
  unshare?: string;
  mount?: string;
  mkdir?: string;
}

export interface Detection extends IsolationReport {
  layout: CgroupLayout | null;
  tools: Partial<Tools>;
}

/** Read-only view of the host system for the sandbox: /usr, /etc and the top-level bin/lib dirs. */
export async function systemBindArgs(): Promise<string[]> {
  const args = ['--ro-bind', '/usr', '/usr'];
  for (const d of ['/bin', '/sbin', '/lib', '/lib64', '/lib32', '/libx32']) {
    let st;
    try {
      st = await fsp.lstat(d);
    } catch {
      continue;
    }
    if (st.isSymbolicLink()) args.push('--symlink', await fsp.readlink(d), d);
    else if (st.isDirectory()) args.push('--ro-bind', d, d);
  }
  args.push('--ro-bind', '/etc', '/etc');
  return args;
}

/** Run the real launcher chain once (unprivileged bwrap with all namespaces) to prove it works. */
async function smokeTest(t: Tools): Promise<string | null> {
  const binds = await systemBindArgs();
  const args = [
    '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--',
    t.bwrap, '--unshare-user', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-net', '--unshare-cgroup-try',
    ...binds, '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp', '--remount-ro', '/',
    '--clearenv', '--setenv', 'PATH', '/usr/bin:/bin', '--new-session', '--cap-drop', 'ALL', '--', 'true',
  ];
  return new Promise((resolve) => {
    const child = spawn(t.setpriv, args, { env: HELPER_ENV, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => (err += String(d)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve(`cannot run ${t.setpriv}: ${e.message}`);
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      if (code === 0) resolve(null);
      else resolve(`unprivileged bubblewrap sandbox failed (exit ${code ?? sig}): ${err.trim() || 'no output'}`);
    });
  });
}

/**
 * What `sandbox` isolation needs: Linux, root, bwrap + setpriv + nsenter + ip, user namespaces
 * usable by an unprivileged uid, and cgroups (v1 or v2) with memory, cpu and pids.
 */
export async function detect(): Promise<Detection> {
  const problems: string[] = [];
  const cg = process.platform === 'linux' ? await detectCgroups() : { version: 'none' as const, layout: null, reason: 'not Linux' };
  const tools: Partial<Tools> = {};
  if (process.platform !== 'linux') {
    return { available: false, reason: `sandbox isolation needs Linux (this is ${process.platform})`, cgroup: 'none', layout: null, tools };
  }
  if (typeof process.getuid === 'function' && process.getuid() !== 0) problems.push('must run as root (cgroups, network namespaces and uid switching need it)');
  for (const name of ['sh', 'bwrap', 'setpriv', 'nsenter', 'ip'] as const) {
    const p = await which(name);
    if (p) tools[name] = p;
    else problems.push(`${name} not found in ${HELPER_ENV.PATH}${name === 'bwrap' ? ' (install the "bubblewrap" package)' : name === 'ip' ? ' (install "iproute2")' : name === 'sh' ? '' : ' (install "util-linux")'}`);
  }
  for (const name of ['bash', 'unshare', 'mount', 'mkdir'] as const) {
    const p = await which(name);
    if (p) tools[name] = p;
  }
  const maxNs = await readText('/proc/sys/user/max_user_namespaces');
  if (maxNs !== null && Number(maxNs.trim()) === 0) problems.push('user namespaces disabled (/proc/sys/user/max_user_namespaces is 0)');
  const unpriv = await readText('/proc/sys/kernel/unprivileged_userns_clone');
  if (unpriv !== null && unpriv.trim() === '0') problems.push('unprivileged user namespaces disabled (sysctl kernel.unprivileged_userns_clone=0)');
  if (cg.version === 'none') problems.push(`cgroups unusable: ${cg.reason}`);
  if (problems.length === 0) {
    const err = await smokeTest(tools as Tools);
    if (err) problems.push(err);
  }
  return {
    available: problems.length === 0,
    reason: problems.length ? problems.join('; ') : undefined,
    cgroup: cg.version,
    layout: cg.layout,
    tools,
  };
}

export async function detectIsolation(): Promise<IsolationReport> {
  const d = await detect();
  const out: IsolationReport = { available: d.available, cgroup: d.cgroup };
  if (d.reason) out.reason = d.reason;
  return out;
}
