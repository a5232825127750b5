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
