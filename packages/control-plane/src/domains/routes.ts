/** Custom domains in the router's table (called by the deployer when it builds the table). */
import type { RouteTableMessage } from '@shellwego/core';
import type { AppRow, Store } from '@shellwego/store';

type Route = RouteTableMessage['routes'][string];

/**
 * A route for every custom domain, sharing its app's backends (`baseRoute`: the app's route on
 * the base domain), with the domain's TLS flags. The HTTP→HTTPS redirect only applies once the
 * domain has a certificate: before that it would send visitors to a handshake that fails.
 */
export async function domainRoutes(store: Store, baseRoute: (appId: string) => Route | undefined, appOf: (appId: string) => AppRow | undefined): Promise<RouteTableMessage['routes']> {
  const routes: RouteTableMessage['routes'] = {};
  const domains = await store.domains.listAll();
  if (domains.length === 0) return routes;
  const certified = new Set((await store.certificates.listAll()).filter((c) => c.domainId !== null && c.certPem !== null).map((c) => c.domainId));
  for (const d of domains) {
    const app = appOf(d.appId);
    const base = app && baseRoute(d.appId);
    if (!app || !base) continue;
    routes[d.hostname] = {
      appId: app.id, appName: app.name, backends: base.backends,
      ...(d.redirectHttps && certified.has(d.id) ? { redirectHttps: true } : {}),
      ...(d.hstsMaxAge > 0 ? { hstsMaxAge: d.hstsMaxAge } : {}),
    };
  }
  return routes;
}
