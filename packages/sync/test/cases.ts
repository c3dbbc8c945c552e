// The table-driven runner for convergence cases: production rows, staging before, changes on
// either side, then a run, and the promises checked after every case:
// - staging equals production on every synced table, except the rows QA created (`local`);
// - QA rows are exactly as before the run (never deleted or modified, directly or indirectly);
// - no FK in staging points at a missing row (synced tables and staging's own tables alike);
// - held rows are the ones expected, and the next run writes nothing;
// - verify agrees when nothing is held.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { sql } from '@elara/testkit';
import { runSync, verifySync, type RunResult, type TableConfig } from '../src/index.ts';
import { displayName, parseTableName, qualifiedName } from '../src/catalog/introspect.ts';
import { createPair, type Pair } from './helpers.ts';

export interface Step {
  source?: string;
  target?: string;
  /** Run a reconcile after this step (the last run always happens). */
  run?: boolean;
}

export interface Case {
  name: string;
  /** DDL for both sides. */
  schema: string;
  sourceSchema?: string;
  targetSchema?: string;
  tables: Array<string | TableConfig>;
  /** Production rows before the first run. */
  source?: string;
  /** Staging rows before the first run. */
  targetBefore?: string;
  /** Changes after the first run; then the last run. */
  steps?: Step[];
  /** Per table: a WHERE clause selecting the QA rows, which must survive byte for byte. */
  local?: Record<string, string>;
  /** Per table (quoted SQL name): held rows in the last run, as a count or as keys. */
  held?: Record<string, number | string[]>;
  /** Tables compared with production (default: every entry of `tables`). */
  equal?: string[];
  check?: (ctx: { pair: Pair; last: RunResult; first: RunResult }) => Promise<void>;
}

/** A table as SQL ("schema"."name"), from a config name (User, s.T) or a quoted SQL name ("User"). */
const sqlName = (t: string) => {
  const p = parseTableName(t);
  return qualifiedName(p.schema, p.name);
};
const nameOf = (t: string | TableConfig) => sqlName(typeof t === 'string' ? t : t.name);
const display = (t: string) => displayName(sqlName(t));
const byTable = <T>(m: Record<string, T> | undefined) => new Map(Object.entries(m ?? {}).map(([k, v]) => [sqlName(k), v]));

/** Rows as JSON text (text identity: -0, 1.00, '24:00:00' stay what they are), ordered by their text. */
export async function tableRows(url: string, table: string, where = 'true'): Promise<string[]> {
  const r = await sql(url, `SELECT row_to_json(x)::text AS j FROM (SELECT * FROM ${table} WHERE ${where}) x ORDER BY 1`);
  return r.rows.map((x) => x.j);
}

/** Every FK of every table in the database that points at a missing row: `constraint: count`. */
export async function fkOrphans(url: string): Promise<string[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const fks = await c.query(`SELECT con.conname, con.conrelid::regclass::text AS child, con.confrelid::regclass::text AS parent,
        (SELECT array_agg(quote_ident(a.attname) ORDER BY k.ord) FROM unnest(con.conkey) WITH ORDINALITY k(n, ord) JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n) AS cols,
        (SELECT array_agg(quote_ident(a.attname) ORDER BY k.ord) FROM unnest(con.confkey) WITH ORDINALITY k(n, ord) JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n) AS refs
      FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace WHERE con.contype = 'f' AND n.nspname NOT IN ('elara_sync', 'graphile_worker')`);
    const out: string[] = [];
    for (const f of fks.rows) {
      const notNull = f.cols.map((x: string) => `c.${x} IS NOT NULL`).join(' AND ');
      const match = f.cols.map((x: string, i: number) => `p.${f.refs[i]} = c.${x}`).join(' AND ');
      const r = await c.query(`SELECT count(*)::int AS n FROM ${f.child} c WHERE ${notNull} AND NOT EXISTS (SELECT 1 FROM ${f.parent} p WHERE ${match})`);
      if (r.rows[0].n > 0) out.push(`${f.conname}: ${r.rows[0].n}`);
    }
    return out;
  } finally {
    await c.end();
  }
}

function heldOf(r: RunResult, table: string): { n: number; keys: string[] } {
  const t = r.tables.find((x) => x.table === display(table));
  return { n: t?.conflicts ?? 0, keys: [...(t?.conflictKeys ?? [])].sort() };
}

export async function runCase(c: Case): Promise<void> {
  const pair = await createPair('conv', c.schema);
  let ok = false;
  try {
    if (c.sourceSchema) await sql(pair.source.url, c.sourceSchema);
    if (c.targetSchema) await sql(pair.target.url, c.targetSchema);
    const opts = { sourceUrl: pair.source.url, targetUrl: pair.target.url, tables: c.tables.map((t) => (typeof t === 'string' ? { name: t } : t)) };
    if (c.source) await sql(pair.source.url, c.source);
    if (c.targetBefore) await sql(pair.target.url, c.targetBefore);
    const first = await runSync(opts);
    assert.equal(first.error, undefined, `first run: ${first.error?.message}`);
    for (const [i, s] of (c.steps ?? []).entries()) {
      if (s.target) await sql(pair.target.url, s.target);
      if (s.source) await sql(pair.source.url, s.source);
      if (s.run) {
        const r = await runSync(opts);
        assert.equal(r.error, undefined, `run after step ${i}: ${r.error?.message}`);
      }
    }
    const tables = (c.equal ?? c.tables.map(nameOf)).map(sqlName);
    const local = byTable(c.local);
    const localBefore = new Map<string, string[]>();
    for (const [t, where] of local) localBefore.set(t, await tableRows(pair.target.url, t, where));
    const last = await runSync(opts);
    assert.equal(last.error, undefined, `last run: ${last.error?.message}`);

    for (const t of tables) {
      const where = local.get(t) ? `NOT (${local.get(t)})` : 'true';
      assert.deepEqual(await tableRows(pair.target.url, t, where), await tableRows(pair.source.url, t), `${t}: staging equals production (QA rows aside)`);
    }
    for (const [t, rows] of localBefore) {
      assert.ok(rows.length > 0, `${t}: the case has QA rows to keep`);
      assert.deepEqual(await tableRows(pair.target.url, t, local.get(t)!), rows, `${t}: QA rows untouched`);
    }
    assert.deepEqual(await fkOrphans(pair.target.url), [], 'no FK orphans in staging');
    const expectHeld = byTable(c.held);
    for (const t of c.tables.map(nameOf)) {
      const want = expectHeld.get(t);
      const got = heldOf(last, t);
      if (want === undefined) assert.equal(got.n, 0, `${t}: nothing held (${JSON.stringify(last.tables.find((x) => x.table === display(t))?.held)})`);
      else if (typeof want === 'number') assert.equal(got.n, want, `${t}: ${want} held (${JSON.stringify(last.tables.find((x) => x.table === display(t))?.held)})`);
      else assert.deepEqual(got.keys, [...want].sort(), `${t}: held keys`);
    }
    assert.equal(last.ok, expectHeld.size === 0, 'ok unless rows are held');
    const again = await runSync(opts);
    assert.equal(again.error, undefined, again.error?.message);
    for (const t of again.tables) assert.deepEqual([t.table, t.inserted, t.updated, t.deleted], [t.table, 0, 0, 0], 'the next run writes nothing');
    for (const t of c.tables.map(nameOf)) assert.deepEqual(heldOf(again, t), heldOf(last, t), `${t}: the next run reports the same held rows (they are compared on every run)`);
    if (last.ok) {
      const v = await verifySync(opts);
      assert.equal(v.equal, true, `verify: ${JSON.stringify(v.tables)}`);
    }
    await c.check?.({ pair, last, first });
    ok = true;
  } finally {
    if (ok || process.env.KEEP_TEST_DB !== '1') await pair.drop();
    else console.error(`kept ${pair.source.name} ${pair.target.name}`);
  }
}

/** One node:test per case. */
export function cases(list: Case[]): void {
  for (const c of list) test(c.name, () => runCase(c));
}
