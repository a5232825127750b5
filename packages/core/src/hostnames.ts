/**
 * Custom domain hostnames. Stored and routed in one canonical form: lowercase ASCII (punycode for
 * IDNs), no trailing dot, no port. Checked here once so the API, the control plane and the CLI
 * give the same answer.
 */

export const HOSTNAME_RULE = 'a lowercase DNS name like www.example.com: labels of letters, digits and dashes (1-63 characters, not starting or ending with a dash), at least two labels, at most 253 characters';

const LABEL_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Why `hostname` is not an acceptable custom domain, or null when it is. Wildcards (`*.x.y`) are
 * refused: HTTP-01 cannot prove control of them and the route table matches exact hosts.
 */
export function hostnameProblem(hostname: string): string | null {
  if (hostname.length === 0) return 'the hostname is empty';
  if (hostname.length > 253) return `the hostname is ${hostname.length} characters long; at most 253 are allowed`;
  if (hostname !== hostname.toLowerCase()) return 'hostnames are lowercase';
  if (hostname.startsWith('*.')) return 'wildcard domains are not supported; add each hostname';
  if (hostname.endsWith('.')) return 'leave out the trailing dot';
  if (hostname.includes(':')) return 'give the hostname without a port or scheme';
  const labels = hostname.split('.');
  if (labels.length < 2) return 'a custom domain needs at least two labels (like example.com)';
  for (const label of labels) {
    if (label.length === 0) return 'the hostname has an empty label (two dots in a row)';
    if (label.length > 63) return `the label '${label.slice(0, 20)}…' is ${label.length} characters long; at most 63 are allowed`;
    if (!LABEL_RE.test(label)) return `the label '${label}' may only contain a-z, 0-9 and dashes, and may not start or end with a dash`;
  }
  if (/^\d+$/.test(labels[labels.length - 1])) return 'IP addresses are not domains';
  return null;
}

/** Whether `hostname` is `base` itself or below it (those names belong to the platform's default app URLs). */
export function isUnderDomain(hostname: string, base: string): boolean {
  return hostname === base || hostname.endsWith(`.${base}`);
}

/**
 * Candidate certificate names for an SNI server name, most specific first: the exact name, then
 * the wildcard one level up (`a.b.example.com` → `*.b.example.com`; a wildcard covers one label only).
 */
export function certificateCandidates(serverName: string): string[] {
  const name = serverName.toLowerCase().replace(/\.$/, '');
  const dot = name.indexOf('.');
  return dot > 0 && dot < name.length - 1 ? [name, `*${name.slice(dot)}`] : [name];
}
