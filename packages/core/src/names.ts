/** App names are DNS labels because they become hostnames: `<app>.<base domain>`. */
export const APP_NAME_RE = /^[a-z](?:[a-z0-9-]{0,28}[a-z0-9])?$/;
export const APP_NAME_RULE = 'lowercase letters, digits and dashes, starting with a letter, not ending with a dash, at most 30 characters';

/** Environment variable keys as POSIX shells accept them. */
export const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const ENV_KEY_RULE = 'letters, digits and underscores, not starting with a digit';

/** Keys the platform sets itself; users may not override them. */
export const RESERVED_ENV_KEYS = new Set(['PORT', 'DYNO', 'PS']);
export const RESERVED_ENV_PREFIX = 'SHELLWEGO_';

export const PROCESS_TYPE_RE = /^[a-z][a-z0-9_-]{0,29}$/;

export function isReservedEnvKey(key: string): boolean {
  return RESERVED_ENV_KEYS.has(key) || key.startsWith(RESERVED_ENV_PREFIX);
}

/**
 * Where a volume may be mounted in an app's sandbox: an absolute, normalised path of plain
 * characters, not `/`, and not in or under a directory the platform owns there — `/app` (the
 * release's code, replaced at every deploy), `/tmp` (the sandbox's own tmpfs), the kernel's
 * `/proc`, `/sys`, `/dev`, and the host system directories bound read-only into every sandbox
 * (`/usr`, `/bin`, `/sbin`, `/lib*`, `/etc`), which a volume would shadow.
 */
export const VOLUME_RESERVED_PATHS = ['/app', '/tmp', '/proc', '/sys', '/dev', '/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc'] as const;
const MOUNT_PATH_RE = /^(\/[A-Za-z0-9._-]+)+$/;

/** Why `p` cannot be a volume's mount path, or null when it can. */
export function mountPathProblem(p: string): string | null {
  if (p === '/') return 'a volume cannot be mounted at /';
  if (p.length > 255) return 'the mount path is longer than 255 characters';
  if (!MOUNT_PATH_RE.test(p)) return 'the mount path must be absolute, of letters, digits and . _ -, without a trailing slash';
  if (p.split('/').some((c) => c === '.' || c === '..')) return 'the mount path must be normalised (no . or .. segments)';
  const reserved = VOLUME_RESERVED_PATHS.find((r) => p === r || p.startsWith(r + '/'));
  if (reserved) return `${reserved} belongs to the platform inside the sandbox; mount the volume elsewhere (e.g. /data)`;
  return null;
}

/** True when one mount path is the other or lies under it (two such mounts would hide each other). */
export function mountPathsOverlap(a: string, b: string): boolean {
  return a === b || a.startsWith(b + '/') || b.startsWith(a + '/');
}
