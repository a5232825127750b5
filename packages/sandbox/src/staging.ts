/**
 * Mount staging: make mount sources reachable for the unprivileged bwrap without touching host
 * permissions.
 *
 * bwrap runs as the sandbox uid (setpriv drops root before it), so it resolves every `--bind SRC`
 * as that uid: every directory above SRC needs search permission for it. Data dirs under a 0700
 * parent (`mktemp -d`, /root, a home dir) fail with "Can't find source path …: Permission denied".
 *
 * When (and only when) some mount source of a spec is not reachable that way, the launch chain
 * gets one more step, while still root, right before `setpriv`:
 *
 *   unshare --mount --propagation slave -- bash -c STAGE_SCRIPT swg-stage MOUNT MKDIR DIR N SRC ro|rw …
 *
 * In that private mount namespace (slave: host mount events still arrive, nothing goes back) the
 * script opens every source (as root, before anything is hidden), mounts a tiny tmpfs (mode 0755)
 * on the staging directory DIR, creates `DIR/<i>` per mount, `mount --rbind`s the opened source
 * there (`-o ro` for read-only mounts), closes the fds and execs the rest of the chain. bwrap is
 * then given `DIR/<i>` as the sources. The pid does not change (exec), the namespace dies with the
 * sandbox's last process, and nothing is created or changed on the host: crash safe by
 * construction, adoption and cleanup are unaffected.
 *
 * DIR is the first of STAGING_CANDIDATES that exists (on the host it stays as it is; only the
 * launch chain, inside its namespace, sees the tmpfs over it). /mnt is required by the FHS and
 * present on every mainstream distribution; nothing the chain runs after the step (setpriv, bwrap,
 * the system binds /usr /etc /bin /lib…) lives there, and sources below it are fine (they are
 * opened before the tmpfs hides them). The sandbox itself never sees DIR (bwrap builds its root
 * from the binds only). A candidate holding one of the tools, or with an ancestor not searchable
 * by others, is skipped.
 *
 * Safety: bwrap resolved the sources as the sandbox uid; the staging step resolves them as root.
 * So a staged source must not be redirectable by the uid: no directory on its path may be
 * writable by the uid (else it could swap a component for a symlink to, say, /root between two
 * starts). Such a spec is refused with the reason. (The platform's own layouts — root-owned
 * parents, the app dir itself owned by the uid — are fine: the source's own contents do not
 * matter, only the path leading to it.)
 */
import { realpathSync, statSync } from 'node:fs';
import type { Stats } from 'node:fs';
import path from 'node:path';
import type { Mount } from './types.ts';

/** Staging mount point candidates, first existing usable one wins. */
export const STAGING_CANDIDATES = ['/mnt', '/media', '/srv'];

const SYSTEM_DIRS = ['/', '/usr', '/etc', '/bin', '/sbin', '/lib', '/lib64', '/lib32', '/libx32', '/proc', '/sys', '/dev', '/run', '/tmp', '/var', '/boot', '/root', '/home'];

export interface StagingTools {
  bash: string;
  unshare: string;
  mount: string;
  mkdir: string;
}

/** What the runtime can do for unreachable mount sources: `dir` null means nothing (`reason`). */
export type Staging = { dir: string; tools: StagingTools } | { dir: null; reason: string };

type Ids = { uid: number; gid: number };
type ModeOwner = Pick<Stats, 'mode' | 'uid' | 'gid'>;

/** Permission bits (r=4, w=2, x=1) of `st` that apply to uid:gid with no supplementary groups. */
function bitsFor(st: ModeOwner, who: Ids): number {
  if (who.uid === 0) return 7; // (never a sandbox uid)
  if (st.uid === who.uid) return (st.mode >> 6) & 7;
  if (st.gid === who.gid) return (st.mode >> 3) & 7;
  return st.mode & 7;
}

/** Can uid:gid (no supplementary groups) search (x) a directory with this mode/owner? POSIX bits only. */
export function canSearch(st: ModeOwner, who: Ids): boolean {
  return (bitsFor(st, who) & 1) !== 0;
}

/** Proper ancestors of an absolute normalized path, from "/" down. */
function ancestors(p: string): string[] {
  const out: string[] = [];
  for (let d = path.dirname(p); ; d = path.dirname(d)) {
    out.push(d);
    if (d === '/') break;
  }
  return out.reverse();
}

/** The source as given and, when it differs, its canonical path (symlinks resolved). */
function sourcePaths(source: string): string[] {
  const abs = path.resolve(source);
  let real: string;
  try {
    real = realpathSync.native(abs);
  } catch {
    return [abs];
  }
  return real === abs ? [abs] : [abs, real];
}

/**
 * The first directory on the way to `source` (as given, and after resolving symlinks) that
 * uid:gid cannot search, or null when bwrap, running as that uid, can reach it. A directory
 * that cannot be stat'ed counts as blocking (the staging step copes with either answer).
 * Synchronous: a handful of stat() calls on the start path (microseconds).
 */
export function blockingDir(source: string, who: Ids): string | null {
  const seen = new Set<string>();
  for (const p of sourcePaths(source)) {
    for (const d of ancestors(p)) {
      if (seen.has(d)) continue;
      seen.add(d);
      let st: Stats;
      try {
        st = statSync(d);
      } catch {
        return d;
      }
      if (!canSearch(st, who)) return d;
    }
  }
  return null;
}

/**
 * A directory on the way to `source` that uid:gid could use to redirect it (writable by it, and
 * not sticky — in a sticky dir it can only replace entries it owns), or null.
 */
export function redirectableBy(source: string, who: Ids): string | null {
  for (const p of sourcePaths(source)) {
    const chain = [...ancestors(p), p];
    for (let i = 0; i < chain.length - 1; i++) {
      const d = chain[i];
      let st: Stats;
      try {
        st = statSync(d);
      } catch {
        return d;
      }
      if ((bitsFor(st, who) & 3) !== 3) continue; // needs w+x to change entries
      if ((st.mode & 0o1000) === 0) return d;
      // sticky: only entries the uid owns can be replaced by it
      let child: Stats;
      try {
        child = statSync(chain[i + 1]);
      } catch {
        return d;
      }
      if (child.uid === who.uid) return d;
    }
  }
  return null;
}

/** Is `p` equal to or below `dir`? */
function within(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith('/') ? dir : dir + '/');
}

/**
 * Pick the staging directory (see the file comment) for a runtime whose chain runs `chainTools`
 * (absolute paths). Needs bash, unshare, mount and mkdir.
 */
export function detectStaging(tools: Partial<StagingTools>, chainTools: string[], candidates: string[] = STAGING_CANDIDATES): Staging {
  const missing = (['bash', 'unshare', 'mount', 'mkdir'] as const).filter((t) => !tools[t]);
  if (missing.length) return { dir: null, reason: `${missing.join(', ')} not found` };
  const real = (p: string) => {
    try {
      return realpathSync.native(p);
    } catch {
      return p;
    }
  };
  const toolPaths = [...chainTools, tools.bash!, tools.unshare!, tools.mount!, tools.mkdir!].flatMap((t) => [t, real(t)]);
  const rejected: string[] = [];
  for (const c of candidates) {
    let dir: string;
    let st: Stats;
    try {
      dir = realpathSync.native(c);
      st = statSync(dir);
    } catch {
      continue; // not on this host
    }
    if (!st.isDirectory() || SYSTEM_DIRS.includes(dir)) {
      rejected.push(`${c}: not a plain directory`);
      continue;
    }
    if (toolPaths.some((t) => within(t, dir))) {
      rejected.push(`${c}: holds a tool of the launch chain`);
      continue;
    }
    const blocked = ancestors(dir).find((d) => {
      try {
        return (statSync(d).mode & 0o001) === 0;
      } catch {
        return true;
      }
    });
    if (blocked) {
      rejected.push(`${c}: ${blocked} is not searchable by others`);
      continue;
    }
    return { dir, tools: tools as StagingTools };
  }
  return { dir: null, reason: `no usable staging directory (${candidates.join(', ')})${rejected.length ? `: ${rejected.join('; ')}` : ''}` };
}

/**
 * bash, in the fresh mount namespace, as root. Args: MOUNT MKDIR DIR N, then N pairs SRC ro|rw,
 * then the rest of the chain. Sources are opened first (a source may lie below DIR), then the
 * tmpfs goes on DIR, then each opened source is bind-mounted (recursively, like bwrap's --bind)
 * to DIR/<i> through /proc/self/fd (with --no-canonicalize: the path must not be re-resolved).
 * The fds are closed before the exec: the sandbox must not inherit them.
 */
export const STAGE_SCRIPT =
  'M=$1; K=$2; D=$3; n=$4; shift 4; S=(); R=(); F=(); T=(); ' +
  'fail() { echo "swg-stage: $*" >&2; exit 125; }; ' +
  'while [ "$n" -gt 0 ]; do S+=("$1"); R+=("$2"); shift 2; n=$((n-1)); done; ' +
  'for i in "${!S[@]}"; do s=${S[$i]}; ' +
  '{ [ -d "$s" ] || [ -f "$s" ]; } || fail "mount source $s is not a directory or regular file"; ' +
  'exec {f}<"$s" || fail "cannot open mount source $s"; F+=("$f"); done; ' +
  '"$M" -t tmpfs -o mode=0755,size=16k,nosuid,nodev,noexec swg-stage "$D" || fail "cannot mount a tmpfs on $D"; ' +
  'for i in "${!S[@]}"; do if [ -d "/proc/self/fd/${F[$i]}" ]; then T+=("$D/$i"); else : > "$D/$i" || fail "cannot create $D/$i"; fi; done; ' +
  'if [ ${#T[@]} -gt 0 ]; then "$K" -- "${T[@]}" || fail "cannot create mount points in $D"; fi; ' +
  'for i in "${!S[@]}"; do o=(); if [ "${R[$i]}" = ro ]; then o=(-o ro); fi; ' +
  '"$M" --no-canonicalize --rbind "${o[@]}" "/proc/self/fd/${F[$i]}" "$D/$i" || fail "cannot bind ${S[$i]} to $D/$i"; ' +
  'f=${F[$i]}; exec {f}<&-; done; ' +
  'exec "$@"';

export interface StagePlan {
  /** argv prefix: the staging step, to run as root right before the uid-dropping step */
  prefix: string[];
  /** the spec's mounts with their sources replaced by the staged paths */
  mounts: Mount[];
}

/** The staging step for `mounts` (all of them are staged: none may stay hidden below DIR). */
export function stagePlan(staging: { dir: string; tools: StagingTools }, mounts: Mount[]): StagePlan {
  const { dir, tools } = staging;
  return {
    prefix: [
      tools.unshare,
      '--mount',
      '--propagation',
      'slave',
      '--',
      tools.bash,
      '-c',
      STAGE_SCRIPT,
      'swg-stage',
      tools.mount,
      tools.mkdir,
      dir,
      String(mounts.length),
      ...mounts.flatMap((m) => [m.source, m.readonly ? 'ro' : 'rw']),
    ],
    mounts: mounts.map((m, i) => ({ ...m, source: path.posix.join(dir, String(i)) })),
  };
}
