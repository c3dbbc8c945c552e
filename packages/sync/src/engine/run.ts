// One reconcile run (DESIGN.md): compile the plans, find what changed on either side, copy the
// source rows of the changed buckets into temp tables, apply them through the one apply, record
// the new state and the run, commit. Every step is a function below; runSync strings them together.
import type pg from 'pg';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { orderTables } from '../plan/table-order.ts';
import type { TableConfig, TablePlan } from '../plan/table-plan.ts';
import { columnList, sourceFingerprintSelect, sourceSelect, sourceTotalSelect, targetBucketSelect, targetFingerprintSelect, targetTotalSelect, type Scope } from '../sql/statements.ts';
import { createStageTables, heldBuckets, LOCAL_KEYS, LOCAL_KEYS_DRY, type Stage } from '../sql/apply-statements.ts';
import { Fingerprints, chooseBuckets, computeFingerprints, keepOrChooseBuckets, splitInt64, unionInto } from '../copy/fingerprint.ts';
import { applyStages, beginApply, describeHold, type TableOutcome } from '../apply/apply.ts';
import { ensureStateSchema, LOCK_RUN } from '../state/schema.ts';
import { ensureTracking } from '../state/tracking.ts';
import { applyFold, foldTargetLog, markUnchanged, readStoredState, totalOf, writeState, type LogFold, type StoredState, type Total } from '../state/table-state.ts';
import { finishRun, startRun } from '../state/runs.ts';
import { connect, guardTarget, identify } from './connect.ts';
import { assertOneStatement, compilePlans, findFailingField, sourceQuery, validateOnSource } from './plans.ts';
import { planTargetFor, type ResolvedTarget } from './targets.ts';
import { adjustSequences } from './sequences.ts';
import { toSyncError } from './errors.ts';
import { displayName } from '../catalog/introspect.ts';
import { SyncError, type Side } from '../errors.ts';
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
  /** How far staging's sequences are kept ahead of production's (default 10^9, at most half the remaining range). */
  sequenceHeadroom?: number;
  /** The target's rules and subset (resolveTarget). Absent: a raw copy of every row. */
  target?: ResolvedTarget;
  /**
   * Read production under this exported snapshot (pg_export_snapshot, or a replication slot's
   * EXPORT_SNAPSHOT): watch's handover, so streaming starts exactly where this run's view ends.
   */
  snapshot?: string;
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
  /** What the plans noticed: lossless type differences, staging triggers that do not fire on apply. */
  notes: string[];
  error?: SyncError;
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

interface Run {
  opts: RunOptions;
  dryRun: boolean;
  source: pg.Client;
  target: pg.Client;
  progress: pg.Client | null;
  runId: number | null;
  hasState: boolean;
  cheapCompare: boolean;
  snapshotAt: Date;
  timeout: number;
}

interface TableWork {
  plan: TablePlan;
  state: StoredState | null;
  sourceTotal: Total;
  targetTotal: Total;
  fold: LogFold;
  unchanged: boolean;
  buckets: number;
  sourceFp: Fingerprints | null;
  targetFp: Fingerprints | null;
  scope: Scope | null;
  dirtyRows: number;
  direct: boolean;
  rowsCopied: number;
  stage: Stage | null;
  outcome: TableOutcome | null;
  started: number;
  /** This table's own time so far (detection, copy), ms. */
  ownMs: number;
  sourceClean: boolean;
  targetClean: boolean;
  checkMs: { source: number; target: number };
}

const sameTotal = (a: Total | null, b: Total | null) => Boolean(a && b && a.rows === b.rows && a.text === b.text);

/** One reconcile run. Returns a result; throws only for programming errors. */
export async function runSync(opts: RunOptions): Promise<RunResult> {
  const started = Date.now();
  const dryRun = opts.dryRun ?? false;
  let source: pg.Client | null = null;
  let target: pg.Client | null = null;
  let run: Run | null = null;
  let runId: number | null = null;
  let order: string[] = [];
  const works: TableWork[] = [];
  let notes: string[] = [];
  try {
    const mask = opts.target?.mask ?? null;
    source = await connect(opts.sourceUrl, 'source', 'elara-sync-reader', { mask });
    target = await connect(opts.targetUrl, 'target', 'elara-sync-writer');
    const [sid, tid] = await Promise.all([identify(source), identify(target)]);
    guardTarget(sid, tid, opts);
    const timeout = opts.statementTimeoutMs ?? 30 * 60_000;
    await source.query(`SET statement_timeout = ${timeout}; SET idle_in_transaction_session_timeout = ${timeout + 60_000}`);
    await target.query(`SET statement_timeout = ${timeout}; SET lock_timeout = '60s'`);

    const locked = (await target.query(`SELECT pg_try_advisory_lock(${LOCK_RUN}) AS ok`)).rows[0].ok;
    if (!locked) return { ok: true, skipped: true, runId: null, durationMs: Date.now() - started, order: [], tables: [], notes: [] };

    if (!dryRun) {
      await ensureStateSchema(target);
      runId = await startRun(target, 'run');
    }
    const hasState = dryRun ? (await target.query(`SELECT to_regclass('elara_sync.table_state') IS NOT NULL AS e`)).rows[0].e : true;
    const planTarget = opts.target ? await planTargetFor(opts.target) : null;
    const plans = await compilePlans(source, target, opts.tables, planTarget).catch((e) => { throw toSyncError(e, undefined); });
    notes = plans.flatMap((p) => p.notes);
    await validateOnSource(source, plans);
    const ordering = orderTables(plans.map((p) => p.target));
    const byId = new Map(plans.map((p) => [p.id, p]));
    const ordered = ordering.upsertOrder.map((id) => byId.get(id)!);
    order = ordered.map((p) => p.display);
    opts.onProgress?.({ kind: 'order', tables: order });

    await target.query('BEGIN');
    // Waits for immediate syncs in flight and holds them off until commit, so the snapshot taken
    // next includes everything they wrote and nothing they write is deleted by this run.
    await beginApply(target, { lock: dryRun ? 'none' : 'exclusive' });
    if (!hasState) await target.query(`CREATE TEMP TABLE _elara_local_keys (table_name text, key text[], PRIMARY KEY (table_name, key)) ON COMMIT DROP`);
    await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    if (opts.snapshot) {
      if (!/^[0-9A-F-]+$/i.test(opts.snapshot)) throw new SyncError('E_CONFIG', 'the snapshot to run under is not a snapshot id', 'pass the id pg_export_snapshot() or CREATE_REPLICATION_SLOT returned');
      await source.query(`SET TRANSACTION SNAPSHOT '${opts.snapshot}'`);
    }
    const snapshotAt: Date = (await source.query('SELECT now() AS t')).rows[0].t;
    run = {
      opts, dryRun, source, target, runId, hasState, timeout, snapshotAt,
      cheapCompare: sid.hashProbe === tid.hashProbe,
      progress: opts.onProgress && !dryRun ? await connect(opts.targetUrl, 'target', 'elara-sync-progress') : null,
    };

    const totals = await readTotals(run, ordered);
    mark('totals');
    for (const plan of ordered) works.push(await detectChanges(run, plan, totals.get(plan.id)!));
    for (const [i, w] of works.entries()) await stageTable(run, w, i);
    const stages = works.filter((w) => w.stage).map((w) => w.stage!);
    const outcomes = await applyStages(target, stages, ordering.upsertOrder, {
      dryRun,
      adopt: new Set(works.filter((w) => w.stage && !w.direct && !w.state?.trackedSince).map((w) => w.plan.id)),
      direct: new Map(works.filter((w) => w.direct).map((w) => [w.plan.id, w.rowsCopied])),
      synced: new Set(ordered.map((p) => p.id)),
    });
    for (const w of works) w.outcome = outcomes.get(w.plan.id) ?? null;
    mark('applied');
    if (!dryRun) await adjustSequences(source, target, ordered, opts.sequenceHeadroom);

    const results: TableRunResult[] = [];
    for (const w of works) {
      const r = await finishTable(run, w);
      results.push(r);
      opts.onProgress?.({ kind: 'table-done', table: r.table, result: r });
    }
    const held = results.some((r) => r.conflicts > 0);
    const status = held ? 'conflicts' : 'ok';
    if (dryRun) await target.query('ROLLBACK');
    else {
      await finishRun(target, runId!, status, Date.now() - started, results, null);
      await target.query('COMMIT');
    }
    await source.query('COMMIT');
    return { ok: !held, skipped: false, runId, durationMs: Date.now() - started, order, tables: results, notes };
  } catch (e) {
    // Statements not wrapped with their side are the target's (state, tracking, run records).
    const err = toSyncError(e, (e as { code?: unknown }).code ? 'target' : undefined);
    const results = works.map((w) => partialResult(w));
    if (target) {
      await target.query('ROLLBACK').catch(() => {});
      if (runId !== null) {
        await finishRun(target, runId, 'error', Date.now() - started, results, `${err.code}: ${err.message}`).catch(() => {});
      }
    }
    return { ok: false, skipped: false, runId, durationMs: Date.now() - started, order, tables: results, notes, error: err };
  } finally {
    await Promise.all([source?.end().catch(() => {}), target?.end().catch(() => {}), run?.progress?.end().catch(() => {})]);
  }
}

/**
 * Per table: count and xor of row versions on production (two connections sharing the snapshot,
 * largest tables first) and on staging (its own row versions), all at once.
 */
async function readTotals(run: Run, plans: TablePlan[]): Promise<Map<string, { source: Total; target: Total; sourceMs: number; targetMs: number }>> {
  const out = new Map<string, { source: Total; target: Total; sourceMs: number; targetMs: number }>();
  const snapshotId: string = (await run.source.query('SELECT pg_export_snapshot() AS s')).rows[0].s;
  const second = await connect(run.opts.sourceUrl, 'source', 'elara-sync-reader', { mask: run.opts.target?.mask ?? null });
  const sourceTotals = new Map<string, { t: Total; ms: number }>();
  const targetTotals = new Map<string, { t: Total; ms: number }>();
  try {
    await second.query(`SET statement_timeout = ${run.timeout}; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`);
    await second.query(`SET TRANSACTION SNAPSHOT '${snapshotId}'`);
    const sizes = await run.source.query(`SELECT t, c.reltuples FROM unnest($1::text[]) t JOIN pg_class c ON c.oid = t::regclass`, [plans.map((p) => p.id)]);
    const size = new Map(sizes.rows.map((r) => [r.t as string, Number(r.reltuples)]));
    const queue = [...plans].sort((a, b) => (size.get(b.id) ?? 0) - (size.get(a.id) ?? 0));
    const sourceWorker = async (c: pg.Client) => {
      for (let p = queue.shift(); p !== undefined; p = queue.shift()) {
        const t0 = Date.now();
        const r = await sourceQuery(c, sourceTotalSelect(p)).catch((e) => { throw toSyncError(e, 'source', p.display); });
        sourceTotals.set(p.id, { t: { rows: Number(r.rows[0].n), text: r.rows[0].x }, ms: Date.now() - t0 });
      }
    };
    const targetWorker = async () => {
      for (const p of plans) {
        const t0 = Date.now();
        const r = await run.target.query(targetTotalSelect(p)).catch((e) => { throw toSyncError(e, 'target', p.display); });
        targetTotals.set(p.id, { t: { rows: Number(r.rows[0].n), text: r.rows[0].x }, ms: Date.now() - t0 });
      }
    };
    await Promise.all([sourceWorker(run.source), sourceWorker(second), targetWorker()]);
    await second.query('COMMIT');
  } finally {
    await second.end().catch(() => {});
  }
  for (const p of plans) {
    const s = sourceTotals.get(p.id)!;
    const t = targetTotals.get(p.id)!;
    out.set(p.id, { source: s.t, target: t.t, sourceMs: s.ms, targetMs: t.ms });
  }
  return out;
}

/**
 * What changed since the last run, on both sides. Production: its row versions against the stored
 * fingerprints. Staging: its row versions against the fingerprints stored after the last apply
 * (plus what immediate syncs logged since), so writes that bypassed the tracking trigger, a
 * TRUNCATE, a re-created table or a restored dump are found, never assumed away.
 */
async function detectChanges(run: Run, plan: TablePlan, totals: { source: Total; target: Total; sourceMs: number; targetMs: number }): Promise<TableWork> {
  const started = Date.now();
  const state = run.hasState ? await readStoredState(run.target, plan.id, !run.dryRun) : null;
  const usable = Boolean(state && state.configSig === plan.sig && run.cheapCompare);
  const storedTarget = usable && state!.target ? state!.target.clone() : null;
  const fold = run.hasState
    ? await foldTargetLog(run.target, plan.id, state?.buckets ?? 256, storedTarget, run.dryRun)
    : { rows: 0, hi: 0, lo: 0, entries: 0, lastAt: null, buckets: [] };
  const expectedTarget = usable && state!.targetTotal ? applyFold(state!.targetTotal, fold) : null;
  const targetClean = storedTarget !== null && state!.targetOid === plan.target.oid && sameTotal(expectedTarget, totals.target);
  const sourceClean = usable && state!.source !== null && sameTotal(state!.sourceTotal, totals.source);
  const work: TableWork = {
    plan, state, sourceTotal: totals.source, targetTotal: totals.target, fold, unchanged: false, buckets: state?.buckets ?? 256,
    sourceFp: null, targetFp: null, scope: null, dirtyRows: 0, direct: false, rowsCopied: 0, stage: null, outcome: null, started, ownMs: 0,
    sourceClean, targetClean, checkMs: { source: totals.sourceMs, target: totals.targetMs },
  };
  if (sourceClean && targetClean && fold.entries === 0) {
    work.unchanged = true;
    work.ownMs += Date.now() - started;
    run.opts.onProgress?.({ kind: 'table-start', table: plan.display, rowsToCopy: 0, scope: 'none' });
    return work;
  }
  const buckets = usable ? keepOrChooseBuckets(state!.buckets, totals.source.rows) : chooseBuckets(totals.source.rows);
  const sameBuckets = usable && buckets === state!.buckets;
  work.buckets = buckets;
  let t0 = Date.now();
  work.sourceFp = sourceClean && sameBuckets ? state!.source!
    : await assertOneStatement(run.source, sourceFingerprintSelect(plan)).then(() => computeFingerprints(run.source, sourceFingerprintSelect(plan), buckets))
      .catch((e) => { throw toSyncError(e, 'source', plan.display); });
  work.checkMs.source += Date.now() - t0;
  t0 = Date.now();
  work.targetFp = targetClean && sameBuckets ? storedTarget!
    : totals.target.rows === 0 ? new Fingerprints(buckets)
      : await computeFingerprints(run.target, targetFingerprintSelect(plan), buckets).catch((e) => { throw toSyncError(e, 'target', plan.display); });
  work.checkMs.target += Date.now() - t0;
  mark(`${plan.display}: fingerprints (${buckets} buckets; source ${sourceClean ? 'clean' : 'changed'}, staging ${targetClean ? 'clean' : 'changed'})`);

  let bitmap: Uint8Array | null = null;
  if (sameBuckets && state!.source && storedTarget) {
    bitmap = work.sourceFp.diff(state!.source).bitmap;
    // Buckets an immediate sync (or watch) wrote since the last run are compared again whatever
    // the fingerprints say: it applied production as of its own snapshot, which the stored source
    // fingerprints do not describe. (A row it delivered and production deleted since leaves
    // production's row versions exactly as the last run saw them.)
    for (const b of fold.buckets) bitmap[b >> 3]! |= 1 << (b & 7);
    const dirty = unionInto(bitmap, work.targetFp.diff(storedTarget).bitmap);
    if (dirty > buckets / 2) bitmap = null;
  }
  if (bitmap === null) {
    work.scope = { kind: 'all' };
    work.dirtyRows = totals.source.rows;
    work.direct = totals.target.rows === 0 && !run.dryRun;
  } else {
    work.scope = { kind: 'buckets', buckets, bitmap };
    for (let b = 0; b < buckets; b++) if (bitmap[b >> 3]! & (1 << (b & 7))) work.dirtyRows += work.sourceFp.data[b * 3]!;
    if (!bitmap.some((x) => x !== 0)) work.scope = null;
  }
  work.ownMs += Date.now() - started;
  const scopeName = work.scope === null ? 'none' : work.direct && !state?.trackedSince ? 'initial' : work.scope.kind === 'all' ? 'all' : 'changed';
  run.opts.onProgress?.({ kind: 'table-start', table: plan.display, rowsToCopy: work.scope ? work.dirtyRows : 0, scope: scopeName });
  return work;
}

/** Copies the source rows of the changed buckets into the table's temp table (or straight into an empty target table). */
async function stageTable(run: Run, w: TableWork, index: number): Promise<void> {
  if (!w.scope) return;
  const { plan } = w;
  const t0 = Date.now();
  if (!run.dryRun) await ensureTracking(run.target, plan, run);
  const localKeys = run.hasState ? LOCAL_KEYS : LOCAL_KEYS_DRY;
  const select = sourceSelect(plan, w.scope);
  const stopPoll = run.progress ? pollCopyProgress(run.progress, run.target, plan.display, run.opts.onProgress!) : () => {};
  try {
    if (w.direct) {
      // An empty table is loaded straight from the COPY stream (still inside the run's transaction).
      // Its local keys are stale: the rows they named are gone.
      await run.target.query(`DELETE FROM ${localKeys} WHERE table_name = $1`, [plan.id]);
      w.rowsCopied = await copyRows(run, plan, select, `COPY ${plan.id} (${columnList(plan)}) FROM STDIN (FORMAT binary)`);
      w.stage = { plan, src: '', act: `_elara_act_${index}`, scope: w.scope, localKeys };
      await run.target.query(createStageTables(plan, `_elara_src_${index}`, w.stage.act, 'DROP'));
    } else {
      w.stage = { plan, src: `_elara_src_${index}`, act: `_elara_act_${index}`, scope: w.scope, localKeys };
      await run.target.query(createStageTables(plan, w.stage.src, w.stage.act, 'DROP'));
      w.rowsCopied = await copyRows(run, plan, select, `COPY ${w.stage.src} (${columnList(plan)}) FROM STDIN (FORMAT binary)`);
    }
  } finally {
    stopPoll();
    w.ownMs += Date.now() - t0;
  }
  mark(`${plan.display}: copied ${w.rowsCopied} rows${w.direct ? ' straight into the table' : ''}`);
}

/** Binary COPY from the source query into `copyIn` on the target; errors say which side failed (and which field, on the source). */
async function copyRows(run: Run, plan: TablePlan, select: string, copyIn: string): Promise<number> {
  await assertOneStatement(run.source, select).catch((e) => { throw toSyncError(e, 'source', plan.display); });
  const out = run.source.query(copyTo(`COPY (${select}) TO STDOUT (FORMAT binary)`));
  const into = run.target.query(copyFrom(copyIn));
  // The first stream to fail is the side that failed; the pipeline then destroys the other one.
  const failed: { side: Side | null } = { side: null };
  out.on('error', () => { failed.side ??= 'source'; });
  into.on('error', () => { failed.side ??= 'target'; });
  try {
    await pipeline(out, into);
  } catch (e) {
    if (failed.side === 'source') {
      const err = toSyncError(e, 'source', plan.display);
      const probe = await connect(run.opts.sourceUrl, 'source', 'elara-sync-probe', { mask: run.opts.target?.mask ?? null }).catch(() => null);
      const field = probe ? await findFailingField(probe, plan).catch(() => null) : null;
      await probe?.end().catch(() => {});
      if (field) {
        throw new SyncError('E_SOURCE', err.message.replace(`of table ${plan.display}`, `of table ${plan.display} (field ${plan.display}.${field})`), err.hint,
          { cause: e, table: plan.display, side: 'source' });
      }
      throw err;
    }
    throw toSyncError(e, 'target', plan.display);
  }
  return (into as unknown as { rowCount: number }).rowCount ?? 0;
}

/** Results, and the new state: production's fingerprints (held buckets poisoned), staging's as the apply left them. */
async function finishTable(run: Run, w: TableWork): Promise<TableRunResult> {
  const { plan } = w;
  const t0 = Date.now();
  const own = () => w.ownMs + (w.outcome?.ms ?? 0) + Date.now() - t0;
  const o = w.outcome;
  const result: TableRunResult = {
    table: plan.display, sourceRows: w.sourceTotal.rows, targetRows: w.targetTotal.rows,
    inserted: o?.inserted ?? 0, updated: o?.updated ?? 0, deleted: o?.deleted ?? 0, unchanged: 0, conflicts: o?.held ?? 0, durationMs: 0,
    checks: {
      source: w.sourceClean ? 'unchanged' : 'changed', target: w.targetClean ? 'unchanged' : 'changed',
      compared: w.unchanged || !w.scope ? 'none' : w.scope.kind === 'all' ? 'all' : 'changed buckets',
      sourceMs: w.checkMs.source, targetMs: w.checkMs.target,
    },
  };
  if (o && o.held > 0) {
    result.conflictKeys = o.heldRows.map((h) => h.key);
    result.held = o.heldRows.map((h) => ({ key: h.key, reason: describeHold(h.reason, displayName) }));
  }
  // Keys of production rows deleted in staging have served their purpose once a run compared the
  // table: the rows are back, or production deleted them too.
  if (!run.dryRun) await run.target.query(`DELETE FROM elara_sync.vacated WHERE table_name = $1`, [plan.id]);
  if (w.unchanged) {
    result.unchanged = w.sourceTotal.rows;
    if (!run.dryRun) await markUnchanged(run.target, plan.id, run.snapshotAt, run.runId, w.fold, w.targetTotal);
    result.durationMs = own();
    return result;
  }
  let targetFp = w.targetFp!;
  const wrote = Boolean(o && o.inserted + o.updated + o.deleted + (w.direct ? 1 : 0) > 0);
  if (!run.dryRun && wrote) {
    if (w.scope?.kind === 'buckets') {
      targetFp = targetFp.clone();
      const r = await run.target.query(targetBucketSelect(plan, w.buckets, w.scope.bitmap));
      for (let b = 0; b < w.buckets; b++) if (w.scope.bitmap[b >> 3]! & (1 << (b & 7))) targetFp.setBucket(b, 0, 0, 0);
      for (const row of r.rows) {
        const { hi, lo } = splitInt64(row.x);
        targetFp.setBucket(row.b, Number(row.n), hi, lo);
      }
    } else {
      targetFp = await computeFingerprints(run.target, targetFingerprintSelect(plan), w.buckets);
    }
  }
  const targetTotal = totalOf(targetFp);
  result.targetRows = run.dryRun ? w.targetTotal.rows : targetTotal.rows;
  result.unchanged = Math.max(0, result.sourceRows - result.inserted - result.updated - result.conflicts);
  if (!run.dryRun) {
    const sourceFp = w.sourceFp!;
    let sourceTotal = w.sourceTotal;
    if (w.stage && o && o.held > 0) {
      for (const { b } of (await run.target.query(heldBuckets(w.stage, w.buckets).text)).rows) sourceFp.poison(b);
      // The stored total must differ from any real one too, so the next run looks again (a row
      // count of -1 can never match; a hash of 0 would match an empty table).
      sourceTotal = { rows: -1, text: '0' };
    }
    await writeState(run.target, {
      id: plan.id, display: plan.display, configSig: plan.sig, source: sourceFp, target: targetFp, sourceTotal, targetTotal,
      targetOid: plan.target.oid, sourceRows: w.sourceTotal.rows, targetRows: targetTotal.rows,
      equalAt: o && o.held > 0 ? null : run.snapshotAt, runId: run.runId, lastImmediateAt: w.fold.lastAt,
    });
  }
  result.durationMs = own();
  mark(`${plan.display}: state stored`);
  return result;
}

function partialResult(w: TableWork): TableRunResult {
  return {
    table: w.plan.display, sourceRows: w.sourceTotal.rows, targetRows: w.targetTotal.rows, inserted: 0, updated: 0, deleted: 0,
    unchanged: 0, conflicts: 0, durationMs: w.ownMs,
  };
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

