/**
 * Router metrics in Prometheus form. Counting is plain array arithmetic on the hot path; the
 * objects only take prom-client's shape when a scrape asks for them, so a prom-client `Registry`
 * (anything with `registerMetric`) can serve them without the router depending on prom-client.
 */
export interface MetricsRegistry {
  registerMetric(metric: any): void;
}

const CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;
/** Seconds; the usual web latency ladder. */
export const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

interface MetricValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

/** The minimal surface prom-client's Registry reads from a metric. */
interface PromMetric {
  name: string;
  help: string;
  type: 'counter' | 'histogram' | 'gauge';
  aggregator: 'sum';
  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: MetricValue[] }>;
  reset(): void;
}

export class RouterMetrics {
  private readonly byClass = new Float64Array(CLASSES.length);
  private readonly buckets = new Float64Array(DURATION_BUCKETS.length);
  private sum = 0;
  private count = 0;
  private readonly errorsByCode = new Map<string, number>();
  private readonly retries = { value: 0 };

  constructor(registry: MetricsRegistry, prefix = 'shellwego_router_') {
    const requests: PromMetric = {
      name: `${prefix}requests_total`, help: 'Requests answered by the router, by status class', type: 'counter', aggregator: 'sum',
      get: async () => ({
        ...meta(requests),
        values: CLASSES.map((c, i) => ({ value: this.byClass[i], labels: { code: c } })),
      }),
      reset: () => this.byClass.fill(0),
    };
    const duration: PromMetric = {
      name: `${prefix}request_duration_seconds`, help: 'Time from request to end of response', type: 'histogram', aggregator: 'sum',
      get: async () => {
        const values: MetricValue[] = [];
        let cumulative = 0;
        for (let i = 0; i < DURATION_BUCKETS.length; i++) {
          cumulative += this.buckets[i];
          values.push({ value: cumulative, labels: { le: DURATION_BUCKETS[i] }, metricName: `${duration.name}_bucket` });
        }
        values.push({ value: this.count, labels: { le: '+Inf' }, metricName: `${duration.name}_bucket` });
        values.push({ value: this.sum, labels: {}, metricName: `${duration.name}_sum` });
        values.push({ value: this.count, labels: {}, metricName: `${duration.name}_count` });
        return { ...meta(duration), values };
      },
      reset: () => {
        this.buckets.fill(0);
        this.sum = 0;
        this.count = 0;
      },
    };
    const errors: PromMetric = {
      name: `${prefix}errors_total`, help: 'Requests the router answered itself, by x-shellwego-error code', type: 'counter', aggregator: 'sum',
      get: async () => ({ ...meta(errors), values: [...this.errorsByCode].map(([code, value]) => ({ value, labels: { code } })) }),
      reset: () => this.errorsByCode.clear(),
    };
    const retries: PromMetric = {
      name: `${prefix}backend_retries_total`, help: 'Requests re-sent to another backend after a connect failure', type: 'counter', aggregator: 'sum',
      get: async () => ({ ...meta(retries), values: [{ value: this.retries.value, labels: {} }] }),
      reset: () => {
        this.retries.value = 0;
      },
    };
    for (const m of [requests, duration, errors, retries]) registry.registerMetric(m);
  }

  observe(status: number, seconds: number): void {
    const cls = ((status / 100) | 0) - 1;
    if (cls >= 0 && cls < CLASSES.length) this.byClass[cls]++;
    this.sum += seconds;
    this.count++;
    for (let i = 0; i < DURATION_BUCKETS.length; i++) {
      if (seconds <= DURATION_BUCKETS[i]) {
        this.buckets[i]++;
        break;
      }
    }
  }

  error(code: string): void {
    this.errorsByCode.set(code, (this.errorsByCode.get(code) ?? 0) + 1);
  }

  retry(): void {
    this.retries.value++;
  }
}

function meta(m: PromMetric): { name: string; help: string; type: string; aggregator: string } {
  return { name: m.name, help: m.help, type: m.type, aggregator: m.aggregator };
}
