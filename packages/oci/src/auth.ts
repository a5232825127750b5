/**
 * Registry authentication: `WWW-Authenticate` challenges (RFC 7235) and the Docker token flow
 * (https://distribution.github.io/distribution/spec/auth/token/). Credentials are only ever sent
 * to the realm the registry named, or to the registry itself for Basic auth.
 */

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

export interface Credentials {
  username: string;
  password: string;
}

/**
 * Parse a WWW-Authenticate header into its challenges. Parameter values may be quoted strings
 * with commas and escaped quotes inside, e.g. `Bearer realm="https://a/token",scope="repository:x:pull,push"`.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  const s = header ?? '';
  let i = 0;
  const ws = () => {
    while (i < s.length && /[\s,]/.test(s[i])) i++;
  };
  const token = () => {
    const m = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+/.exec(s.slice(i));
    if (!m) return '';
    i += m[0].length;
    return m[0];
  };
  while (i < s.length) {
    ws();
    const scheme = token();
    if (!scheme) {
      i++;
      continue;
    }
    const ch: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(ch);
    for (;;) {
      const save = i;
      ws();
      const key = token();
      while (i < s.length && /[ \t]/.test(s[i])) i++;
      if (!key || s[i] !== '=' || s[i + 1] === '=') {
        // Not a parameter: the start of the next challenge (token68 forms are not used by registries).
        i = save;
        break;
      }
      i++; // '='
      while (i < s.length && /[ \t]/.test(s[i])) i++;
      let value = '';
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < s.length) i++;
          value += s[i++];
        }
        i++; // closing quote
      } else {
        // Unquoted: up to the next comma or space (lenient: some servers leave URLs unquoted).
        const m = /^[^\s,]*/.exec(s.slice(i))!;
        value = m[0];
        i += m[0].length;
      }
      ch.params[key.toLowerCase()] = value;
    }
  }
  return out;
}

export function basicHeader(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

/** The token endpoint URL for a Bearer challenge and the scope we need. */
export function tokenUrl(ch: Challenge, scope: string): URL {
  const realm = ch.params.realm;
  if (!realm) throw new Error('the registry asked for a Bearer token but named no realm');
  const url = new URL(realm);
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`unsupported token realm ${realm}`);
  if (ch.params.service) url.searchParams.set('service', ch.params.service);
  url.searchParams.set('scope', ch.params.scope || scope);
  return url;
}
