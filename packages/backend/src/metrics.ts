// The Prometheus registry of the backend. Other modules (the reconcile loop, the status page) add
// their metrics to `metrics.registry`; GET /metrics serves all of it.
import client from 'prom-client';

export interface Metrics {
  readonly registry: client.Registry;
  readonly immediateSyncTotal: client.Counter<'result'>;
  readonly immediateSyncDuration: client.Histogram;
  /** Erasure syncs only (also counted in immediateSyncTotal): `held` when staging kept the rows. */
  readonly erasureSyncTotal: client.Counter<'result'>;
  readonly outboxBacklog: client.Gauge;
  readonly outboxOldestAge: client.Gauge;
  readonly httpRequestsTotal: client.Counter<'method' | 'route' | 'status'>;
  /** Set by the sync worker: reads backlog figures from production when /metrics is scraped. */
  setOutboxProbe(probe: () => Promise<{ backlog: number; oldestAgeSeconds: number }>): void;
}

export function createMetrics(): Metrics {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'elara_' });
  let probe: (() => Promise<{ backlog: number; oldestAgeSeconds: number }>) | null = null;
  let last: Promise<{ backlog: number; oldestAgeSeconds: number } | null> | null = null;
  // Both gauges are filled by one query per scrape.
  const read = () => {
    if (!last) {
      last = (probe ? probe() : Promise.resolve(null)).catch(() => null).finally(() => { setTimeout(() => { last = null; }, 0); });
    }
    return last;
  };
  const outboxBacklog = new client.Gauge({
    name: 'elara_outbox_backlog_jobs',
    help: 'Staging sync jobs committed in production and not yet delivered (including ones waiting to retry)',
    registers: [registry],
    async collect() { const r = await read(); if (r) this.set(r.backlog); },
  });
  const outboxOldestAge = new client.Gauge({
    name: 'elara_outbox_oldest_age_seconds',
    help: 'Age of the oldest undelivered staging sync job (0 when none)',
    registers: [registry],
    async collect() { const r = await read(); if (r) this.set(r.oldestAgeSeconds); },
  });
  const immediateSyncTotal = new client.Counter({
      name: 'elara_immediate_sync_total',
      help: 'Immediate (outbox) staging sync attempts by result',
      labelNames: ['result'] as const,
      registers: [registry],
  });
  // Both series exist from the start, so rate() and alerts work before the first failure.
  immediateSyncTotal.inc({ result: 'success' }, 0);
  immediateSyncTotal.inc({ result: 'failure' }, 0);
  // An erasure is also an immediate sync (counted above, so the failure-ratio alert covers it);
  // this one says how erasures ended, and `held` (a QA row in staging still references the person,
  // so staging keeps a copy until someone resolves it) is worth its own series.
  const erasureSyncTotal = new client.Counter({
    name: 'elara_erasure_sync_total',
    help: 'Erasure syncs to staging by result: success, held (a staging row created there keeps it), failure (retried)',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  for (const result of ['success', 'held', 'failure']) erasureSyncTotal.inc({ result }, 0);
  return {
    registry,
    immediateSyncTotal,
    erasureSyncTotal,
    immediateSyncDuration: new client.Histogram({
      name: 'elara_immediate_sync_duration_seconds',
      help: 'Duration of one immediate staging sync attempt',
      buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    outboxBacklog,
    outboxOldestAge,
    httpRequestsTotal: new client.Counter({
      name: 'elara_http_requests_total',
      help: 'HTTP requests by method, route and status code',
      labelNames: ['method', 'route', 'status'] as const,
      registers: [registry],
    }),
    setOutboxProbe(p) { probe = p; },
  };
}
