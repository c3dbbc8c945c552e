// Reconcile metrics, read from each target's run records at scrape time (so CronJob runs count as
// well as in-process ones), every one labelled with its target: elara_sync_runs_total{result},
// elara_sync_rows_total{table,op}, elara_sync_last_run_duration_seconds,
// elara_sync_last_success_timestamp_seconds, elara_sync_lag_seconds{table},
// elara_sync_lag_rows{table} (staging), elara_sync_staging_up.
//
// The two counters are totals over elara_sync.runs. Each scrape adds only the runs that finished
// since the previous scrape (a cursor over run ids), so a scrape costs the same after a year of
// runs as after a day, and the totals only go up. They are exposed only after the first successful
// read: a counter that showed 0 while staging was down and then jumped to the real total would look
// to Prometheus like thousands of runs at once (and fire every increase() alert).
import client from 'prom-client';
import type pg from 'pg';
import { readTableStates } from '@elara/sync';
import type { Metrics } from '../metrics.ts';
import { lagSeconds } from './status.ts';

const RESULTS = ['ok', 'conflicts', 'error'] as const;
const OPS = ['inserted', 'updated', 'deleted'] as const;
type Result = typeof RESULTS[number];
type Op = typeof OPS[number];

// The batch is every run after the cursor up to the first run still 'running' (exclusive): that
// one is counted once it finishes. Runs are recorded one at a time (the engine's run lock; an
// interrupted run is marked 'error' before the next is inserted), so a finished run never appears
// behind the cursor later. Rows written are counted for ok and conflicts runs; an error run's
// counts are not (its record does not say which of its tables were committed).
const SUMMARY_SQL = `
  WITH b AS (
    SELECT (SELECT max(id) FROM elara_sync.runs) AS max_id,
           (SELECT min(id) FROM elara_sync.runs WHERE id > $1 AND mode = 'run' AND status = 'running') AS first_running
  ), upto AS (
    SELECT max_id, coalesce(first_running - 1, max_id, $1) AS id FROM b
  ), batch AS (
    SELECT r.status, r.tables FROM elara_sync.runs r, upto
     WHERE r.id > $1 AND r.id <= upto.id AND r.mode = 'run'
  )
  SELECT upto.max_id::text AS max_id, upto.id::text AS upto,
    (SELECT coalesce(json_object_agg(status, n), '{}') FROM (SELECT status, count(*)::int AS n FROM batch GROUP BY status) s) AS runs,
    (SELECT coalesce(json_agg(x), '[]') FROM (
        SELECT t->>'table' AS table, coalesce(sum((t->>'inserted')::bigint), 0) AS inserted,
               coalesce(sum((t->>'updated')::bigint), 0) AS updated, coalesce(sum((t->>'deleted')::bigint), 0) AS deleted
          FROM batch CROSS JOIN jsonb_array_elements(batch.tables) t
         WHERE batch.status IN ('ok', 'conflicts') GROUP BY 1) x) AS rows,
    (SELECT duration_ms FROM elara_sync.runs WHERE mode = 'run' AND status <> 'running' ORDER BY id DESC LIMIT 1) AS last_duration_ms,
    (SELECT extract(epoch FROM finished_at) FROM elara_sync.runs WHERE mode = 'run' AND status IN ('ok', 'conflicts') ORDER BY id DESC LIMIT 1) AS last_success
  FROM upto`;

interface Summary {
  max_id: string | null;
  upto: string;
  runs: Partial<Record<Result, number>>;
  rows: Array<{ table: string } & Record<Op, string | number>>;
  last_duration_ms: number | null;
  last_success: string | number | null;
}

// SQLSTATEs for "staging has no elara_sync.runs yet" (no run has happened): that is a readable
// staging with zero runs, not an unreachable one.
const NOT_CREATED_YET = new Set(['42P01', '3F000']);

interface TargetSource {
  /** The target's name in elara-sync.yml (the `target` label). */
  name: string;
  /** A pool on the target database, where its run records are. */
  pool: pg.Pool;
  /** The outbox backlog, for the target the registration syncs go to (lag counts them; status.ts lagSeconds). */
  outbox?: () => Promise<{ backlog: number; oldestAgeSeconds: number }>;
}

/** One target's figures, read from its run records; each scrape reads every target once. */
function targetReader(t: TargetSource) {
  const totals = {
    loaded: false,
    cursor: 0,
    runs: Object.fromEntries(RESULTS.map((r) => [r, 0])) as Record<Result, number>,
    rows: new Map<string, Record<Op, number>>(),
  };
  const last = {
    up: false,
    durationSeconds: null as number | null,
    successTimestamp: null as number | null,
    // Lag as read, and when: while the target cannot be read, the lag keeps growing from there.
    lag: new Map<string, { seconds: number; readAt: number }>(),
  };
  const resetTotals = () => {
    totals.cursor = 0;
    for (const r of RESULTS) totals.runs[r] = 0;
    totals.rows.clear();
  };
  const query = async (): Promise<Summary> => (await t.pool.query<Summary>(SUMMARY_SQL, [totals.cursor])).rows[0]!;
  const refresh = async () => {
    try {
      let s = await query();
      // Fewer run ids than already counted: the target was recreated or restored. Count it afresh
      // (Prometheus sees a counter reset, which rate() and increase() handle).
      if (s.max_id === null ? totals.cursor > 0 : Number(s.max_id) < totals.cursor) {
        resetTotals();
        s = await query();
      }
      for (const r of RESULTS) totals.runs[r] += Number(s.runs[r] ?? 0);
      for (const row of s.rows) {
        const x = totals.rows.get(row.table) ?? { inserted: 0, updated: 0, deleted: 0 };
        for (const op of OPS) x[op] += Number(row[op]);
        totals.rows.set(row.table, x);
      }
      totals.cursor = Number(s.upto);
      totals.loaded = true;
      if (s.last_duration_ms !== null) last.durationSeconds = Number(s.last_duration_ms) / 1000;
      if (s.last_success !== null) last.successTimestamp = Number(s.last_success);
      const [states, outbox] = await Promise.all([readTableStates(t.pool), t.outbox ? t.outbox() : { backlog: 0, oldestAgeSeconds: 0 }]);
      const now = Date.now();
      for (const st of states) {
        const seconds = lagSeconds(now, st, outbox);
        if (seconds !== null) last.lag.set(st.table, { seconds, readAt: now });
      }
      last.up = true;
    } catch (err) {
      if (NOT_CREATED_YET.has((err as { code?: string }).code ?? '')) {
        totals.loaded = true;
        last.up = true;
      } else {
        last.up = false;
      }
    }
  };
  return { name: t.name, totals, last, refresh };
}

export function registerReconcileMetrics(metrics: Metrics, opts: {
  /** Every target with a database (staging, an anonymized dev copy, …): each has its own run records and figures. */
  targets: TargetSource[];
  /** Production and staging row counts per table (from the status collector), for the staging target. */
  rowCounts: () => Promise<Array<{ table: string; lagRows: number | null }>>;
}): void {
  const readers = opts.targets.map(targetReader);
  let pending: Promise<unknown> | null = null;
  // One read of every target per scrape, shared by every metric below.
  const read = () => (pending ??= Promise.all(readers.map((r) => r.refresh())).finally(() => setTimeout(() => { pending = null; }, 0)));

  const registers = [metrics.registry];
  new client.Counter({
    name: 'elara_sync_runs_total', help: 'Finished reconcile runs recorded in each target (elara_sync.runs), by target and result: ok, conflicts, error', labelNames: ['target', 'result'], registers,
    async collect() {
      await read();
      this.reset();
      for (const r of readers) {
        if (!r.totals.loaded) continue;
        for (const result of RESULTS) this.inc({ target: r.name, result }, r.totals.runs[result]);
      }
    },
  });
  new client.Counter({
    name: 'elara_sync_rows_total', help: 'Rows written to each target by reconcile runs that finished ok or with conflicts, by target, table and operation', labelNames: ['target', 'table', 'op'], registers,
    async collect() {
      await read();
      this.reset();
      for (const r of readers) for (const [table, t] of r.totals.rows) for (const op of OPS) this.inc({ target: r.name, table, op }, t[op]);
    },
  });
  new client.Gauge({
    name: 'elara_sync_last_run_duration_seconds', help: 'Duration of the last finished reconcile run, per target', labelNames: ['target'], registers,
    async collect() {
      await read();
      for (const r of readers) if (r.last.durationSeconds !== null) this.set({ target: r.name }, r.last.durationSeconds);
    },
  });
  new client.Gauge({
    name: 'elara_sync_last_success_timestamp_seconds', help: 'When the last reconcile run that applied its changes (result ok or conflicts) finished, per target, Unix time', labelNames: ['target'], registers,
    async collect() {
      await read();
      for (const r of readers) if (r.last.successTimestamp !== null) this.set({ target: r.name }, r.last.successTimestamp);
    },
  });
  new client.Gauge({
    name: 'elara_sync_lag_seconds', help: 'Seconds since the target was last known in step with production, per target and table: a run that checked both sides, or an immediate sync with nothing older waiting (keeps growing while the target cannot be read)', labelNames: ['target', 'table'], registers,
    async collect() {
      await read();
      const now = Date.now();
      for (const r of readers) for (const [table, l] of r.last.lag) this.set({ target: r.name, table }, l.seconds + (r.last.up ? 0 : (now - l.readAt) / 1000));
    },
  });
  new client.Gauge({
    name: 'elara_sync_lag_rows', help: 'Production rows minus staging rows, per table (the staging target)', labelNames: ['target', 'table'], registers,
    async collect() {
      const rows = await opts.rowCounts().catch(() => []);
      for (const r of rows) if (r.lagRows !== null) this.set({ target: 'staging', table: r.table }, r.lagRows);
    },
  });
  new client.Gauge({
    name: 'elara_sync_staging_up', help: '1 when this scrape could read the target\'s run records, 0 when it could not (unreachable, or no SELECT on elara_sync), per target', labelNames: ['target'], registers,
    async collect() {
      await read();
      for (const r of readers) this.set({ target: r.name }, r.last.up ? 1 : 0);
    },
  });
}
