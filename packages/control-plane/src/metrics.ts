import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'shellwego_' });

/** Prometheus metrics of the control plane, served at /metrics. */
export const metrics = {
  registry,
  httpRequests: new Counter({ name: 'shellwego_api_requests_total', help: 'API requests', labelNames: ['method', 'route', 'status'], registers: [registry] }),
  builds: new Counter({ name: 'shellwego_builds_total', help: 'Finished builds', labelNames: ['result'], registers: [registry] }),
  instances: new Gauge({ name: 'shellwego_instances', help: 'Instances by state', labelNames: ['state'], registers: [registry] }),
  reconciles: new Counter({ name: 'shellwego_reconcile_runs_total', help: 'Deployer reconcile passes', registers: [registry] }),
  fullPasses: new Histogram({ name: 'shellwego_reconcile_full_pass_seconds', help: "The deployer's passes over every app", buckets: [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30], registers: [registry] }),
};
