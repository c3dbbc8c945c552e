import type pg from 'pg';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { resolveTables, type SyncedTable, type TableConfig } from '../catalog/introspect.ts';
import { orderTables } from '../plan/table-order.ts';
import { columnList, fingerprintSelect, LOCAL_ROWS, LOCAL_ROWS_DRY, sourceSelect, totalSelect, type Scope } from '../sql/statements.ts';
import { Fingerprints, computeFingerprints, keepOrChooseBuckets, splitInt64 } from '../copy/fingerprint.ts';
import { applyDeletes, applyUpserts, conflictBuckets, countPlanned, ensureTracking, stageTable, type StagedTable } from '../apply/apply.ts';
import { ensureStateSchema, LOCK_APPLY, LOCK_RUN } from '../state/schema.ts';
import { finishRun, startRun } from '../state/runs.ts';
import { connect, guardTarget, identify } from './connect.ts';
import { SyncError } from '../errors.ts';
import type { TableRunResult } from '../types.ts';

export interface RunOptions {
  sourceUrl: string;
  targetUrl: string;
  tables: TableConfig[];
  /** Plan only: compute what would change, write nothing. */
  dryRun?: boolean;
  allowProductionTarget?: boolean;
  /** Called as tables progress (rows copied so far of the rows to copy). */
  onProgress?: (e: ProgressEvent) => void;
  /** statement_timeout for the run's statements on both sides, ms (default 30 min). */
  statementTimeoutMs?: number;
}

export type ProgressEvent =
  | { kind: 'order'; tables: string[] }
  | { kind: 'table-start'; table: string; rowsToCopy: number; scope: 'none' | 'changed' | 'all' | 'initial' }
  | { kind: 'table-progress'; table: string; rowsCopied: number }
  | { kind: 'table-done'; table: string; result: TableRunResult };

export interface RunResult {
  ok: boolean;
  /** Another run held the lock; nothing was done. */
  skipped: boolean;
  runId: number | null;
  durationMs: number;
  order: string[];
  tables: TableRunResult[];
  error?: SyncError;
}

interface TableWork {
  t: SyncedTable;
  result: TableRunResult;
  staged: StagedTable | null;
  scope: Scope;
  fp: Fingerprints;
  sig: string;
  failed: boolean;
  adopt: boolean;
  poisoned: number[];
  started: number;
  /** Skipped by the aggregate check: nothing to read, apply or store but the run id. */
  unchanged: boolean;
  total: { rows: number; hi: number; lo: number; text: string };
}

// ELARA_SYNC_DEBUG=1 prints phase timings on stderr (no values, only table names and counts).
const debug = process.env.ELARA_SYNC_DEBUG === '1';
let lastMark = Date.now();
function mark(what: string): void {
  if (!debug) return;
  const now = Date.now();
  process.stderr.write(`[elara-sync] ${String(now - lastMark).padStart(6)} ms  rss ${Math.round(process.memoryUsage().rss / 1e6)} MB  ${what}\n`);
  lastMark = now;
}

function toSyncError(e: unknown, table?: string): SyncError {
  if (e instanceof SyncError) return e;
  const err = e as Error & { code?: string; constraint?: string; table?: string };
  const where = table ? ` while syncing table ${table}` : '';
  if (err.code === '57014') {
    return new SyncError('E_TIMEOUT', `a statement timed out${where}`, 'raise statementTimeoutMs or look for locks held on the table (pg_locks)', { cause: e, table });
  }
  if (err.code === '55P03') {
    return new SyncError('E_LOCKED', `a lock could not be obtained${where}`, 'another session holds a lock on the table; retry later', { cause: e, table });
  }
  if (err.code === '42501') {
    return new SyncError('E_PERMISSION', `permission denied${where}: ${err.message}`, 'grant the sync role the privileges listed in deploy/kubernetes/sql/staging-roles.sql', { cause: e, table });
  }
  // Database messages may quote values in DETAIL; only the message line (no DETAIL) is kept.
  return new SyncError('E_APPLY', `${err.message}${where}`, 'see docs/errors.md; the run changed nothing in staging and can be re-run', { cause: e, table });
}

/** One reconcile run: see DESIGN.md. Returns a result; throws only for programming errors. */
export async function runSync(opts: RunOptions): Promise<RunResult> {
  const started = Date.now();
  const dryRun = opts.dryRun ?? false;
  let source: pg.Client | null = null;
  let target: pg.Client | null = null;
  let progressClient: pg.Client | null = null;
  let runId: number | null = null;
  const works: TableWork[] = [];
  let order: string[] = [];
  try {
    source = await connect(opts.sourceUrl, 'source', 'elara-sync-reader');
    target = await connect(opts.targetUrl, 'target', 'elara-sync-writer');
    const [sid, tid] = await Promise.all([identify(source), identify(target)]);
    guardTarget(sid, tid, opts);
    const cheapCompare = sid.hashProbe === tid.hashProbe;
    const timeout = opts.statementTimeoutMs ?? 30 * 60_000;
    await source.query(`SET statement_timeout = ${timeout}; SET idle_in_transaction_session_timeout = ${timeout + 60_000}`);
    await target.query(`SET statement_timeout = ${timeout}; SET lock_timeout = '60s'`);

    const locked = (await target.query(`SELECT pg_try_advisory_lock(${LOCK_RUN}) AS ok`)).rows[0].ok;
    if (!locked) return { ok: true, skipped: true, runId: null, durationMs: Date.now() - started, order: [], tables: [] };

    if (!dryRun) {
      await ensureStateSchema(target);
      runId = await startRun(target, 'run');
    }
    const hasState = dryRun ? (await target.query(`SELECT to_regclass('elara_sync.table_state') IS NOT NULL AS e`)).rows[0].e : true;

    await target.query('BEGIN');
    await target.query(`SET LOCAL elara_sync.writer = 'on'; SET CONSTRAINTS ALL DEFERRED`);
    // Wait for immediate syncs in flight, and hold them off until commit, so the snapshot taken
    // next includes everything they wrote and nothing they write is deleted by this run.
    if (!dryRun) await target.query(`SELECT pg_advisory_xact_lock(${LOCK_APPLY})`);
    if (!hasState) await target.query(`CREATE TEMP TABLE _elara_local_rows (table_name text, key text, PRIMARY KEY (table_name, key)) ON COMMIT DROP`);
    await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const snapshotAt: Date = (await source.query('SELECT now() AS t')).rows[0].t;

    const tables = await resolveTables(source, target, opts.tables);
    const ordering = orderTables(tables.map((t) => t.target));
    const byName = new Map(tables.map((t) => [t.target.qualified, t]));
    order = ordering.upsertOrder.map((q) => byName.get(q)!.target.display);
    opts.onProgress?.({ kind: 'order', tables: order });

    if (opts.onProgress && !dryRun) progressClient = await connect(opts.targetUrl, 'target', 'elara-sync-progress');
    const runCache = {};

    // Phase 0: one aggregate per table (count and xor of row versions), on two connections that
    // share the snapshot. A table whose aggregate equals the stored one, with no staging edits,
    // is unchanged and costs nothing more.
    const totals = new Map<string, { rows: number; hi: number; lo: number; text: string }>();
    {
      const snapshotId: string = (await source.query('SELECT pg_export_snapshot() AS s')).rows[0].s;
      const second = await connect(opts.sourceUrl, 'source', 'elara-sync-reader');
      try {
        await second.query(`SET statement_timeout = ${timeout}; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`);
        await second.query(`SET TRANSACTION SNAPSHOT '${snapshotId}'`);
        // Largest table first, so the two connections finish at about the same time.
        const sizes = await source.query(`SELECT t, c.reltuples FROM unnest($1::text[]) t JOIN pg_class c ON c.oid = t::regclass`, [ordering.upsertOrder]);
        const size = new Map(sizes.rows.map((r) => [r.t as string, Number(r.reltuples)]));
        const queue = [...ordering.upsertOrder].sort((a, b) => (size.get(b) ?? 0) - (size.get(a) ?? 0));
        const worker = async (c: pg.Client) => {
          for (let q = queue.shift(); q !== undefined; q = queue.shift()) {
            const r = (await c.query(totalSelect(byName.get(q)!))).rows[0];
            totals.set(q, { rows: Number(r.n), ...splitInt64(r.x), text: r.x });
          }
        };
        await Promise.all([worker(source), worker(second)]);
        await second.query('COMMIT');
      } finally {
        await second.end().catch(() => {});
      }
    }

    mark('totals');
    // Phase 1, parents first: find changed buckets, load their source rows, upsert.
    for (const [i, q] of ordering.upsertOrder.entries()) {
      const t = byName.get(q)!;
      const tStart = Date.now();
      const display = t.target.display;
      const total = totals.get(q)!;
      const state = hasState
        ? (await target.query(
          `SELECT config_sig, buckets, tracked_since, total_rows, total_hash::text AS total_hash, target_rows,
                  EXISTS (SELECT 1 FROM elara_sync.edits WHERE table_name = $1) AS edited
             FROM elara_sync.table_state WHERE table_name = $1 ${dryRun ? '' : 'FOR UPDATE'}`,
          [display])).rows[0]
        : undefined;
      const sig = createHash('sha1').update(`${sourceSelect(t, { kind: 'all' })}|${fingerprintSelect(t)}|${t.target.primaryKey.join(',')}`).digest('hex');
      const stateValid = Boolean(state && state.config_sig === sig && cheapCompare);
      if (stateValid && !state.edited && Number(state.total_rows) === total.rows && state.total_hash === total.text) {
        const result: TableRunResult = {
          table: display, sourceRows: total.rows, targetRows: Number(state.target_rows), inserted: 0, updated: 0, deleted: 0,
          unchanged: total.rows, conflicts: 0, durationMs: 0,
        };
        works.push({ t, staged: null, scope: { kind: 'all' }, fp: new Fingerprints(0), sig, failed: false, adopt: false, poisoned: [], started: tStart, result, unchanged: true, total });
        opts.onProgress?.({ kind: 'table-start', table: display, rowsToCopy: 0, scope: 'none' });
        result.durationMs = Date.now() - tStart;
        continue;
      }
      const buckets = keepOrChooseBuckets(state?.buckets ?? null, total.rows);
      mark(`${display}: state read`);
      const fp = await computeFingerprints(source, fingerprintSelect(t), buckets);
      mark(`${display}: fingerprints of ${fp.rows()} rows in ${buckets} buckets`);
      if (!dryRun) await ensureTracking(target, t, runCache);

      let scope: Scope = { kind: 'all' };
      let rowsToCopy = fp.rows();
      const storedBytes = stateValid && state.buckets === buckets
        ? await readFingerprints(target, display) : null;
      const stored = storedBytes ? Fingerprints.fromBytes(buckets, storedBytes) : null;
      if (stored) {
        const d = fp.diff(stored);
        const edits = dryRun || !hasState
          ? await target.query(`SELECT DISTINCT (key_hash & ${buckets - 1})::int AS b FROM elara_sync.edits WHERE table_name = $1`, [display])
          : await target.query(`WITH d AS (DELETE FROM elara_sync.edits WHERE table_name = $1 RETURNING key_hash) SELECT DISTINCT (key_hash & ${buckets - 1})::int AS b FROM d`, [display]);
        for (const { b } of edits.rows) {
          if (!(d.bitmap[b >> 3]! & (1 << (b & 7)))) {
            d.bitmap[b >> 3]! |= 1 << (b & 7);
            d.dirty++;
            d.rows += fp.data[b * 3]!;
          }
        }
        if (d.dirty === 0) {
          scope = { kind: 'buckets', buckets, bitmap: d.bitmap };
          rowsToCopy = 0;
        } else if (d.dirty < buckets / 2) {
          scope = { kind: 'buckets', buckets, bitmap: d.bitmap };
          rowsToCopy = d.rows;
        }
      } else if (!dryRun && hasState) {
        await target.query(`DELETE FROM elara_sync.edits WHERE table_name = $1`, [display]);
      }
      mark(`${display}: ${rowsToCopy} rows to copy (${scope.kind})`);
      const work: TableWork = {
        t, staged: null, scope, fp, sig, failed: false, adopt: !state?.tracked_since, poisoned: [], started: tStart, unchanged: false, total,
        result: { table: display, sourceRows: fp.rows(), targetRows: 0, inserted: 0, updated: 0, deleted: 0, unchanged: 0, conflicts: 0, durationMs: 0 },
      };
      works.push(work);
      const nothingChanged = stored !== null && scope.kind === 'buckets' && !scope.bitmap.some((x) => x !== 0);
      const initialLoad = scope.kind === 'all' && !dryRun && !stored && Number(state?.target_rows ?? 0) === 0 && !state?.tracked_since;
      opts.onProgress?.({ kind: 'table-start', table: display, rowsToCopy, scope: nothingChanged ? 'none' : initialLoad ? 'initial' : scope.kind === 'all' ? 'all' : 'changed' });
      if (nothingChanged) continue;

      await target.query(`SAVEPOINT t${i}`);
      try {
        const targetEmpty = scope.kind === 'all' && !dryRun
          && (await target.query(`SELECT NOT EXISTS (SELECT 1 FROM ${t.target.qualified}) AS e`)).rows[0].e;
        const stopPoll = progressClient ? pollCopyProgress(progressClient, target, display, opts.onProgress!) : () => {};
        try {
          if (targetEmpty) {
            // Fast path for an empty table: stream straight into it (still inside the run's transaction).
            await pipeline(
              source.query(copyTo(`COPY (${sourceSelect(t, scope)}) TO STDOUT (FORMAT binary)`)),
              target.query(copyFrom(`COPY ${t.target.qualified} (${columnList(t)}) FROM STDIN (FORMAT binary)`)),
            );
            work.result.inserted = work.fp.rows();
            work.adopt = false;
          } else {
            work.staged = await stageTable(target, t, i, hasState ? LOCAL_ROWS : LOCAL_ROWS_DRY);
            await pipeline(
              source.query(copyTo(`COPY (${sourceSelect(t, scope)}) TO STDOUT (FORMAT binary)`)),
              target.query(copyFrom(`COPY ${work.staged.tmp} (${columnList(t)}) FROM STDIN (FORMAT binary)`)),
            );
          }
        } finally {
          stopPoll();
        }
        mark(`${display}: copied`);
        if (work.staged) {
          // No ANALYZE of the temp table: the planner sizes a never-analyzed table from its
          // physical size, which is enough here, and ANALYZE costs more than it saves.
          const up = await applyUpserts(target, work.staged, scope, { adopt: work.adopt && scope.kind === 'all', dryRun });
          if (dryRun) {
            const c = await countPlanned(target, work.staged, scope);
            Object.assign(work.result, { inserted: c.inserted, updated: c.updated, deleted: c.deleted });
          } else {
            Object.assign(work.result, { inserted: up.inserted, updated: up.updated, deleted: up.deleted });
          }
          work.result.conflicts = up.conflicts;
          if (up.conflicts > 0) {
            work.result.conflictKeys = up.conflictKeys;
            work.poisoned = await conflictBuckets(target, work.staged, buckets);
          }
        }
        await target.query(`RELEASE SAVEPOINT t${i}`);
        mark(`${display}: upserted`);
        work.result.durationMs += Date.now() - tStart;
      } catch (e) {
        if ((e as { code?: string }).code === undefined || /COPY|stream/i.test((e as Error).message)) throw e;
        await target.query(`ROLLBACK TO SAVEPOINT t${i}`);
        work.failed = true;
        work.result.error = toSyncError(e, display).message;
      }
    }

    // Phase 2, children first: delete rows that production no longer has.
    if (!dryRun) {
      for (const q of ordering.deleteOrder) {
        const work = works.find((w) => w.t.target.qualified === q)!;
        if (!work.staged || work.failed) continue;
        await target.query(`SAVEPOINT d`);
        const dStart = Date.now();
        try {
          work.result.deleted += await applyDeletes(target, work.staged, work.scope);
          work.result.durationMs += Date.now() - dStart;
          mark(`${work.result.table}: deleted ${work.result.deleted}`);
          await target.query(`RELEASE SAVEPOINT d`);
        } catch (e) {
          await target.query(`ROLLBACK TO SAVEPOINT d`);
          work.failed = true;
          work.result.error = `${toSyncError(e, work.result.table).message} (rows deleted in production could not be deleted in staging, probably because staging-only rows still reference them)`;
        }
      }
    }

    for (const w of works) {
      const r = w.result;
      if (w.unchanged) {
        if (!dryRun) {
          await target.query(`UPDATE elara_sync.table_state SET last_equal_at = $2, last_run_id = $3 WHERE table_name = $1`, [r.table, snapshotAt, runId]);
        }
        opts.onProgress?.({ kind: 'table-done', table: r.table, result: r });
        continue;
      }
      const tEnd = Date.now();
      // Counted, not derived from the last run's count: immediate syncs write to staging between
      // runs without leaving edits behind.
      r.targetRows = Number((await target.query(`SELECT count(*) AS n FROM ${w.t.target.qualified}`)).rows[0].n);
      r.unchanged = Math.max(0, r.sourceRows - r.inserted - r.updated - r.conflicts);
      if (!dryRun && !w.failed) {
        for (const b of w.poisoned) w.fp.poison(b);
        // A poisoned bucket makes the stored total differ too, so the next run looks again.
        const totalHash = w.poisoned.length ? '0' : w.total.text;
        await target.query(
          `INSERT INTO elara_sync.table_state (table_name, config_sig, buckets, fingerprints, source_rows, target_rows, last_equal_at, last_run_id, tracked_since, total_rows, total_hash)
           VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN $8::timestamptz END, $9, now(), $10, $11)
           ON CONFLICT (table_name) DO UPDATE SET config_sig = EXCLUDED.config_sig, buckets = EXCLUDED.buckets,
             fingerprints = EXCLUDED.fingerprints, source_rows = EXCLUDED.source_rows, target_rows = EXCLUDED.target_rows,
             last_equal_at = coalesce(EXCLUDED.last_equal_at, elara_sync.table_state.last_equal_at),
             last_run_id = EXCLUDED.last_run_id, tracked_since = coalesce(elara_sync.table_state.tracked_since, now()),
             total_rows = EXCLUDED.total_rows, total_hash = EXCLUDED.total_hash`,
          [r.table, w.sig, w.fp.buckets, w.fp.toBytes(), r.sourceRows, r.targetRows, r.conflicts === 0, snapshotAt, runId, w.total.rows, totalHash],
        );
      }
      r.durationMs += Date.now() - tEnd;
      mark(`${r.table}: counted and state stored`);
      opts.onProgress?.({ kind: 'table-done', table: r.table, result: r });
    }
    const results = works.map((w) => w.result);
    const anyProblem = works.some((w) => w.failed || w.result.conflicts > 0);
    const status = works.some((w) => w.failed) ? 'error' : anyProblem ? 'conflicts' : 'ok';
    if (dryRun) {
      await target.query('ROLLBACK');
    } else {
      const errors = works.filter((w) => w.failed).map((w) => w.result.error).join('; ') || null;
      await finishRun(target, runId!, status, Date.now() - started, results, errors);
      await target.query('COMMIT');
    }
    await source.query('COMMIT');
    const failed = works.filter((w) => w.failed);
    for (const w of failed) w.result.unchanged = 0;
    const error = failed.length === 0 ? undefined : new SyncError('E_APPLY',
      `staging rejected the changes of ${failed.map((w) => w.result.table).join(', ')}: ${failed.map((w) => w.result.error).join('; ')}`,
      'those tables were left as they were (the other tables were synced); fix the cause and run again — see docs/errors.md');
    return { ok: !anyProblem, skipped: false, runId, durationMs: Date.now() - started, order, tables: results, error };
  } catch (e) {
    const err = toSyncError(e);
    if (target) {
      await target.query('ROLLBACK').catch(() => {});
      if (runId !== null) {
        await finishRun(target, runId, 'error', Date.now() - started, works.map((w) => w.result), `${err.code}: ${err.message}`).catch(() => {});
      }
    }
    return { ok: false, skipped: false, runId, durationMs: Date.now() - started, order, tables: works.map((w) => w.result), error: err };
  } finally {
    await Promise.all([source?.end().catch(() => {}), target?.end().catch(() => {}), progressClient?.end().catch(() => {})]);
  }
}

/**
 * The stored bucket fingerprints, read in 512 KiB slices: a bytea arrives as a hex string twice its
 * size, and a few MB of strings at once would show up in the process's peak memory.
 */
async function readFingerprints(target: pg.Client, table: string): Promise<Buffer | null> {
  const n = (await target.query(`SELECT octet_length(fingerprints) AS n FROM elara_sync.table_state WHERE table_name = $1`, [table])).rows[0]?.n;
  if (n === undefined || n === null) return null;
  const out = Buffer.alloc(Number(n));
  const slice = 512 * 1024;
  for (let off = 0; off < out.length; off += slice) {
    const r = await target.query(`SELECT substring(fingerprints FROM $2 FOR $3) AS s FROM elara_sync.table_state WHERE table_name = $1`, [table, off + 1, slice]);
    (r.rows[0].s as Buffer).copy(out, off);
  }
  return out;
}

/** Reports rows copied so far from pg_stat_progress_copy of the writer's backend. */
function pollCopyProgress(progress: pg.Client, writer: pg.Client, table: string, onProgress: (e: ProgressEvent) => void): () => void {
  const pid = (writer as unknown as { processID: number }).processID;
  let stopped = false;
  const tick = async () => {
    while (!stopped) {
      await new Promise((r) => setTimeout(r, 200));
      if (stopped) break;
      const r = await progress.query(`SELECT tuples_processed FROM pg_stat_progress_copy WHERE pid = $1`, [pid]).catch(() => null);
      const n = r?.rows[0]?.tuples_processed;
      if (n !== undefined && !stopped) onProgress({ kind: 'table-progress', table, rowsCopied: Number(n) });
    }
  };
  void tick();
  return () => {
    stopped = true;
  };
}
