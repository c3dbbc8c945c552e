// `elara-sync watch`: production's changes of the synced tables, streamed over logical replication
// (pgoutput) and applied to the target through the same table plans and the same apply as every
// other mode. The stream only says WHICH rows changed: the keys are read back through the plan's
// source query (rules and row filter run in production, so an anonymized target never sees a raw
// value, and an unchanged TOASTed value is never a placeholder), then applied with applyKeys in the
// target transaction that also records the commit LSN. The slot is acknowledged only after that
// commit, so a crash anywhere repeats work (skipped by LSN, or idempotent) and never loses it.
import type pg from 'pg';
import { createHash } from 'node:crypto';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import type { TableConfig, TablePlan } from '../plan/table-plan.ts';
import { SyncError } from '../errors.ts';
import { qualifiedName } from '../catalog/introspect.ts';
import { createClient } from '../tls/client.ts';
import { connect, guardTarget, identify } from '../engine/connect.ts';
import { assertMaskSession, compilePlans, validateOnSource } from '../engine/plans.ts';
import { planTargetFor, type ResolvedTarget } from '../engine/targets.ts';
import { applyKeys, SOURCE_SNAPSHOT } from '../engine/immediate.ts';
import { beginApply } from '../apply/apply.ts';
import { runSync, type RunResult } from '../engine/run.ts';
import { toSyncError } from '../engine/errors.ts';
import { ensureStateSchema } from '../state/schema.ts';
import { ensureTracking } from '../state/tracking.ts';
import { advanceStreamState, deleteStreamState, readStreamRetry, readStreamState, resetStreamState, writeStreamRetry } from '../state/stream.ts';
import { assertLogical, createSlotWithSnapshot, dropPublication, dropSlot, ensurePublication, lsnText, lsnValue, readSlot, slotError } from './slot.ts';
import { publicationName, slotName } from './names.ts';
import type { StreamStatus } from './types.ts';

export interface WatchOptions {
  sourceUrl: string;
  targetUrl: string;
  tables: TableConfig[];
  /** The target's rules and subset (resolveTarget); its name names the slot. */
  target?: ResolvedTarget;
  /** Names the slot and publication when no target is given (default 'staging'). */
  targetName?: string;
  allowProductionTarget?: boolean;
  onEvent?: (e: WatchEvent) => void;
  /**
   * A problem a reconnect cannot fix (wal_level, a column production added, a config error):
   * 'stop' ends watch with it (the CLI exits 2); 'retry' keeps trying at the longest backoff
   * (in-process, where the API must keep running).
   */
  onFatal?: 'stop' | 'retry';
  /** How often an idle stream records production's position, so the slot does not pin WAL (ms, default 10 s). */
  heartbeatMs?: number;
  /** Keys applied per chunk inside one target transaction (bounded memory for a large source transaction). */
  chunkKeys?: number;
  /** Reconnect backoff (ms): doubles from `initial` up to `max`. */
  backoffMs?: { initial: number; max: number };
  /** How long stop() waits for a source transaction in hand to arrive whole (ms, default 10 s). */
  stopGraceMs?: number;
}

export type WatchEvent =
  | { kind: 'setup'; slot: string; publication: string; created: string[] }
  | { kind: 'snapshot-start'; reason: string }
  | { kind: 'snapshot-done'; lsn: string; result: RunResult }
  | { kind: 'streaming'; from: string }
  | { kind: 'applied'; lsn: string; transactions: number; rows: number; ms: number; lagMs: number }
  | { kind: 'held'; table: string; held: number; keys: string[] }
  | { kind: 'resync'; reason: string }
  | { kind: 'reconnecting'; attempt: number; delayMs: number; error: SyncError }
  | { kind: 'stopped' };

export interface WatchHandle {
  status(): StreamStatus;
  /** Finishes the transaction in hand, records the position, ends the stream. */
  stop(): Promise<void>;
  /** Settles when watch ends: resolves after stop(), rejects with a fatal SyncError when onFatal is 'stop'. */
  done: Promise<void>;
}

// Problems a reconnect does not fix: the configuration, the schema, the server's settings, roles.
const FATAL = new Set(['E_CONFIG', 'E_SCHEMA_MISMATCH', 'E_NO_PRIMARY_KEY', 'E_WAL_LEVEL', 'E_SAME_DATABASE', 'E_PRODUCTION_TARGET', 'E_PERMISSION']);

/** pgoutput whose tuples keep PostgreSQL's text form (keys go back to the source as text, exactly). */
class TextPgoutput extends PgoutputPlugin {
  override parse(buffer: Buffer): ReturnType<PgoutputPlugin['parse']> {
    const msg = super.parse(buffer);
    if (msg.tag === 'relation') for (const c of msg.columns) c.parser = (raw: unknown) => raw;
    return msg;
  }
}

/** Messages received and not yet handled above which production's stream is paused (TCP backpressure). */
const QUEUE_HIGH = 2_000;

interface Relation { schema: string; name: string; columns: Array<{ name: string }> }
type Key = Record<string, string>;

/** Starts watching; returns at once. Progress and problems arrive as events and in status(). */
export function startWatch(opts: WatchOptions): WatchHandle {
  const name = opts.target?.name ?? opts.targetName ?? 'staging';
  const status: StreamStatus = {
    target: name, slot: slotName(name), publication: publicationName(name), phase: 'starting', lsn: null, lastCommitAt: null, lastAppliedAt: null,
    lagSeconds: 0, lagBytes: 0, retainedWalBytes: 0, transactions: 0, rows: 0, reconnects: 0, snapshots: 0, lastError: null, startedAt: new Date(),
  };
  let stopping = false;
  let wake: (() => void) | null = null;
  let current: Session | null = null;
  const backoff = opts.backoffMs ?? { initial: 500, max: 30_000 };

  const done = (async () => {
    let attempt = 0;
    while (!stopping) {
      const s = new Session(opts, name, status);
      current = s;
      try {
        await s.run(() => stopping);
        attempt = 0;
      } catch (e) {
        const err = toSyncError(e, undefined);
        status.lastError = { code: err.code, message: err.message, hint: err.hint, at: new Date() };
        const fatal = FATAL.has(err.code);
        if (fatal && (opts.onFatal ?? 'stop') === 'stop') {
          status.phase = 'failed';
          throw err;
        }
        if (stopping) break;
        attempt++;
        status.reconnects++;
        status.phase = fatal ? 'failed' : 'reconnecting';
        const base = fatal ? backoff.max : Math.min(backoff.max, backoff.initial * 2 ** (attempt - 1));
        const delayMs = Math.round(base * (0.8 + Math.random() * 0.4));
        opts.onEvent?.({ kind: 'reconnecting', attempt, delayMs, error: err });
        await new Promise<void>((res) => {
          const t = setTimeout(res, delayMs);
          wake = () => {
            clearTimeout(t);
            res();
          };
        });
        wake = null;
      } finally {
        await s.close();
        current = null;
      }
    }
    status.phase = 'stopped';
    opts.onEvent?.({ kind: 'stopped' });
  })();
  done.catch(() => {});
  return {
    status: () => ({ ...status }),
    done,
    async stop() {
      stopping = true;
      wake?.();
      await (current as Session | null)?.stop();
      await done.catch(() => {});
    },
  };
}

const planSigOf = (plans: TablePlan[], t: ResolvedTarget | undefined) => createHash('sha256')
  .update(JSON.stringify([t?.name ?? null, t?.anonymize ?? false, t?.subset ?? null, t?.mask?.sig ?? null, plans.map((p) => [p.id, p.sig]).sort()]))
  .digest('hex').slice(0, 24);

interface Batch {
  open: boolean;
  transactions: number;
  rows: number;
  lastEnd: bigint;
  firstCommitUs: bigint | null;
  lastCommitUs: bigint | null;
  pending: Map<string, Map<string, Key>>;
  pendingCount: number;
  startedAt: number;
  /** The retry keys were read again in this batch. */
  retried: boolean;
  /** Keys whose change this batch held back. */
  held: Map<string, Map<string, Key>>;
}

const mergeKeys = (a: Map<string, Map<string, Key>>, b: Map<string, Map<string, Key>>) => {
  const out = new Map([...a].map(([t, m]) => [t, new Map(m)]));
  for (const [t, m] of b) {
    const x = out.get(t) ?? new Map<string, Key>();
    for (const [id, k] of m) x.set(id, k);
    out.set(t, x);
  }
  return out;
};
const keyIds = (m: Map<string, Map<string, Key>>) => [...m].flatMap(([t, keys]) => [...keys.keys()].map((id) => `${t}|${id}`)).sort().join('\n');

/** One connection's life: setup, maybe a snapshot, then the stream until it ends or fails. */
class Session {
  private source: pg.Client | null = null;
  private target: pg.Client | null = null;
  private admin: pg.Client | null = null;
  private service: LogicalReplicationService | null = null;
  private plans: TablePlan[] = [];
  private byRelation = new Map<string, TablePlan>();
  private applied = 0n;
  private keepalive = 0n;
  private tx: { skip: boolean; rows: number; truncated: Set<string>; commitUs: bigint | null } | null = null;
  private batch: Batch = Session.emptyBatch();
  private failure: unknown = null;
  private failed: ((e: unknown) => void) | null = null;
  private ended: (() => void) | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  private received = 0;
  private queue: Array<Record<string, unknown> | undefined> = [];
  private head = 0;
  private queued() { return this.queue.length - this.head; }
  private retry = new Map<string, Map<string, Key>>();
  private lastRetryAt = 0;
  private handled = 0;
  private timers: NodeJS.Timeout[] = [];
  private stopRequested = false;
  private planSig = '';
  private sourceSystem = '';

  constructor(private opts: WatchOptions, private name: string, private status: StreamStatus) {}

  private static emptyBatch(): Batch {
    return { open: false, transactions: 0, rows: 0, lastEnd: 0n, firstCommitUs: null, lastCommitUs: null, pending: new Map(), pendingCount: 0, startedAt: 0, retried: false, held: new Map() };
  }

  private get slot() { return this.status.slot; }
  private get publication() { return this.status.publication; }
  private event(e: WatchEvent) { this.opts.onEvent?.(e); }

  async run(isStopping: () => boolean): Promise<void> {
    const o = this.opts;
    this.status.phase = 'starting';
    this.source = await connect(o.sourceUrl, 'source', 'elara-sync-watch', { mask: o.target?.mask ?? null });
    this.target = await connect(o.targetUrl, 'target', 'elara-sync-watch');
    this.admin = await connect(o.sourceUrl, 'source', 'elara-sync-watch-admin');
    const [sid, tid] = await Promise.all([identify(this.source), identify(this.target)]);
    guardTarget(sid, tid, o);
    this.sourceSystem = sid.systemIdentifier;
    await assertLogical(this.admin);
    // The publication and the slot are production's catalog, not its data: the admin session may write them.
    await this.admin.query('SET default_transaction_read_only = off');
    await ensureStateSchema(this.target);
    await this.compile();

    const created: string[] = [];
    const pub = await ensurePublication(this.admin, this.publication, this.plans).catch((e) => { throw slotError(e, this.slot); });
    if (pub !== 'kept') created.push(`publication ${this.publication} ${pub}`);
    const slot = await readSlot(this.admin, this.slot);
    const state = await readStreamState(this.target, this.slot);
    if (slot?.active) {
      throw new SyncError('E_STREAM', `the replication slot ${this.slot} on production is in use by process ${slot.activePid} (another watch of target ${this.name}?)`,
        'run one watch per target; this one retries until the other stops', { side: 'source' });
    }
    if (slot && (slot.plugin !== 'pgoutput' || slot.database !== sid.database)) {
      // Slot names are per server: this one belongs to something else; never drop it.
      throw new SyncError('E_CONFIG', `the replication slot ${this.slot} on production belongs to ${slot.database === sid.database ? `a ${slot.plugin} consumer` : `database ${slot.database}`}, not to watch of ${sid.database}`,
        'give this target another name in elara-sync.yml (the slot is named after it), or drop that slot if it is unused', { side: 'source' });
    }
    const current = lsnValue((await this.admin.query(`SELECT pg_current_wal_lsn()::text AS l`)).rows[0].l);
    const reason = !slot ? (state ? `the slot ${this.slot} is gone from production` : 'the target has no stream position yet')
      : !state ? 'the target has no stream position for this slot'
          : state.sourceSystem !== sid.systemIdentifier ? 'production is another server than the one the position was recorded on'
            : slot.walStatus === 'lost' ? `the slot ${this.slot} was invalidated (it retained more WAL than max_slot_wal_keep_size allows)`
              : lsnValue(slot.confirmedFlush) > lsnValue(state.lsn) ? `the slot ${this.slot} is ahead of the target's position (${slot.confirmedFlush} > ${state.lsn}): it was re-created or used by someone else`
                : lsnValue(state.lsn) > current ? `the target's position ${state.lsn} is ahead of production's WAL (${lsnText(current)}): production was restored or failed over`
                  : state.planSig !== this.planSig ? 'the synced tables or their rules changed since the stream started'
                    : null;
    let from: string;
    if (reason) {
      if (slot) await dropSlot(this.admin, this.slot);
      const made = await createSlotWithSnapshot(o.sourceUrl, this.slot);
      created.push(`slot ${this.slot} created`);
      this.event({ kind: 'setup', slot: this.slot, publication: this.publication, created });
      from = await this.snapshot(made, reason, isStopping);
    } else {
      this.event({ kind: 'setup', slot: this.slot, publication: this.publication, created });
      from = state!.lsn;
      this.status.lastCommitAt = state!.lastCommitAt;
    }
    if (isStopping()) return;
    this.applied = lsnValue(from);
    this.status.lsn = from;
    for (const { table, key } of await readStreamRetry(this.target, this.slot)) {
      const plan = this.plans.find((p) => p.id === table);
      if (plan) this.addKey(plan, key, this.retry);
    }
    await this.stream(from);
  }

  private async compile(): Promise<void> {
    const o = this.opts;
    const plans = await compilePlans(this.source!, this.target!, o.tables, o.target ? await planTargetFor(o.target) : null)
      .catch((e) => { throw toSyncError(e, undefined); });
    await validateOnSource(this.source!, plans);
    await assertMaskSession(this.source!, plans);
    for (const p of plans) await ensureTracking(this.target!, p);
    this.plans = plans;
    this.byRelation = new Map(plans.map((p) => [qualifiedName(p.source.schema, p.source.name), p]));
    this.planSig = planSigOf(plans, o.target);
  }

  /** A reconcile under the slot's exported snapshot, then the position = the slot's consistent point. */
  private async snapshot(made: Awaited<ReturnType<typeof createSlotWithSnapshot>>, reason: string, isStopping: () => boolean): Promise<string> {
    const o = this.opts;
    this.status.phase = 'snapshot';
    this.event({ kind: 'snapshot-start', reason });
    try {
      let result: RunResult;
      for (;;) {
        result = await runSync({ sourceUrl: o.sourceUrl, targetUrl: o.targetUrl, tables: o.tables, target: o.target, snapshot: made.snapshot, allowProductionTarget: o.allowProductionTarget });
        if (result.error) throw result.error;
        // Another run holds the run lock (a CronJob): wait for it; the snapshot stays valid meanwhile.
        if (!result.skipped || isStopping()) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
      await resetStreamState(this.target!, this.slot, { lsn: made.consistentPoint, sourceSystem: this.sourceSystem, planSig: this.planSig });
      this.status.snapshots++;
      this.event({ kind: 'snapshot-done', lsn: made.consistentPoint, result: result! });
      return made.consistentPoint;
    } finally {
      await made.session.end().catch(() => {});
    }
  }

  private async stream(from: string): Promise<void> {
    const o = this.opts;
    // Messages go into this session's own queue (the library's flow control pauses the socket per
    // message, so a batch could never see what is already waiting behind it). The socket is paused
    // above QUEUE_HIGH queued messages and resumed when the queue is drained: bounded memory.
    const service = new LogicalReplicationService({}, { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: false } });
    // The service opens its own client; this one has the project's TLS handling (sslmode, PGSSL*).
    (service as unknown as { client: () => Promise<unknown> }).client = async function (this: { stop(): Promise<void>; _client: pg.Client | null; _connection: unknown; emit(e: string, x: unknown): void }) {
      await this.stop();
      const c = createClient(o.sourceUrl, { application_name: 'elara-sync-watch-stream', replication: 'database', keepAlive: true } as pg.ClientConfig, { setting: '--from / DATABASE_URL' });
      this._client = c;
      await c.connect();
      this._connection = (c as unknown as { connection: unknown }).connection;
      c.on('error', (e) => this.emit('error', e));
      return [c, this._connection];
    };
    this.service = service;
    const failed = new Promise<never>((_, reject) => { this.failed = reject; });
    const ended = new Promise<void>((res) => { this.ended = res; });
    failed.catch(() => {});
    const socket = () => (service as unknown as { _connection?: { stream?: { pause(): void; resume(): void } } })._connection?.stream;
    let paused = false;
    let draining = false;
    const drain = async () => {
      draining = true;
      try {
        while (this.queued() > 0 && !this.failure) {
          const msg = this.queue[this.head]!;
          this.queue[this.head++] = undefined;
          if (this.head > 4096 && this.head * 2 > this.queue.length) {
            this.queue = this.queue.slice(this.head);
            this.head = 0;
          }
          await this.serial(async () => {
            try {
              if (!this.failure) await this.onMessage(msg);
            } catch (e) {
              this.fail(e);
            } finally {
              this.handled++;
            }
          });
        }
      } finally {
        draining = false;
        if (paused) {
          paused = false;
          socket()?.resume();
        }
      }
    };
    service.on('data', (_lsn: string, msg: Record<string, unknown>) => {
      this.received++;
      this.queue.push(msg);
      if (!paused && this.queued() > QUEUE_HIGH) {
        paused = true;
        socket()?.pause();
      }
      if (!draining) void drain();
    });
    service.on('heartbeat', (lsn: string, _t: number, shouldRespond: boolean) => {
      const v = lsnValue(lsn);
      if (v > this.keepalive) this.keepalive = v;
      if (shouldRespond) void this.confirm(this.applied);
    });
    service.on('error', (e: Error) => this.fail(e));
    const heartbeatMs = o.heartbeatMs ?? 10_000;
    this.timers.push(setInterval(() => { void this.serial(() => this.idleAdvance()).catch((e) => this.fail(e)); }, heartbeatMs));
    this.timers.push(setInterval(() => { void this.monitor(); }, Math.min(5000, heartbeatMs)));
    const subscribed = service.subscribe(new TextPgoutput({ protoVersion: 1, publicationNames: [this.publication] }), this.slot, from)
      .then(() => { if (!this.stopRequested) throw new SyncError('E_STREAM', `production ended the change stream of slot ${this.slot}`, 'watch reconnects by itself', { side: 'source' }); },
        (e) => { if (!this.stopRequested) throw slotError(e, this.slot); });
    subscribed.catch(() => {});
    this.status.phase = 'streaming';
    this.event({ kind: 'streaming', from });
    void this.monitor();
    await Promise.race([failed, ended, subscribed]);
  }

  /** Runs target work one piece at a time: messages, the idle heartbeat, stop. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn);
    this.chain = next.catch(() => {});
    return next;
  }

  /**
   * Tells production everything up to `lsn` (the end LSN recorded on the target) is applied.
   * pg-logical-replication's acknowledge(x) reports x + 1 as written/flushed/applied, so it is
   * given lsn - 1: the slot's confirmed_flush_lsn then equals the target's position exactly. With
   * x = lsn the slot ran one byte ahead of the target, every restart took it for a slot "ahead of
   * the target's position" and re-snapshotted, and (were that check relaxed) the server would
   * start decoding at lsn + 1 and skip a transaction whose commit record starts right at lsn.
   */
  private confirm(lsn: bigint, ping = false): Promise<unknown> {
    return this.service!.acknowledge(lsnText(lsn > 0n ? lsn - 1n : 0n), ping).catch(() => {});
  }

  private fail(e: unknown): void {
    if (this.failure || this.stopRequested) return;
    this.failure = e;
    this.failed?.(e);
  }

  private planFor(rel: Relation): TablePlan | undefined {
    return this.byRelation.get(qualifiedName(rel.schema, rel.name));
  }

  private async onMessage(msg: Record<string, unknown>): Promise<void> {
    switch (msg.tag) {
      case 'begin': {
        // A transaction that committed at or before the recorded position was applied already.
        this.tx = { skip: lsnValue(msg.commitLsn as string) < this.applied, rows: 0, truncated: new Set(), commitUs: msg.commitTime as bigint };
        return;
      }
      case 'relation': return this.onRelation(msg as unknown as Relation);
      case 'insert': case 'update': case 'delete': {
        if (!this.tx || this.tx.skip) return;
        const plan = this.planFor(msg.relation as Relation);
        if (!plan) return;
        this.tx.rows++;
        const tuples = [msg.new, msg.key, msg.old].filter(Boolean) as Array<Record<string, unknown>>;
        for (const t of tuples) this.addKey(plan, t);
        if (this.batch.pendingCount >= (this.opts.chunkKeys ?? 5000)) await this.flushChunk();
        return;
      }
      case 'truncate': {
        if (!this.tx || this.tx.skip) return;
        for (const r of (msg.relations as Relation[]) ?? []) {
          const plan = r && this.planFor(r);
          if (plan) this.tx.truncated.add(plan.id);
        }
        return;
      }
      case 'commit': {
        const tx = this.tx;
        this.tx = null;
        if (!tx || tx.skip) return;
        const b = this.batch;
        if (!b.transactions) b.startedAt = Date.now();
        b.transactions++;
        b.rows += tx.rows;
        b.lastEnd = lsnValue(msg.commitEndLsn as string);
        b.firstCommitUs ??= tx.commitUs;
        b.lastCommitUs = msg.commitTime as bigint;
        if (tx.truncated.size) {
          await this.commitBatch();
          await this.resync(`production truncated ${[...tx.truncated].map((id) => this.plans.find((p) => p.id === id)!.display).join(', ')}`, b.lastEnd);
          return;
        }
        // Transactions that already wait behind this one join its target transaction (fewer commits under load).
        if (this.queued() === 0 || this.stopRequested || b.pendingCount >= (this.opts.chunkKeys ?? 5000) || Date.now() - b.startedAt > 200 || b.transactions >= 1000) {
          await this.commitBatch();
        }
        return;
      }
      default:
        return;
    }
  }

  private addKey(plan: TablePlan, tuple: Record<string, unknown>, into = this.batch.pending): void {
    const key: Key = {};
    for (const c of plan.key) {
      const v = tuple[c.name];
      if (v === undefined || v === null) return;
      key[c.name] = String(v);
    }
    const id = JSON.stringify(plan.key.map((c) => key[c.name]));
    let m = into.get(plan.id);
    if (!m) into.set(plan.id, (m = new Map()));
    if (into !== this.batch.pending) {
      m.set(id, key);
      return;
    }
    if (!m.has(id)) {
      m.set(id, key);
      this.batch.pendingCount++;
    }
  }

  /**
   * A relation message comes before the first change of a table in a session and after its
   * schema changes. A column production added (or dropped) means the plans must be compiled again;
   * if they no longer compile (staging lacks the column; an anonymized target has no rule for it)
   * the stream stops here, before any row of the new shape is applied, with the plan's error.
   */
  private async onRelation(rel: Relation): Promise<void> {
    const plan = this.planFor(rel);
    if (!plan) return;
    const have = plan.source.columns.filter((c) => !(c as { generated?: unknown }).generated).map((c) => c.name).sort().join('\u0000');
    const got = rel.columns.map((c) => c.name).sort().join('\u0000');
    if (have === got) return;
    await this.flushChunk();
    const added = rel.columns.map((c) => c.name).filter((n) => !plan.source.columns.some((c) => c.name === n));
    try {
      await this.compile();
    } catch (e) {
      const err = toSyncError(e, undefined);
      throw new SyncError(err.code, `production changed table ${plan.display}${added.length ? ` (column ${added.map((a) => `${plan.display}.${a}`).join(', ')} added)` : ''}; the stream stopped before applying it: ${err.message}`,
        err.hint, { cause: e, table: plan.display, side: err.side });
    }
  }

  private async openBatch(): Promise<void> {
    if (this.batch.open) return;
    this.batch.open = true;
    // Shared with immediate syncs; a reconcile's apply (exclusive) makes this wait, then go on.
    await beginApply(this.target!, { lock: 'shared', lockWaitMs: 10 * 60_000, statementTimeoutMs: 5 * 60_000, begin: true });
  }

  /** The pending keys, read back through the plans and applied, inside the open target transaction. */
  private async flushChunk(final = false): Promise<void> {
    const b = this.batch;
    if (b.pendingCount === 0) return;
    await this.openBatch();
    const requests = [...b.pending].map(([id, keys]) => ({ plan: this.plans.find((p) => p.id === id)!, keys: [...keys.values()] }));
    b.pending = new Map();
    b.pendingCount = 0;
    await this.source!.query(SOURCE_SNAPSHOT);
    try {
      const out = await applyKeys(this.source!, this.target!, this.plans, requests, { clearAfter: !final, collectHeld: true });
      for (const p of this.plans) {
        const x = out.get(p.id);
        for (const k of x?.heldKeys ?? []) this.addKey(p, k, b.held);
        if (x && x.held > 0) this.event({ kind: 'held', table: p.display, held: x.held, keys: x.heldRows.slice(0, 5).map((h) => `${h.key}: ${h.reason}`) });
      }
    } finally {
      await this.source!.query('COMMIT').catch(() => {});
    }
  }

  /**
   * Applies what is pending, plus every key held back before (retried with each batch, and alone
   * when idle), records the keys still held and the position, commits, then confirms to the slot.
   */
  private async commitBatch(): Promise<void> {
    const b = this.batch;
    if (b.transactions === 0 && b.pendingCount === 0 && this.retry.size === 0) return;
    if (!b.transactions) b.startedAt = Date.now();
    let nextRetry = this.retry;
    try {
      if (this.retry.size) {
        for (const [id, keys] of this.retry) {
          const plan = this.plans.find((p) => p.id === id);
          if (plan) for (const k of keys.values()) this.addKey(plan, k);
        }
        b.retried = true;
        this.lastRetryAt = Date.now();
      }
      // The last chunk: its stage tables empty themselves at commit (ON COMMIT DELETE ROWS).
      await this.flushChunk(true);
      await this.openBatch();
      if (b.retried || b.held.size) {
        nextRetry = b.retried ? b.held : mergeKeys(this.retry, b.held);
        if (keyIds(nextRetry) !== keyIds(this.retry)) {
          await writeStreamRetry(this.target!, this.slot, [...nextRetry].flatMap(([table, keys]) => [...keys.values()].map((key) => ({ table, key }))));
        }
      }
      const lastCommitAt = b.lastCommitUs === null ? null : new Date(Number(b.lastCommitUs / 1000n));
      if (b.transactions) await advanceStreamState(this.target!, this.slot, { lsn: lsnText(b.lastEnd), lastCommitAt, transactions: b.transactions, rows: b.rows });
      await this.target!.query('COMMIT');
    } catch (e) {
      await this.target!.query('ROLLBACK').catch(() => {});
      this.batch = Session.emptyBatch();
      throw e;
    }
    this.batch = Session.emptyBatch();
    this.retry = nextRetry;
    if (!b.transactions) return;
    const now = Date.now();
    this.applied = b.lastEnd;
    const lagMs = b.firstCommitUs === null ? 0 : Math.max(0, now - Number(b.firstCommitUs / 1000n));
    Object.assign(this.status, {
      lsn: lsnText(b.lastEnd), lastAppliedAt: new Date(now), lastCommitAt: b.lastCommitUs === null ? this.status.lastCommitAt : new Date(Number(b.lastCommitUs / 1000n)),
      lagSeconds: lagMs / 1000, transactions: this.status.transactions + b.transactions, rows: this.status.rows + b.rows,
    });
    // Only now may production forget these transactions.
    await this.confirm(b.lastEnd);
    this.event({ kind: 'applied', lsn: lsnText(b.lastEnd), transactions: b.transactions, rows: b.rows, ms: now - b.startedAt, lagMs });
  }

  /** Production truncated a synced table: a reconcile finds what to delete (and keeps QA rows); then the position moves past it. */
  private async resync(reason: string, lsn: bigint): Promise<void> {
    const o = this.opts;
    this.event({ kind: 'resync', reason });
    for (;;) {
      const r = await runSync({ sourceUrl: o.sourceUrl, targetUrl: o.targetUrl, tables: o.tables, target: o.target, allowProductionTarget: o.allowProductionTarget });
      if (r.error) throw r.error;
      if (!r.skipped) break;
      await new Promise((res) => setTimeout(res, 1000));
    }
    await this.target!.query('BEGIN');
    try {
      await advanceStreamState(this.target!, this.slot, { lsn: lsnText(lsn), lastCommitAt: null, transactions: 0, rows: 0 });
      await this.target!.query('COMMIT');
    } catch (e) {
      await this.target!.query('ROLLBACK').catch(() => {});
      throw e;
    }
    this.applied = lsn;
    await this.confirm(lsn);
  }

  /**
   * Idle: nothing received is unapplied, so production's sent position (from its keepalives) can
   * be recorded and confirmed. Without this, writes to other databases of the server would make
   * the slot pin WAL while the synced tables are quiet. A ping asks for the next keepalive.
   */
  private async idleAdvance(): Promise<void> {
    if (this.failure || !this.service || !this.target) return;
    // received counts messages handed to the listener (synchronously), handled those fully processed.
    const idle = !this.tx && !this.batch.open && this.batch.transactions === 0 && this.queued() === 0 && this.received === this.handled;
    if (idle && this.retry.size > 0 && Date.now() - this.lastRetryAt >= 1000) await this.commitBatch();
    if (idle && this.keepalive > this.applied) {
      const lsn = this.keepalive;
      await this.target.query('BEGIN');
      try {
        await advanceStreamState(this.target, this.slot, { lsn: lsnText(lsn), lastCommitAt: null, transactions: 0, rows: 0 });
        await this.target.query('COMMIT');
      } catch (e) {
        await this.target.query('ROLLBACK').catch(() => {});
        throw e;
      }
      this.applied = lsn;
      this.status.lsn = lsnText(lsn);
      this.status.lagSeconds = 0;
      await this.confirm(lsn);
    }
    await this.confirm(this.applied, true);
  }

  private monitoring = false;
  /** Lag in bytes and the WAL the slot retains, read from production now and then. */
  private async monitor(): Promise<void> {
    if (this.monitoring || !this.admin) return;
    this.monitoring = true;
    try {
      const r = await this.admin.query(`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8 AS behind,
          (SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::float8 FROM pg_replication_slots WHERE slot_name = $2) AS retained`,
      [lsnText(this.applied), this.slot]);
      this.status.lagBytes = Math.max(0, Number(r.rows[0].behind));
      this.status.retainedWalBytes = Number(r.rows[0].retained ?? 0);
      if (!this.tx && !this.batch.open && this.received === this.handled && Date.now() - (this.status.lastAppliedAt?.getTime() ?? 0) > 1000) this.status.lagSeconds = 0;
    } catch {
      // Production unreachable: the stream itself notices and reconnects.
    } finally {
      this.monitoring = false;
    }
  }

  /** Waits (up to stopGraceMs) for the transaction in hand, applies what arrived whole, ends the stream. */
  async stop(): Promise<void> {
    if (this.stopRequested) return;
    const deadline = Date.now() + (this.opts.stopGraceMs ?? 10_000);
    while (this.service && !this.failure && this.tx && !this.tx.skip && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    this.stopRequested = true;
    await this.serial(async () => {
      if (!this.failure && this.batch.transactions > 0) await this.commitBatch().catch(() => {});
    });
    this.ended?.();
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.stopRequested = true;
    await this.service?.stop().catch(() => {});
    if (this.batch.open) await this.target?.query('ROLLBACK').catch(() => {});
    await Promise.all([this.source, this.target, this.admin].map((c) => c?.end().catch(() => {})));
    this.source = this.target = this.admin = null;
  }
}

/** `elara-sync watch --drop`: removes the slot and publication from production and the position from the target. */
export async function dropStream(opts: { sourceUrl: string; targetUrl?: string | null; targetName: string }): Promise<{ slot: boolean; publication: boolean; position: boolean }> {
  const admin = await connect(opts.sourceUrl, 'source', 'elara-sync-watch-admin');
  try {
    await admin.query('SET default_transaction_read_only = off');
    const slot = await dropSlot(admin, slotName(opts.targetName));
    const publication = await dropPublication(admin, publicationName(opts.targetName));
    let position = false;
    if (opts.targetUrl) {
      const target = await connect(opts.targetUrl, 'target', 'elara-sync-watch');
      try {
        position = await deleteStreamState(target, slotName(opts.targetName));
      } finally {
        await target.end().catch(() => {});
      }
    }
    return { slot, publication, position };
  } finally {
    await admin.end().catch(() => {});
  }
}
