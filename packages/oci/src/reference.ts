/**
 * Image references as Docker spells them: `[registry[:port]/]repository[:tag][@sha256:hex]`.
 * Docker Hub is the default registry (`nginx` = `docker.io/library/nginx:latest`), and its API
 * lives at registry-1.docker.io.
 */

export interface ImageReference {
  /** Registry host[:port] as written (docker.io for Hub). */
  registry: string;
  /** Host[:port] the v2 API is served from. */
  apiHost: string;
  repository: string;
  /** null when only a digest was given. */
  tag: string | null;
  digest: string | null;
}

export const DOCKER_HUB = 'docker.io';
const HUB_API = 'registry-1.docker.io';
const COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;
const HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$/;

export class ReferenceError extends Error {}

export function isDigest(s: string): boolean {
  return DIGEST_RE.test(s);
}

/** Parse and normalize a reference; throws ReferenceError with the reason for bad input. */
export function parseReference(input: string): ImageReference {
  const ref = String(input ?? '').trim();
  const bad = (why: string) => new ReferenceError(`invalid image reference "${ref}": ${why}`);
  if (!ref) throw new ReferenceError('the image reference is empty');
  if (ref.length > 512) throw bad('longer than 512 characters');
  if (/\s/.test(ref)) throw bad('it contains whitespace');
  let rest = ref;
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(digest)) throw bad('the digest must be sha256: followed by 64 lowercase hex digits');
  }
  let tag: string | null = null;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw bad(`the tag "${tag}" is not valid (letters, digits, _ . -, at most 128)`);
  }
  if (!rest) throw bad('no repository');
  const parts = rest.split('/');
  let registry = DOCKER_HUB;
  // Like Docker: the first part is a registry when it looks like a host (a dot, a port, localhost).
  if (parts.length > 1 && (parts[0].includes('.') || parts[0].includes(':') || parts[0] === 'localhost' || parts[0].startsWith('['))) {
    registry = parts.shift()!;
    if (!HOST_RE.test(registry)) throw bad(`"${registry}" is not a valid registry host`);
  }
  if (registry === 'index.docker.io' || registry === HUB_API) registry = DOCKER_HUB;
  for (const p of parts) {
    if (!COMPONENT_RE.test(p)) throw bad(`"${p}" is not a valid repository component (lowercase letters, digits and separators . _ __ -)`);
  }
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  const repository = parts.join('/');
  if (repository.length > 255) throw bad('the repository name is longer than 255 characters');
  if (tag === null && digest === null) tag = 'latest';
  return { registry, apiHost: registry === DOCKER_HUB ? HUB_API : registry, repository, tag, digest };
}

/** Canonical text form: `registry/repository[:tag][@digest]`. */
export function formatReference(r: ImageReference): string {
  return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}

/** Hosts spoken to over plain HTTP without being listed: loopback only (as Docker does). */
export function isLoopbackHost(hostPort: string): boolean {
  const host = hostPort.startsWith('[') ? hostPort.slice(1, hostPort.indexOf(']')) : hostPort.replace(/:\d+$/, '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
