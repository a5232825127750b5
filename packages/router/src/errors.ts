/** Answers the router gives itself (never the app's), with their `x-shellwego-error` codes. */
export const routerErrors = {
  badRequest: { status: 400, code: 'bad_request' },
  noSuchApp: { status: 404, code: 'no_such_app' },
  backendUnavailable: { status: 502, code: 'backend_unavailable' },
  noRunningInstances: { status: 503, code: 'no_running_instances' },
  // Cluster listener (cluster.ts): requests from other nodes' routers.
  clusterForbidden: { status: 403, code: 'cluster_forbidden' },
  instanceNotOnNode: { status: 502, code: 'instance_not_on_node' },
  instanceUnreachable: { status: 502, code: 'instance_unreachable' },
} as const;

export type RouterError = (typeof routerErrors)[keyof typeof routerErrors];

/** Methods a proxy may resend after a reused keep-alive connection was reset before any answer. */
export const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

export function connectTimeoutError(ms: number): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(`connect timed out after ${ms} ms`);
  err.code = 'ETIMEDOUT';
  return err;
}
