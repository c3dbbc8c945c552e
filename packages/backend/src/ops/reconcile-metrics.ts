// Reconcile metrics, read from the run records in staging at scrape time (so CronJob runs count):
// elara_sync_runs_total{result}, elara_sync_rows_total{table,op}, elara_sync_run_duration_seconds,
// elara_sync_last_success_timestamp_seconds, elara_sync_lag_seconds{table}, elara_sync_lag_rows{table}.
import client from 'prom-client';
import type pg from 'pg';
import type { Metrics } from '../metrics.ts';

const SUMMARY_SQL = `
  SELECT
    (SELECT coalesce(json_object_agg(status, n), '{}') FROM (SELECT status, count(*) AS n FROM elara_sync.runs WHERE mode = 'run' AND status <> 'running' GROUP BY status) s) AS runs,
    (SELECT coalesce(json_agg(x), '[]') FROM (
        SELECT t->>'table' AS table, sum((t->>'inserted')::bigint) AS inserted, sum((t->>'updated')::bigint) AS updated,
               sum((t->>'deleted')::bigint) AS deleted
          FROM elara_sync.runs r CROSS JOIN jsonb_array_elements(r.tables) t
         WHERE r.mode = 'run' AND r.status IN ('ok', 'conflicts') GROUP BY 1) x) AS rows,
    (SELECT duration_ms FROM elara_sync.runs WHERE mode = 'run' AND status <> 'running' ORDER BY id DESC LIMIT 1) AS last_duration_ms,
    (SELECT extract(epoch FROM max(finished_at)) FROM elara_sync.runs WHERE mode = 'run' AND status = 'ok') AS last_success,
    (SELECT coalesce(json_agg(json_build_object('table', coalesce(display, table_name), 'lag', extract(epoch FROM now() - last_equal_at))), '[]') FROM elara_sync.table_state) AS lag`;

export function registerReconcileMetrics(metrics: Metrics, opts: {
  stagingPool: pg.Pool;
  /** Production and staging row counts per table (from the status collector). */
  rowCounts: () => Promise<Array<{ table: string; lagRows: number | null }>>;
}): void {
  let pending: Promise<Record<string, unknown> | null> | null = null;
  const read = () => {
    if (!pending) {
      pending = opts.stagingPool.query(SUMMARY_SQL).then((r) => r.rows[0], () => null)
        .finally(() => setTimeout(() => { pending = null; }, 0));
    }
    return pending;
  };
  const registers = [metrics.registry];
  new client.Gauge({
    name: 'elara_sync_runs_total', help: 'Reconcile runs recorded in staging, by result (ok, conflicts, error)', labelNames: ['result'], registers,
    async collect() {
      const s = await read();
      const runs = (s?.runs ?? {}) as Record<string, number>;
      for (const result of ['ok', 'conflicts', 'error']) this.set({ result }, Number(runs[result] ?? 0));
    },
  });
  new client.Gauge({
    name: 'elara_sync_rows_total', help: 'Rows written to staging by reconcile runs, by table and operation', labelNames: ['table', 'op'], registers,
    async collect() {
      const s = await read();
      for (const r of (s?.rows ?? []) as Array<{ table: string; inserted: number; updated: number; deleted: number }>) {
        for (const op of ['inserted', 'updated', 'deleted'] as const) this.set({ table: r.table, op }, Number(r[op]));
      }
    },
  });
  new client.Gauge({
    name: 'elara_sync_run_duration_seconds', help: 'Duration of the last finished reconcile run', registers,
    async collect() {
      const s = await read();
      if (s?.last_duration_ms != null) this.set(Number(s.last_duration_ms) / 1000);
    },
  });
  new client.Gauge({
    name: 'elara_sync_last_success_timestamp_seconds', help: 'When the last successful reconcile run finished (unix time)', registers,
    async collect() {
      const s = await read();
      if (s?.last_success != null) this.set(Number(s.last_success));
    },
  });
  new client.Gauge({
    name: 'elara_sync_lag_seconds', help: 'Seconds since staging last equalled production, per table', labelNames: ['table'], registers,
    async collect() {
      const s = await read();
      for (const r of (s?.lag ?? []) as Array<{ table: string; lag: number | null }>) if (r.lag !== null) this.set({ table: r.table }, Number(r.lag));
    },
  });
  new client.Gauge({
    name: 'elara_sync_lag_rows', help: 'Production rows minus staging rows, per table', labelNames: ['table'], registers,
    async collect() {
      const rows = await opts.rowCounts().catch(() => []);
      for (const r of rows) if (r.lagRows !== null) this.set({ table: r.table }, r.lagRows);
    },
  });
}
