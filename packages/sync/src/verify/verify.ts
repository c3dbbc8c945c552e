import { pipeline } from 'node:stream/promises';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { quoteIdent } from '../catalog/introspect.ts';
import type { TableConfig, TablePlan } from '../plan/table-plan.ts';
import { keyArray, keyLabel } from '../sql/statements.ts';
import { LOCAL_KEYS } from '../sql/apply-statements.ts';
import { connect, guardTarget, identify } from '../engine/connect.ts';
import { assertOneStatement, compilePlans, validateOnSource } from '../engine/plans.ts';
import { planTargetFor, type ResolvedTarget } from '../engine/targets.ts';
import { SyncError } from '../errors.ts';
import { describeDatabaseError } from '../engine/errors.ts';

export interface TableVerifyResult {
  table: string;
  sourceRows: number;
  targetRows: number;
  /** In production, not in staging. */
  missing: number;
  /** In staging, not in production, and not a local (QA) row. */
  extra: number;
  /** Same key, different values on the synced columns. */
  changed: number;
  /** Staging-only rows created in staging (kept by design). */
  local: number;
  equal: boolean;
}

export interface VerifyResult {
  equal: boolean;
  durationMs: number;
  tables: TableVerifyResult[];
}

/**
 * md5 of the synced columns' text, as the source query produces them (rules applied) and as
 * staging holds them: text identity, so -0 and 0 or 1.0 and 1.00 differ here as they do to a reader.
 */
function rowHash(p: TablePlan, side: 'source' | 'target'): string {
  const cols = p.columns.map((c) => (side === 'source' ? `(${c.expr})::${c.type}` : `t.${quoteIdent(c.name)}`));
  return `md5(ROW(${cols.join(', ')})::text)`;
}

/**
 * Full comparison of every synced table, row by row (key and an md5 of the synced columns),
 * independent of the run's bucket state: the check a run's shortcuts are tested against.
 * Reads production in one snapshot; on staging it only creates temp tables.
 */
export async function verifySync(opts: { sourceUrl: string; targetUrl: string; tables: TableConfig[]; target?: ResolvedTarget }): Promise<VerifyResult> {
  const started = Date.now();
  const source = await connect(opts.sourceUrl, 'source', 'elara-sync-verify', { mask: opts.target?.mask ?? null });
  let target;
  try {
    target = await connect(opts.targetUrl, 'target', 'elara-sync-verify');
  } catch (e) {
    await source.end();
    throw e;
  }
  try {
    const [sid, tid] = await Promise.all([identify(source), identify(target)]);
    guardTarget(sid, tid, { allowProductionTarget: true });
    await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await target.query('BEGIN');
    const tables = await compilePlans(source, target, opts.tables, opts.target ? await planTargetFor(opts.target) : null);
    await validateOnSource(source, tables);
    const hasLocal = (await target.query(`SELECT to_regclass('${LOCAL_KEYS}') IS NOT NULL AS e`)).rows[0].e;
    const out: TableVerifyResult[] = [];
    for (const [i, t] of tables.entries()) {
      const tmp = `_elara_verify_${i}`;
      await target.query(`CREATE TEMP TABLE ${tmp} (key text PRIMARY KEY, h text NOT NULL) ON COMMIT DROP`);
      const where = t.where ? ` WHERE (${t.where})` : '';
      const select = `SELECT ${keyLabel(t, 's')}, ${rowHash(t, 'source')} FROM ${t.only}${t.id} s${where}`;
      await assertOneStatement(source, select);
      await pipeline(
        source.query(copyTo(`COPY (${select}) TO STDOUT`)),
        target.query(copyFrom(`COPY ${tmp} (key, h) FROM STDIN`)),
      );
      const k = keyLabel(t, 't');
      const localJoin = hasLocal ? `x.local` : 'false';
      const r = await target.query(
        `WITH tgt AS (SELECT ${k} AS key, ${rowHash(t, 'target')} AS h,
                  ${hasLocal ? `EXISTS (SELECT 1 FROM ${LOCAL_KEYS} l WHERE l.table_name = $1 AND l.key = ${keyArray(t, 't')})` : 'false'} AS local
                  FROM ${t.only}${t.id} t),
              x AS (SELECT coalesce(s.key, tgt.key) AS key, s.h AS sh, tgt.h AS th, coalesce(tgt.local, false) AS local FROM ${tmp} s FULL JOIN tgt ON tgt.key = s.key)
         SELECT count(*) FILTER (WHERE sh IS NOT NULL)::int AS source_rows,
                count(*) FILTER (WHERE th IS NOT NULL)::int AS target_rows,
                count(*) FILTER (WHERE th IS NULL)::int AS missing,
                count(*) FILTER (WHERE sh IS NULL AND NOT ${localJoin})::int AS extra,
                count(*) FILTER (WHERE sh IS NULL AND ${localJoin})::int AS local,
                count(*) FILTER (WHERE sh <> th)::int AS changed
         FROM x`,
        hasLocal ? [t.id] : [],
      );
      const x = r.rows[0];
      out.push({
        table: t.display, sourceRows: x.source_rows, targetRows: x.target_rows, missing: x.missing,
        extra: x.extra, changed: x.changed, local: x.local, equal: x.missing + x.extra + x.changed === 0,
      });
    }
    await target.query('ROLLBACK');
    await source.query('COMMIT');
    return { equal: out.every((t) => t.equal), durationMs: Date.now() - started, tables: out };
  } catch (e) {
    if (e instanceof SyncError) throw e;
    throw new SyncError('E_VERIFY', `verify failed: ${describeDatabaseError(e)}`, 'check both databases are reachable and migrated', { cause: e });
  } finally {
    await source.end().catch(() => {});
    await target.end().catch(() => {});
  }
}
