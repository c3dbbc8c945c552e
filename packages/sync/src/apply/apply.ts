// The one apply: every mode (reconcile, immediate sync of a few keys, later watch) loads source
// rows into per-table temp tables in the caller's target transaction, then calls applyStages,
// which classifies, holds back what cannot be applied (see sql/apply-statements.ts), and writes
// the rest. The caller adds its own bookkeeping (run record, log, stream position) and commits.
import type pg from 'pg';
import { SyncError } from '../errors.ts';
import type { TablePlan } from '../plan/table-plan.ts';
import { LOCK_APPLY } from '../state/schema.ts';
import {
  actCounts, adoptLocalRows, applyDeletes, applyInserts, applyUpdates, classify, deleteDirectOrphans, forgetLocalRows, forgetLocalRowsDry,
  heldRows, holdOrphans, holdReferencedDeletes, holdUniqueCollisions, type OrphanCheck, type Sql, type Stage,
} from '../sql/apply-statements.ts';
import { LOCAL_SESSION_SETTINGS } from '../sql/statements.ts';
import { describeDatabaseError } from '../engine/errors.ts';

export type { Stage } from '../sql/apply-statements.ts';

// ELARA_SYNC_DEBUG=1 prints each apply statement's time on stderr (SQL text only, never values).
const debug = process.env.ELARA_SYNC_DEBUG === '1';
/** Changes in a table above which its temp tables are analyzed before the hold rules run. */
const ANALYZE_ABOVE = 2000;

export interface HeldRow {
  key: string;
  reason: string;
}

export interface TableOutcome {
  inserted: number;
  updated: number;
  deleted: number;
  /** Changes held back (and reported), with the first keys and why. */
  held: number;
  heldRows: HeldRow[];
  /** Time spent in this table's apply statements. */
  ms: number;
}

export interface ApplyOptions {
  dryRun?: boolean;
  /** Tables on their first run: staging-only rows in scope become local (QA) rows first. */
  adopt?: Set<string>;
  /** Rows already loaded straight into an empty target table (no src temp table), per plan id. */
  direct?: Map<string, number>;
  /** Use prepared statements (a pooled session that applies many times). */
  prepare?: boolean;
  /**
   * Ids of every synced table (staged or not). A synced parent that is not staged was found equal
   * to production on both sides, so its FK children need no existence check.
   */
  synced?: Set<string>;
}

/**
 * Settings of every apply transaction, for every mode. session_replication_role = replica keeps
 * staging's own triggers and FK actions from firing on rows the engine writes, as with native
 * logical replication (the hold rules keep FK integrity); it also keeps the tracking trigger from
 * recording the engine's writes as QA data.
 */
export async function beginApply(tx: pg.ClientBase, opts: { lock: 'exclusive' | 'shared' | 'none'; lockWaitMs?: number; statementTimeoutMs?: number; begin?: boolean }): Promise<void> {
  // One round trip (begin: with the BEGIN too), which matters for watch's many small applies.
  const parts = [...(opts.begin ? ['BEGIN'] : []), 'SET LOCAL session_replication_role = replica', LOCAL_SESSION_SETTINGS, 'SET CONSTRAINTS ALL DEFERRED'];
  if (opts.lock !== 'none') {
    const wait = opts.lockWaitMs;
    if (wait !== undefined) parts.push(`SET LOCAL lock_timeout = ${wait}`, `SET LOCAL statement_timeout = ${Math.max(wait, opts.statementTimeoutMs ?? 0)}`);
    parts.push(`SELECT ${opts.lock === 'shared' ? 'pg_advisory_xact_lock_shared' : 'pg_advisory_xact_lock'}(${LOCK_APPLY})`);
    if (wait !== undefined) parts.push(`SET LOCAL lock_timeout = 0`, `SET LOCAL statement_timeout = ${opts.statementTimeoutMs ?? 0}`);
  }
  try {
    await tx.query(parts.join('; '));
  } catch (e) {
    // Only the SET of session_replication_role can be refused for a privilege here.
    if ((e as { code?: string }).code === '42501') {
      throw new SyncError('E_PERMISSION',
        'staging (target) refused SET session_replication_role = replica for the sync role: the engine applies rows without firing staging\'s own triggers, as logical replication does',
        'grant it: GRANT SET ON PARAMETER session_replication_role TO <sync role> (PostgreSQL 15+, see deploy/kubernetes/sql/staging-roles.sql), or run the sync as a role that may set it',
        { cause: e, side: 'target' });
    }
    throw e;
  }
}

interface Counts { i: number; u: number; r: number; d: number; held: { i: number; u: number; r: number; d: number } }
const zero = (): Counts => ({ i: 0, u: 0, r: 0, d: 0, held: { i: 0, u: 0, r: 0, d: 0 } });
const heldTotal = (c: Counts) => c.held.i + c.held.u + c.held.r + c.held.d;

/** Human text for a held row's reason code (codes come from sql/apply-statements.ts). */
export function describeHold(code: string, display: (qualified: string) => string): string {
  if (code === 'key') return 'a row created in staging has this key';
  const [kind, name, table] = code.split(':');
  if (kind === 'unique') return `collides on unique index ${name} with a row that stays in staging (created there, or held back)`;
  if (kind === 'parent') return `needs a parent row (constraint ${name}) that is not in staging or is held back`;
  if (kind === 'referenced') return `still referenced by rows of ${display(table ?? '')} that stay in staging (constraint ${name})`;
  return code;
}

/**
 * Classifies, holds and applies the staged tables inside the caller's transaction (begun with
 * beginApply). Tables may come in any order; statements run parents first. Throws a SyncError
 * naming the table when staging rejects a statement; the caller rolls back.
 */
export async function applyStages(tx: pg.ClientBase, stages: Stage[], order: string[], opts: ApplyOptions = {}): Promise<Map<string, TableOutcome>> {
  const byId = new Map(stages.map((s) => [s.plan.id, s]));
  const sorted = order.map((id) => byId.get(id)).filter((s): s is Stage => Boolean(s));
  const counts = new Map<string, Counts>(sorted.map((s) => [s.plan.id, zero()]));
  const spent = new Map<string, number>();
  let current: TablePlan | null = null;
  const run = async (s: Stage, sql: Sql | null): Promise<pg.QueryResult | null> => {
    if (!sql) return null;
    current = s.plan;
    const t0 = Date.now();
    const r = opts.prepare
      ? await tx.query({ name: `elara_${hashText(sql.text)}`, text: sql.text, values: sql.values })
      : await tx.query(sql.text, sql.values);
    spent.set(s.plan.id, (spent.get(s.plan.id) ?? 0) + Date.now() - t0);
    if (debug) process.stderr.write(`[elara-sync] ${String(Date.now() - t0).padStart(6)} ms  ${s.plan.display}: ${sql.text.replace(/\s+/g, ' ').slice(0, 90)} → ${r.rowCount}\n`);
    return r;
  };
  const recount = async (s: Stage) => {
    const c = zero();
    for (const r of (await run(s, actCounts(s)))!.rows) {
      const op = r.op as keyof Omit<Counts, 'held'>;
      c[op] = r.applied;
      c.held[op] = r.held;
    }
    counts.set(s.plan.id, c);
  };
  try {
    // A table without local (QA) keys needs none of the three statements that forget them: counted
    // first, this saves watch's and the immediate sync's many small applies three round trips per table.
    const adopting = !opts.dryRun && sorted.some((s) => opts.adopt?.has(s.plan.id));
    const localBefore = adopting ? null : await countLocalKeys(tx, sorted);
    let forgot = false;
    for (const s of sorted) {
      const direct = opts.direct?.has(s.plan.id);
      if (direct) {
        counts.get(s.plan.id)!.i = opts.direct!.get(s.plan.id)!;
        continue;
      }
      if (opts.adopt?.has(s.plan.id) && !opts.dryRun) await run(s, adoptLocalRows(s));
      if (!localBefore || (localBefore.get(s.plan.id) ?? 0) > 0) {
        forgot = true;
        for (const q of opts.dryRun && s.localKeys.startsWith('pg_temp') ? forgetLocalRowsDry(s) : forgetLocalRows(s)) await run(s, q);
      }
      for (const q of classify(s)) await run(s, q);
      await recount(s);
      // Without statistics the planner guesses that `held IS NULL` matches one row and picks
      // nested loops over the temp tables: quadratic on a large compare. A sample is cheap.
      const c = counts.get(s.plan.id)!;
      if (!opts.prepare && c.i + c.u + c.r + c.d > ANALYZE_ABOVE) await tx.query(`ANALYZE ${s.src}, ${s.act}`);
    }
    const localCounts = !forgot && localBefore ? localBefore : await countLocalKeys(tx, sorted);

    // Hold rules until a whole pass adds no hold.
    for (let pass = 0; ; pass++) {
      let added = 0;
      for (const s of sorted) {
        const c = counts.get(s.plan.id)!;
        const isDirect = opts.direct?.has(s.plan.id) ?? false;
        const upserts = c.i + c.u + c.r;
        for (const fk of s.plan.fksOut) {
          if (upserts === 0) break;
          const parent = byId.get(fk.refTable) ?? null;
          const keysScope = s.scope.kind === 'keys' || parent?.scope.kind === 'keys';
          let mode: OrphanCheck;
          if (keysScope || (!parent && !opts.synced?.has(fk.refTable))) mode = 'all';
          else if (!parent) continue;
          else {
            const pc = counts.get(parent.plan.id)!;
            if (pc.d + pc.r === 0 && heldTotal(pc) === 0) continue;
            mode = 'at-risk';
          }
          const r = await run(s, isDirect ? deleteDirectOrphans(s, fk, parent, mode) : holdOrphans(s, fk, parent, mode));
          if (r?.rowCount) {
            added += r.rowCount;
            if (isDirect) {
              c.i -= r.rowCount;
              c.held.i += r.rowCount;
            } else await recount(s);
          }
        }
        if (!isDirect && c.d + c.r > 0) {
          for (const fk of s.plan.fksIn) {
            const child = byId.get(fk.table) ?? null;
            for (const q of holdReferencedDeletes(s, fk, child)) {
              const r = await run(s, q);
              if (r?.rowCount) {
                added += r.rowCount;
                await recount(s);
              }
            }
          }
        }
        const cc = counts.get(s.plan.id)!;
        if (!isDirect && cc.i + cc.r > 0 && ((localCounts.get(s.plan.id) ?? 0) > 0 || heldTotal(cc) > 0)) {
          for (const u of s.plan.uniques) {
            const r = await run(s, holdUniqueCollisions(s, u));
            if (r?.rowCount) {
              added += r.rowCount;
              await recount(s);
            }
          }
        }
      }
      if (added === 0) break;
      if (pass > 1000) throw new Error('hold rules did not settle (a bug): report it with the tables involved');
    }

    if (!opts.dryRun) {
      for (const s of sorted) {
        if (opts.direct?.has(s.plan.id)) continue;
        const c = counts.get(s.plan.id)!;
        if (c.d + c.r > 0) await run(s, applyDeletes(s));
        if (c.u > 0) await run(s, applyUpdates(s));
        if (c.i + c.r > 0) await run(s, applyInserts(s));
      }
    }

    const out = new Map<string, TableOutcome>();
    for (const s of sorted) {
      const c = counts.get(s.plan.id)!;
      const held = heldTotal(c);
      const rows = held > 0 ? (await run(s, heldRows(s)))!.rows : [];
      out.set(s.plan.id, {
        inserted: c.i, updated: c.u + c.r, deleted: c.d, held,
        heldRows: rows.map((r) => ({ key: r.key, reason: r.held })), ms: spent.get(s.plan.id) ?? 0,
      });
    }
    return out;
  } catch (e) {
    if (e instanceof SyncError) throw e;
    const table = (current as TablePlan | null)?.display;
    throw new SyncError('E_APPLY',
      `staging (target) rejected the changes of table ${table ?? '(unknown)'}: ${describeDatabaseError(e)}; nothing was written`,
      'staging has a constraint, trigger (ENABLE ALWAYS) or type that production does not: compare the two schemas (elara-sync plan lists differences), fix staging, and run again',
      { cause: e, table, side: 'target' });
  }
}

async function countLocalKeys(tx: pg.ClientBase, stages: Stage[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const byTable = new Map<string, string[]>();
  for (const s of stages) byTable.set(s.localKeys, [...(byTable.get(s.localKeys) ?? []), s.plan.id]);
  for (const [table, ids] of byTable) {
    const r = await tx.query(`SELECT table_name, count(*)::int AS n FROM ${table} WHERE table_name = ANY($1) GROUP BY 1`, [ids]);
    for (const row of r.rows) out.set(row.table_name, row.n);
  }
  return out;
}

function hashText(text: string): string {
  // FNV-1a, 64 bits as two 32-bit halves: short, stable names for prepared statements.
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ c, 0x811c9dc5) >>> 0;
  }
  return h1.toString(16).padStart(8, '0') + h2.toString(16).padStart(8, '0');
}
