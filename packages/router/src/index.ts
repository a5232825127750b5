/**
 * @shellwego/router — the built-in HTTP/WebSocket router: Host header → an app's running web
 * instances, fed by the route table the control plane publishes on the bus.
 */
export { createRouter } from './router.ts';
export type { ClusterIdentity } from './cluster.ts';
export type { Router, RouterOptions } from './router.ts';
export { CertificateStore, ChallengeTokens } from './tls.ts';
export type { RouterTlsOptions } from './tls.ts';
export { normalizeHost, parseAddress } from './table.ts';
export { routerErrors } from './errors.ts';
export type { MetricsRegistry } from './metrics.ts';
