// GET /api/v2/sync/status (JSON) and the /sync dashboard page. Reconcile figures come from the run
// records the engine writes in staging, so runs of the Kubernetes CronJob show up too.
import { readFile } from 'node:fs/promises';
import { timingSafeEqual, createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type pg from 'pg';
import { quoteIdent, readRuns, readTableStates, scrubSecrets, withTransaction, type RunRecord, type StreamStatus } from '@elara/sync';
import type { AppDeps } from '../deps.ts';
import { errorBody } from '../errors.ts';
import { OUTBOX_BACKLOG_SQL, SYNC_TASKS } from '../sync/outbox.ts';

export interface StatusOptions {
  /** Tables shown (the reconcile's tables). */
  tables: string[];
  /** The reconcile interval, seconds: lag under two intervals is green. */
  intervalSeconds: number;
  /** OPS_TOKEN: a bearer token for operators and dashboards. */
  opsToken: string | null;
  /** Embedded default only: requests from loopback need no token. */
  openOnLoopback: boolean;
  /** The in-process watch (real-time sync) as it is now: SYNC_WATCH's outcome and each target's stream. */
  watch?: () => { mode: 'on' | 'off'; reason: string | null; streams: StreamStatus[] };
}

/** One target's real-time stream, as the page shows it. */
export interface StreamView {
  target: string;
  slot: string;
  phase: StreamStatus['phase'];
  lsn: string | null;
  lagSeconds: number;
  lagBytes: number;
  retainedWalBytes: number;
  transactions: number;
  rows: number;
  reconnects: number;
  snapshots: number;
  lastCommitAt: string | null;
  lastAppliedAt: string | null;
  startedAt: string;
  lastError: { code: string; message: string; hint: string | null; at: string } | null;
}

export function streamView(s: StreamStatus): StreamView {
  return {
    target: s.target, slot: s.slot, phase: s.phase, lsn: s.lsn, lagSeconds: s.lagSeconds, lagBytes: s.lagBytes, retainedWalBytes: s.retainedWalBytes,
    transactions: s.transactions, rows: s.rows, reconnects: s.reconnects, snapshots: s.snapshots,
    lastCommitAt: s.lastCommitAt?.toISOString() ?? null, lastAppliedAt: s.lastAppliedAt?.toISOString() ?? null, startedAt: s.startedAt.toISOString(),
    lastError: s.lastError ? { code: s.lastError.code, message: s.lastError.message, hint: s.lastError.hint ?? null, at: s.lastError.at.toISOString() } : null,
  };
}

export interface TableStatus {
  table: string;
  productionRows: number | null;
  stagingRows: number | null;
  lagRows: number | null;
  /** Seconds since staging was last known in step with production (see lagSeconds()). */
  lagSeconds: number | null;
  lastEqualAt: string | null;
  lastImmediateAt: string | null;
  state: 'green' | 'amber' | 'red';
}

export interface SyncStatus {
  generatedAt: string;
  intervalSeconds: number;
  staging: { configured: boolean; reachable: boolean; error: string | null };
  tables: TableStatus[];
  runs: RunRecord[];
  /** Real-time sync (watch): off with the reason, or on with one stream per target. */
  watch: { mode: 'on' | 'off'; reason: string | null; streams: StreamView[] };
  immediate: {
    enabled: boolean;
    successes: number;
    failures: number;
    backlog: number;
    oldestAgeSeconds: number;
    recentFailures: Array<{ at: string; message: string; attempts: number }>;
  };
}

/**
 * Seconds since staging was last known in step with production, for one table: the last run that
 * checked both sides equal; moved forward by an immediate sync (registration) when no outbox job
 * older than that sync is still waiting (everything the API wrote until then has arrived); and
 * never less than the age of the oldest waiting job. Changes made to production outside the API
 * (a psql UPDATE) are only seen by the next run, so they do not count until then. Null before any
 * run has checked the table.
 */
export function lagSeconds(now: number, t: { lastEqualAt: Date | null; lastImmediateAt: Date | null }, outbox: { backlog: number; oldestAgeSeconds: number }): number | null {
  if (!t.lastEqualAt) return null;
  let inStep = t.lastEqualAt.getTime();
  const imm = t.lastImmediateAt?.getTime();
  if (imm !== undefined && imm > inStep && (outbox.backlog === 0 || outbox.oldestAgeSeconds * 1000 < now - imm)) inStep = imm;
  const lag = Math.max(0, (now - inStep) / 1000);
  return outbox.backlog > 0 ? Math.max(lag, outbox.oldestAgeSeconds) : lag;
}

/** Outbox backlog on production (waiting sync jobs and the oldest one's age); zero when the outbox is not there. */
export async function readOutbox(prodPool: pg.Pool): Promise<{ backlog: number; oldestAgeSeconds: number }> {
  try {
    const b = (await prodPool.query(OUTBOX_BACKLOG_SQL, [SYNC_TASKS])).rows[0];
    return { backlog: Number(b.backlog), oldestAgeSeconds: Number(b.oldestAgeSeconds) };
  } catch {
    return { backlog: 0, oldestAgeSeconds: 0 };
  }
}

const quote = (t: string) => t.split('.').map(quoteIdent).join('.');

async function countRows(pool: pg.Pool, tables: string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  await withTransaction(pool, async (client) => {
    for (const t of tables) {
      // Exact counts for small tables; the planner's estimate above a million rows (a status
      // page refreshing every few seconds must not scan big tables each time).
      const est = await client.query(`SELECT reltuples::bigint AS n FROM pg_class WHERE oid = to_regclass($1)`, [quote(t)]);
      const n = Number(est.rows[0]?.n ?? -1);
      if (n > 1_000_000) out.set(t, n);
      else if (est.rows.length > 0) out.set(t, Number((await client.query(`SELECT count(*) AS n FROM ${quote(t)}`)).rows[0].n));
    }
  }, `BEGIN READ ONLY; SET LOCAL statement_timeout = 3000`);
  return out;
}

const lastKnown = new WeakMap<AppDeps, { runs: RunRecord[]; states: Awaited<ReturnType<typeof readTableStates>> }>();

/**
 * The colour of a table's tile, here only (the page shows it, the metrics and alerts use the same
 * figures). red: staging unreachable, the last reconcile failed, never equal, or behind an hour or
 * more; amber: behind two intervals, or rows differ for longer than one interval; else green.
 */
export function tileState(t: { stagingReachable: boolean; lastRunStatus: string | null; lagSeconds: number | null; lagRows: number | null; intervalSeconds: number }): TableStatus['state'] {
  if (!t.stagingReachable || t.lastRunStatus === 'error' || t.lagSeconds === null || t.lagSeconds >= 3600) return 'red';
  if (t.lagSeconds >= 2 * t.intervalSeconds || (t.lagRows !== null && t.lagRows !== 0 && t.lagSeconds >= t.intervalSeconds)) return 'amber';
  return 'green';
}

export async function collectStatus(deps: AppDeps, opts: StatusOptions): Promise<SyncStatus> {
  const now = Date.now();
  const staging: SyncStatus['staging'] = { configured: deps.stagingPool !== null, reachable: false, error: null };
  let runs: RunRecord[] = [];
  let states: Awaited<ReturnType<typeof readTableStates>> = [];
  let stagingCounts = new Map<string, number>();
  if (deps.stagingPool) {
    try {
      [runs, states, stagingCounts] = await Promise.all([readRuns(deps.stagingPool, 20), readTableStates(deps.stagingPool), countRows(deps.stagingPool, opts.tables)]);
      staging.reachable = true;
      lastKnown.set(deps, { runs, states });
    } catch (e) {
      staging.error = scrubSecrets(String((e as Error).message ?? e), [deps.config.stagingDatabaseUrl ?? undefined]);
      // Staging's own records are out of reach: show the last ones read, so lag keeps growing
      // on the page while staging is down.
      if (lastKnown.get(deps)) ({ runs, states } = lastKnown.get(deps)!);
    }
  }
  const prodCounts = await countRows(deps.prodPool, opts.tables).catch(() => new Map<string, number>());
  const outbox = await readOutbox(deps.prodPool);
  const lastRun = runs.find((r) => r.mode === 'run' && r.status !== 'running');
  const tables: TableStatus[] = opts.tables.map((table) => {
    const st = states.find((s) => s.table === table);
    const p = prodCounts.get(table) ?? null;
    const s = stagingCounts.get(table) ?? null;
    const lag = st ? lagSeconds(now, st, outbox) : null;
    const lagRows = p !== null && s !== null ? p - s : null;
    const state = tileState({ stagingReachable: staging.reachable, lastRunStatus: lastRun?.status ?? null, lagSeconds: lag, lagRows, intervalSeconds: opts.intervalSeconds });
    return {
      table, productionRows: p, stagingRows: s, lagRows, lagSeconds: lag, lastEqualAt: st?.lastEqualAt?.toISOString() ?? null,
      lastImmediateAt: st?.lastImmediateAt?.toISOString() ?? null, state,
    };
  });

  const counter = await deps.metrics.immediateSyncTotal.get();
  const value = (result: string) => counter.values.find((v) => v.labels.result === result)?.value ?? 0;
  const { backlog, oldestAgeSeconds } = outbox;
  let recentFailures: SyncStatus['immediate']['recentFailures'] = [];
  try {
    const f = await deps.prodPool.query(
      `SELECT updated_at, last_error, attempts FROM graphile_worker.jobs
        WHERE task_identifier = ANY($1::text[]) AND last_error IS NOT NULL ORDER BY updated_at DESC LIMIT 10`, [SYNC_TASKS]);
    recentFailures = f.rows.map((r) => ({ at: new Date(r.updated_at).toISOString(), message: String(r.last_error).split('\n')[0]!.slice(0, 300), attempts: r.attempts }));
  } catch {
    // graphile_worker schema not there (sync off): nothing to report.
  }
  const w = opts.watch?.() ?? { mode: 'off' as const, reason: 'not started in this process', streams: [] };
  return {
    generatedAt: new Date(now).toISOString(),
    intervalSeconds: opts.intervalSeconds,
    staging,
    tables,
    runs,
    watch: { mode: w.mode, reason: w.reason, streams: w.streams.map(streamView) },
    immediate: { enabled: deps.stagingPool !== null, successes: value('success'), failures: value('failure'), backlog, oldestAgeSeconds, recentFailures },
  };
}

function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;

async function authorised(req: FastifyRequest, deps: AppDeps, opts: StatusOptions): Promise<boolean> {
  if (opts.openOnLoopback && LOOPBACK.test(req.socket.remoteAddress ?? '')) return true;
  const h = req.headers.authorization;
  const token = h?.startsWith('Bearer ') ? h.slice(7).trim() : null;
  if (!token) return false;
  if (opts.opsToken && sameSecret(token, opts.opsToken)) return true;
  try {
    const claims = await deps.tokens.verifyAccess(token);
    if (claims.role !== 'admin') return false;
    // As on /me: the token of a user who is gone (erased) or deactivated stops working at once,
    // not when it expires. If production cannot answer, the signed claim is taken as it is: this
    // page matters most during an outage, and it shows no personal data.
    const u = await deps.prodPool.query(`SELECT 1 FROM "User" WHERE id = $1 AND "isActive"`, [claims.sub]).catch(() => null);
    return u === null || (u.rowCount ?? 0) > 0;
  } catch {
    return false;
  }
}

const DASHBOARD_DIR = fileURLToPath(new URL('./dashboard/', import.meta.url));
const ASSETS: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'dashboard.js': 'text/javascript; charset=utf-8',
  'dashboard.css': 'text/css; charset=utf-8',
};

export function statusRoutes(opts: StatusOptions): FastifyPluginAsync<{ deps: AppDeps }> {
  return async (app, { deps }) => {
    app.get('/api/v2/sync/status', async (req, reply) => {
      if (!(await authorised(req, deps, opts))) {
        return reply.code(401).send(errorBody('E_UNAUTHORIZED', 'an operations token (OPS_TOKEN) or an access token of an admin user is required'));
      }
      reply.header('cache-control', 'no-store');
      return collectStatus(deps, opts);
    });
    const send = async (name: string, reply: import('fastify').FastifyReply) => {
      reply.header('content-type', ASSETS[name]!);
      reply.header('content-security-policy', "default-src 'self'; img-src 'self' data:; style-src 'self'");
      return readFile(`${DASHBOARD_DIR}${name}`);
    };
    app.get('/sync', async (_req, reply) => send('index.html', reply));
    app.get('/sync/', async (_req, reply) => send('index.html', reply));
    app.get('/sync/dashboard.js', async (_req, reply) => send('dashboard.js', reply));
    app.get('/sync/dashboard.css', async (_req, reply) => send('dashboard.css', reply));
  };
}
