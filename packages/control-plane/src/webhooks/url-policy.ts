/**
 * Which repository URLs the control plane will fetch from. A webhook makes the platform open a
 * connection a tenant chose, so: network transports only (https, http, git — never file://,
 * local paths, ssh or git's `ext::`), and no private, loopback or link-local addresses unless
 * the operator allows them (SHELLWEGO_FETCH_ALLOW_PRIVATE=1, e.g. for an internal GitLab).
 */
import { BlockList, isIP } from 'node:net';
import { lookup } from 'node:dns/promises';

export class UrlPolicyError extends Error {}

const SCHEMES = new Set(['https:', 'http:', 'git:']);

const blocked = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24], ['203.0.113.0', 24],
  ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) blocked.addSubnet(net, bits, 'ipv4');
for (const [net, bits] of [['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['2001:db8::', 32], ['64:ff9b::', 96]] as const) {
  blocked.addSubnet(net, bits, 'ipv6');
}

/** Loopback, private, link-local, CGNAT, multicast, documentation and unspecified addresses. */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return blocked.check(address, 'ipv4');
  if (family !== 6) return true; // not an address at all: never treat it as public
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return blocked.check(mapped[1], 'ipv4');
  return blocked.check(address, 'ipv6');
}

export interface RepositoryUrl {
  /** The URL git is given (credentials included). */
  url: string;
  /** The same URL without credentials: for listings, events and logs. */
  display: string;
  scheme: 'https' | 'http' | 'git';
  /** Host name or address, without IPv6 brackets. */
  host: string;
  port: number;
}

/** Checks the form of a repository URL (no network); throws UrlPolicyError with the reason. */
export function parseRepositoryUrl(input: string, opts: { allowPrivate: boolean }): RepositoryUrl {
  const text = input.trim();
  if (/^[\w.-]+@[\w.-]+:/.test(text) && !text.includes('://')) {
    throw new UrlPolicyError('ssh (scp-style) repository addresses are not supported: use an https:// URL (with a token for private repositories)');
  }
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new UrlPolicyError('the repository must be an absolute https://, http:// or git:// URL; local paths are refused');
  }
  if (!SCHEMES.has(u.protocol)) {
    throw new UrlPolicyError(`the ${u.protocol.replace(/:$/, '')} scheme is refused: use an https://, http:// or git:// URL`);
  }
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (!host) throw new UrlPolicyError('the repository URL has no host');
  if (u.protocol === 'git:' && (u.username || u.password)) throw new UrlPolicyError('git:// URLs cannot carry credentials: use https://');
  if (u.hash) throw new UrlPolicyError('the repository URL must not have a #fragment');
  if (isIP(host) && isPrivateAddress(host) && !opts.allowPrivate) throw new UrlPolicyError(privateRefusal(host));
  if ((host === 'localhost' || host.endsWith('.localhost')) && !opts.allowPrivate) throw new UrlPolicyError(privateRefusal(host));
  const scheme = u.protocol.slice(0, -1) as RepositoryUrl['scheme'];
  const port = u.port ? Number(u.port) : scheme === 'https' ? 443 : scheme === 'http' ? 80 : 9418;
  const bare = new URL(u.toString());
  bare.username = '';
  bare.password = '';
  return { url: u.toString(), display: bare.toString(), scheme, host, port };
}

function privateRefusal(host: string): string {
  return `${host} is a private, loopback or link-local address; the operator can allow fetching from such addresses with SHELLWEGO_FETCH_ALLOW_PRIVATE=1`;
}

/**
 * Resolves the repository's host and checks every address it resolves to; returns the address
 * to connect to (git is pinned to it where it can be, so a second lookup can't swap it).
 */
export async function resolveRepositoryHost(repo: RepositoryUrl, opts: { allowPrivate: boolean }): Promise<string> {
  if (isIP(repo.host)) {
    if (!opts.allowPrivate && isPrivateAddress(repo.host)) throw new UrlPolicyError(privateRefusal(repo.host));
    return repo.host;
  }
  let addresses: { address: string }[];
  try {
    addresses = await lookup(repo.host, { all: true, verbatim: true });
  } catch (err) {
    throw new UrlPolicyError(`cannot resolve ${repo.host}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (addresses.length === 0) throw new UrlPolicyError(`cannot resolve ${repo.host}`);
  if (!opts.allowPrivate) {
    const bad = addresses.find((a) => isPrivateAddress(a.address));
    if (bad) throw new UrlPolicyError(`${repo.host} resolves to ${bad.address}: ${privateRefusal(bad.address)}`);
  }
  return addresses[0].address;
}

/** Removes `user:password@` from URLs in text (git's messages echo the URL it was given). */
export function redactCredentials(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)[^/@\s]+@/gi, '$1***@');
}
