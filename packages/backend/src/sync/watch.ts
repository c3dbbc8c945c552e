// Real-time sync in the API process: one `elara-sync watch` (startWatch) per target with a URL, the
// same targets, rules and masks as the in-process reconcile loops. SYNC_WATCH=auto starts them only
// when production has wal_level = logical (the embedded default does); otherwise the outbox and
// the reconcile keep staging converging, and the server says so once. A problem a reconnect cannot
// fix (wal_level, a schema change) is retried at the longest backoff (onFatal 'retry'): the API
// keeps running, the status page and elara_sync_stream_up show it.
import type pg from 'pg';
import { scrubSecrets, startWatch, type StreamStatus, type WatchEvent, type WatchHandle } from '@elara/sync';
import type { Config } from '../config.ts';
import type { Logger } from '../logger.ts';

export interface WatchState {
  /** What SYNC_WATCH resolved to in this process. */
  mode: 'on' | 'off';
  /** Why it is off (or, when on, anything the operator should know), for the log and the status page. */
  reason: string | null;
}

export interface Watches {
  readonly state: WatchState;
  /** Every target's stream as it is now (empty when watch is off). */
  statuses(): StreamStatus[];
  /** Resolves once every stream is streaming, or after timeoutMs; says which. */
  untilStreaming(timeoutMs: number): Promise<boolean>;
  /** Finishes each stream's transaction in hand and ends it (before the pools and PostgreSQL go). */
  stop(): Promise<void>;
}

async function readWalLevel(prodPool: pg.Pool): Promise<string | null> {
  try {
    return (await prodPool.query<{ w: string }>(`SELECT current_setting('wal_level') AS w`)).rows[0]!.w;
  } catch {
    return null;
  }
}

export async function startWatches(opts: { config: Config; prodPool: pg.Pool; logger: Logger; heartbeatMs?: number }): Promise<Watches> {
  const { config, logger } = opts;
  const handles: Array<{ name: string; handle: WatchHandle }> = [];
  const off = (reason: string): Watches => ({
    state: { mode: 'off', reason },
    statuses: () => [],
    untilStreaming: async () => false,
    stop: async () => {},
  });
  if (config.watch === 'off') {
    logger.info('[Watch] real-time sync is off (SYNC_WATCH=off); the outbox and the reconcile still sync staging');
    return off('SYNC_WATCH=off');
  }
  if (config.targets.all.length === 0) return off('no target has a database URL');
  const level = await readWalLevel(opts.prodPool);
  if (config.watch === 'auto' && level !== 'logical') {
    const why = level === null ? 'production\'s wal_level could not be read' : `production has wal_level = ${level}, not logical`;
    logger.info({ walLevel: level }, `[Watch] real-time sync is off: ${why} (SYNC_WATCH=auto); the outbox and the reconcile still sync staging. Set wal_level = logical on production to stream every change`);
    return off(`${why} (SYNC_WATCH=auto)`);
  }
  const secrets = [config.databaseUrl, ...config.targets.all.map((t) => t.url)];
  const scrub = (text: string) => scrubSecrets(text, secrets);
  for (const target of config.targets.all) {
    const tag = `[Watch${target.name === 'staging' ? '' : ` ${target.name}`}]`;
    const onEvent = (e: WatchEvent) => {
      const at = { target: target.name };
      switch (e.kind) {
        case 'setup':
          logger.info({ ...at, slot: e.slot, publication: e.publication, created: e.created }, `${tag} slot ${e.slot} and publication ${e.publication} ready${e.created.length ? ` (${e.created.join(', ')})` : ''}`);
          return;
        case 'snapshot-start':
          logger.info({ ...at, reason: e.reason }, `${tag} snapshot: ${e.reason}`);
          return;
        case 'snapshot-done': {
          const tables = e.result.tables.map((t) => ({ table: t.table, inserted: t.inserted, updated: t.updated, deleted: t.deleted, conflicts: t.conflicts }));
          logger.info({ ...at, lsn: e.lsn, durationMs: e.result.durationMs, tables }, `${tag} snapshot done at ${e.lsn} in ${e.result.durationMs} ms`);
          return;
        }
        case 'streaming':
          logger.info({ ...at, from: e.from }, `${tag} streaming production's changes from ${e.from}`);
          return;
        case 'held':
          // The keys are left out: a count says enough, and the status page lists the conflicts.
          logger.warn({ ...at, table: e.table, held: e.held }, `${tag} ${e.held} row(s) of ${e.table} held: a row created in the target keeps them`);
          return;
        case 'resync':
          logger.info({ ...at, reason: scrub(e.reason) }, `${tag} reconciling: ${scrub(e.reason)}`);
          return;
        case 'reconnecting': {
          const error = { code: e.error.code, message: scrub(e.error.message), ...(e.error.hint ? { hint: scrub(e.error.hint) } : {}) };
          logger.warn({ ...at, attempt: e.attempt, delayMs: e.delayMs, error }, `${tag} ${error.code}: ${error.message}; reconnecting in ${Math.round(e.delayMs / 100) / 10} s (attempt ${e.attempt})`);
          return;
        }
        case 'stopped':
          logger.info(at, `${tag} stopped`);
          return;
        default:
          // 'applied': one per target transaction; the metrics and the status page count them.
          return;
      }
    };
    handles.push({
      name: target.name,
      handle: startWatch({
        sourceUrl: config.databaseUrl,
        targetUrl: target.url,
        target,
        tables: [...config.syncConfig.tables],
        onFatal: 'retry',
        onEvent,
        ...(opts.heartbeatMs ? { heartbeatMs: opts.heartbeatMs } : {}),
      }),
    });
    logger.info({ target: target.name, anonymized: target.anonymize }, `${tag} real-time sync starting (SYNC_WATCH=${config.watch})`);
  }
  const reason = level === 'logical' ? null : `production has wal_level = ${level ?? 'unknown'}: the streams retry until it is logical (SYNC_WATCH=on)`;
  if (reason) logger.warn({ walLevel: level }, `[Watch] ${reason}`);
  const statuses = () => handles.map((h) => {
    const s = h.handle.status();
    return s.lastError ? { ...s, lastError: { ...s.lastError, message: scrub(s.lastError.message), ...(s.lastError.hint ? { hint: scrub(s.lastError.hint) } : {}) } } : s;
  });
  return {
    state: { mode: 'on', reason },
    statuses,
    async untilStreaming(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (handles.every((h) => h.handle.status().phase === 'streaming')) return true;
        if (Date.now() >= deadline) return false;
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      await Promise.all(handles.map((h) => h.handle.stop().catch((err) => logger.warn({ target: h.name, error: { message: scrub(String((err as Error)?.message ?? err)) } }, 'shutdown: stopping watch failed'))));
    },
  };
}
