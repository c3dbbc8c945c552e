// elara-sync: turns flags into options and calls the library (the CLI is a client of it).
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import {
  connect, dropStream, expandUrl, readStreamStates, slotName, startWatch, formatDoctorReport, loadConfig, maskFromKey, urlVariables, parseDuration, readRuns, readTableStates, redactUrl, resolveTarget, runDoctor, runSync, startReconcileLoop, SyncError, verifySync,
  type ProgressEvent, type WatchEvent, type ResolvedTarget, type RunResult, type SyncConfig, type TableConfig,
} from '../index.ts';

const USAGE = `elara-sync: keeps a staging PostgreSQL database in step with production

Usage: elara-sync <command> [options]

Commands:
  run       reconcile the configured tables (inserts, updates, deletes), FK order, one transaction
  plan      dry run: table order and what run would insert, update and delete; writes nothing
  verify    compare every row; exit 0 when staging equals production, 1 when not
  status    the last runs recorded in staging
  doctor    troubleshooting checks, one line each with a fix hint
  watch     stream production's changes to the target in real time (logical replication) until stopped;
            creates a publication and a slot on production; --drop removes them

Options:
  --from URL          production (source); default DATABASE_URL
  --target NAME       a target of elara-sync.yml (default staging): its URL, rules and subset
  --to URL            the target's database URL (overrides the target's url; default STAGING_DATABASE_URL)
  --tables A,B        tables to sync (default: elara-sync.yml, else Organization,User)
  --config FILE       config file (default ELARA_SYNC_CONFIG, else ./elara-sync.yml when present)
  --every DURATION    run: repeat every DURATION (e.g. 5m) until stopped
  --json              machine-readable output on stdout (watch: one JSON line per event)
  --drop              watch: remove the target's slot and publication from production, and its position
  --allow-production-target
                      run even though the target carries elara.environment = 'production'
  -h, --help          this text

Exit codes: 0 ok, 1 differences (verify) or conflicts (run), 2 error.`;

interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  isTTY: boolean;
  env: NodeJS.ProcessEnv;
}

const defaultIo = (): Io => ({
  out: (s) => process.stdout.write(`${s}\n`),
  err: (s) => process.stderr.write(`${s}\n`),
  isTTY: Boolean(process.stdout.isTTY),
  env: process.env,
});

function plural(table: string): string {
  const base = table.split('.').pop()!.toLowerCase();
  return base.endsWith('s') ? base : `${base}s`;
}

function printError(io: Io, e: unknown, json: boolean): number {
  const err = e instanceof SyncError ? e : new SyncError('E_INTERNAL', (e as Error).message ?? String(e), 'this is a bug: report it with the command you ran');
  if (json) io.out(JSON.stringify({ ok: false, error: { code: err.code, message: err.message, hint: err.hint, table: err.table, side: err.side } }));
  else io.err(`elara-sync: ${err.message}\n  code: ${err.code}\n  what to do: ${err.hint}`);
  return 2;
}

/** The mask for an anonymized target when ELARA_SYNC_MASK_KEY is set, else null (the doctor reports it). */
function resolveMaskOrNull(env: NodeJS.ProcessEnv) {
  return env.ELARA_SYNC_MASK_KEY && env.ELARA_SYNC_MASK_KEY.length >= 16 ? maskFromKey(env.ELARA_SYNC_MASK_KEY) : null;
}

/** Production's URL and the chosen target (its URL, rules and subset); `--to` overrides the target's URL. */
function resolveEnds(values: Record<string, string | boolean | undefined>, env: NodeJS.ProcessEnv, config: SyncConfig, need: { source: boolean; mask?: boolean }) {
  const sourceUrl = (values.from as string | undefined) ?? env.DATABASE_URL;
  const missing = need.source && !sourceUrl ? ['--from (or DATABASE_URL)'] : [];
  const name = values.target as string | undefined;
  const wanted = config.targets.find((t) => t.name === (name ?? 'staging')) ?? (name ? undefined : config.targets[0]);
  if (!values.to && wanted && !expandUrl(wanted.url, env)) {
    const vars = urlVariables(wanted.url);
    missing.push(`--to (or ${vars.length ? vars.join(', ') : `targets.${wanted.name}.url`})`);
  }
  if (missing.length) throw new SyncError('E_CONFIG', `missing ${missing.join(' and ')}`, 'pass the database URLs as flags or environment variables');
  const target = resolveTarget(config.targets, name, { to: values.to as string | undefined, env, requireMask: need.mask ?? true });
  return { sourceUrl: sourceUrl ?? '', targetUrl: target.url, target };
}

function tablesFrom(values: { tables?: string }, config: SyncConfig): TableConfig[] {
  if (!values.tables) return config.tables;
  const names = values.tables.split(',').map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new SyncError('E_CONFIG', '--tables is empty', 'list tables like --tables Organization,User');
  // Keep transforms and filters from the config for tables it names.
  return names.map((n) => config.tables.find((t) => t.name === n) ?? { name: n });
}

/** Progress bars, one per table, when stdout is a terminal. */
function progressReporter(io: Io, enabled: boolean): { onProgress?: (e: ProgressEvent) => void; stop: () => void } {
  if (!enabled) return { stop: () => {} };
  const multi = new cliProgress.MultiBar({
    format: ' {table} |{bar}| {value}/{total} rows {note}',
    hideCursor: true,
    clearOnComplete: false,
    stream: process.stderr,
  }, cliProgress.Presets.shades_classic);
  const bars = new Map<string, cliProgress.SingleBar>();
  const width = { n: 12 };
  return {
    onProgress: (e) => {
      if (e.kind === 'order') width.n = Math.max(...e.tables.map((t) => t.length), 5);
      if (e.kind === 'table-start') {
        const note = { none: '(unchanged)', changed: '(changed ranges)', all: '(full compare)', initial: '(first run)' }[e.scope];
        bars.set(e.table, multi.create(Math.max(e.rowsToCopy, 1), e.scope === 'none' ? Math.max(e.rowsToCopy, 1) : 0, { table: e.table.padEnd(width.n), note }));
      }
      if (e.kind === 'table-progress') bars.get(e.table)?.update(e.rowsCopied);
      if (e.kind === 'table-done') {
        const b = bars.get(e.table);
        const r = e.result;
        b?.update(b.getTotal(), { note: `+${r.inserted} ~${r.updated} -${r.deleted}${r.conflicts ? ` !${r.conflicts} conflicts` : ''}` });
      }
    },
    stop: () => multi.stop(),
  };
}

function printRunHuman(io: Io, r: RunResult, dryRun: boolean, targetName = 'staging'): void {
  if (r.skipped) {
    io.out('Another elara-sync run is in progress on this staging database; nothing to do.');
    return;
  }
  if (r.order.length) io.out(`Order (parents first): ${r.order.join(' → ')}`);
  for (const t of r.tables) {
    const verb = dryRun ? 'would insert' : 'inserted';
    io.out(`${t.table}: ${verb} ${t.inserted}, ${dryRun ? 'update' : 'updated'} ${t.updated}, ${dryRun ? 'delete' : 'deleted'} ${t.deleted}, unchanged ${t.unchanged}${t.conflicts ? `, conflicts ${t.conflicts}` : ''} (${t.durationMs} ms)`);
    for (const h of (t.held ?? []).slice(0, 10)) io.out(`  held back: ${h.key}: ${h.reason}`);
    if ((t.held?.length ?? 0) > 10 || t.conflicts > (t.held?.length ?? 0)) io.out(`  … ${t.conflicts} held back in all`);
    if (t.error) io.out(`  error: ${t.error}`);
  }
  if (dryRun) for (const n of r.notes) io.out(`note: ${n}`);
  if (r.error) return;
  io.out(dryRun ? 'Plan complete: nothing was written.' : r.ok ? 'Sync completed successfully!' : 'Sync completed; some rows were held back because rows created in staging block them (see above); everything else was applied.');
  // The seed's closing lines, "Production users: N" / "Staging users: N", with the target's name.
  const side = targetName === 'staging' ? 'Staging' : `${targetName[0]!.toUpperCase()}${targetName.slice(1)}`;
  for (const t of r.tables) {
    io.out(`Production ${plural(t.table)}: ${t.sourceRows}`);
    io.out(`${side} ${plural(t.table)}: ${t.targetRows}`);
  }
}

function runJson(r: RunResult): string {
  return JSON.stringify({
    ok: r.ok, skipped: r.skipped, runId: r.runId, durationMs: r.durationMs, order: r.order, notes: r.notes,
    tables: r.tables.map(({ conflictKeys, ...t }) => ({ ...t, ...(conflictKeys?.length ? { conflictKeys } : {}) })),
    ...(r.error ? { error: { code: r.error.code, message: r.error.message, hint: r.error.hint } } : {}),
  });
}

async function cmdRun(io: Io, values: Record<string, string | boolean | undefined>, dryRun: boolean): Promise<number> {
  const json = Boolean(values.json);
  const config = loadConfig(values.config as string | undefined, io.env);
  const { sourceUrl, targetUrl, target } = resolveEnds(values, io.env, config, { source: true });
  const tables = tablesFrom(values as { tables?: string }, config);
  const every = values.every ? parseDuration(values.every as string) : null;
  if (every !== null && dryRun) throw new SyncError('E_CONFIG', '--every works with run, not plan', 'drop --every');
  const allowProductionTarget = Boolean(values['allow-production-target']) || config.allowProductionTarget;
  const report = (r: RunResult): number => {
    if (json) io.out(runJson(r));
    else printRunHuman(io, r, dryRun, target.name);
    if (r.error) {
      if (!json) printError(io, r.error, false);
      return 2;
    }
    return r.ok ? 0 : 1;
  };
  if (every === null) {
    const progress = progressReporter(io, io.isTTY && !json);
    const r = await runSync({
      sourceUrl, targetUrl, target, tables, dryRun, allowProductionTarget, statementTimeoutMs: config.statementTimeoutMs, sequenceHeadroom: config.sequenceHeadroom,
      onProgress: progress.onProgress,
    });
    progress.stop();
    return report(r);
  }
  // --every: one run now, then one per interval, until SIGTERM/SIGINT (after the run in progress).
  let code = 0;
  const loop = startReconcileLoop({
    sourceUrl, targetUrl, target, tables, allowProductionTarget, statementTimeoutMs: config.statementTimeoutMs, sequenceHeadroom: config.sequenceHeadroom, intervalMs: every,
    onResult: (r) => {
      code = report(r);
    },
  });
  await new Promise<void>((resolve) => {
    const stop = () => {
      io.err('elara-sync: stopping after the run in progress');
      void loop.stop().then(resolve);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  return code;
}

async function cmdVerify(io: Io, values: Record<string, string | boolean | undefined>): Promise<number> {
  const config = loadConfig(values.config as string | undefined, io.env);
  const { sourceUrl, targetUrl, target } = resolveEnds(values, io.env, config, { source: true });
  const r = await verifySync({ sourceUrl, targetUrl, target, tables: tablesFrom(values as { tables?: string }, config) });
  if (values.json) io.out(JSON.stringify({ ok: true, ...r }));
  else {
    for (const t of r.tables) {
      io.out(`${t.equal ? 'equal    ' : 'DIFFERENT'} ${t.table}: production ${t.sourceRows}, staging ${t.targetRows}, missing ${t.missing}, extra ${t.extra}, changed ${t.changed}, staging-only (kept) ${t.local}`);
    }
    io.out(r.equal ? 'Staging equals production on every synced table.' : 'Staging differs from production: run `elara-sync run` (or see `elara-sync plan`).');
  }
  return r.equal ? 0 : 1;
}

async function cmdStatus(io: Io, values: Record<string, string | boolean | undefined>): Promise<number> {
  const config = loadConfig(values.config as string | undefined, io.env);
  const { targetUrl } = resolveEnds(values, io.env, config, { source: false, mask: false });
  const client = await connect(targetUrl, 'target', 'elara-sync-status');
  try {
    const [runs, states, streams] = await Promise.all([readRuns(client, 10), readTableStates(client), readStreamStates(client)]);
    if (values.json) {
      io.out(JSON.stringify({ ok: true, runs, tables: states, streams }));
      return 0;
    }
    for (const s of streams) {
      const at = s.lastCommitAt ? `last production commit applied ${Math.round((Date.now() - s.lastCommitAt.getTime()) / 1000)} s ago` : 'no transaction applied since the snapshot';
      io.out(`stream ${s.slot}: at ${s.lsn}, ${at}; position recorded ${Math.round((Date.now() - s.updatedAt.getTime()) / 1000)} s ago; ${s.transactions} transactions, ${s.rows} row changes since the snapshot of ${s.snapshotAt.toISOString()}`);
    }
    if (runs.length === 0) io.out(`No runs recorded in ${redactUrl(targetUrl)} yet: run \`elara-sync run\`.`);
    for (const t of states) {
      const lag = t.lastEqualAt ? `${Math.round((Date.now() - t.lastEqualAt.getTime()) / 1000)} s ago` : 'never';
      io.out(`${t.table}: last equal to production ${lag}; production ${t.sourceRows ?? '?'} rows, staging ${t.targetRows ?? '?'} rows (run ${t.lastRunId ?? '-'})`);
    }
    for (const r of runs) {
      const counts = r.tables.map((t) => `${t.table} +${t.inserted} ~${t.updated} -${t.deleted}${t.conflicts ? ` !${t.conflicts}` : ''}`).join(', ');
      io.out(`#${r.id} ${r.startedAt.toISOString()} ${r.status.padEnd(9)} ${r.durationMs ?? '-'} ms  ${counts}${r.error ? `  error: ${r.error}` : ''}`);
    }
    return 0;
  } finally {
    await client.end().catch(() => {});
  }
}

function describeWatchEvent(e: WatchEvent): string | null {
  switch (e.kind) {
    case 'setup': return e.created.length ? `created on production: ${e.created.join(', ')}` : `using publication ${e.publication} and slot ${e.slot} on production`;
    case 'snapshot-start': return `snapshot: ${e.reason}; reconciling under the slot's snapshot`;
    case 'snapshot-done': return `snapshot applied (${e.result.tables.map((t) => `${t.table} +${t.inserted} ~${t.updated} -${t.deleted}`).join(', ')}); streaming from ${e.lsn}`;
    case 'streaming': return `streaming from ${e.from}`;
    case 'applied': return null;
    case 'held': return `held back in ${e.table}: ${e.held} change(s) blocked by rows created in the target (${e.keys.join('; ')})`;
    case 'resync': return `${e.reason}: reconciling`;
    case 'reconnecting': return `${e.error.message} (${e.error.code}); retrying in ${(e.delayMs / 1000).toFixed(1)} s (attempt ${e.attempt})`;
    case 'stopped': return 'stopped; position recorded';
  }
}

/** watch: streams until SIGTERM/SIGINT (finishing the transaction in hand); --drop removes the stream. */
async function cmdWatch(io: Io, values: Record<string, string | boolean | undefined>): Promise<number> {
  const json = Boolean(values.json);
  const config = loadConfig(values.config as string | undefined, io.env);
  if (values.drop) {
    const sourceUrl = (values.from as string | undefined) ?? io.env.DATABASE_URL;
    if (!sourceUrl) throw new SyncError('E_CONFIG', 'missing --from (or DATABASE_URL)', 'pass the production URL');
    const name = (values.target as string | undefined) ?? 'staging';
    let targetUrl: string | null = null;
    try {
      targetUrl = resolveEnds(values, io.env, config, { source: true, mask: false }).targetUrl;
    } catch {
      // The target's URL is not needed to remove the stream from production.
    }
    const r = await dropStream({ sourceUrl, targetUrl, targetName: name });
    if (json) io.out(JSON.stringify({ ok: true, ...r, slot_name: slotName(name) }));
    else io.out(`slot ${slotName(name)}: ${r.slot ? 'dropped' : 'not there'}; publication: ${r.publication ? 'dropped' : 'not there'}; target position: ${r.position ? 'removed' : targetUrl ? 'not there' : 'not checked (no target URL)'}`);
    return 0;
  }
  const { sourceUrl, targetUrl, target } = resolveEnds(values, io.env, config, { source: true });
  const allowProductionTarget = Boolean(values['allow-production-target']) || config.allowProductionTarget;
  let applied = { transactions: 0, rows: 0, at: Date.now() };
  const handle = startWatch({
    sourceUrl, targetUrl, target, tables: tablesFrom(values as { tables?: string }, config), allowProductionTarget, onFatal: 'stop',
    onEvent: (e) => {
      if (json) {
        io.out(JSON.stringify(e.kind === 'reconnecting' ? { ...e, error: { code: e.error.code, message: e.error.message, hint: e.error.hint } }
          : e.kind === 'snapshot-done' ? { kind: e.kind, lsn: e.lsn, tables: e.result.tables } : e));
        return;
      }
      if (e.kind === 'applied') {
        // A line per 5 s on a terminal, not one per transaction.
        applied = { transactions: applied.transactions + e.transactions, rows: applied.rows + e.rows, at: applied.at };
        if (Date.now() - applied.at >= 5000) {
          io.err(`applied ${applied.transactions} transaction(s), ${applied.rows} row change(s); at ${e.lsn}, lag ${e.lagMs} ms`);
          applied = { transactions: 0, rows: 0, at: Date.now() };
        }
        return;
      }
      const line = describeWatchEvent(e);
      if (line) io.err(`elara-sync watch (${target.name}): ${line}`);
    },
  });
  const onSignal = () => {
    if (!json) io.err('elara-sync watch: stopping after the transaction in hand');
    void handle.stop();
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  try {
    await handle.done;
    return 0;
  } finally {
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('SIGINT', onSignal);
  }
}

async function cmdDoctor(io: Io, values: Record<string, string | boolean | undefined>): Promise<number> {
  const config = loadConfig(values.config as string | undefined, io.env);
  let target: ResolvedTarget | undefined;
  try {
    target = resolveEnds(values, io.env, config, { source: false, mask: false }).target;
  } catch {
    // No URL for the target: the doctor reports that as a failed check.
  }
  const r = await runDoctor({
    sourceUrl: (values.from as string | undefined) ?? io.env.DATABASE_URL,
    targetUrl: target?.url ?? (values.to as string | undefined),
    target: target?.mask || !target?.anonymize ? target : { ...target, mask: resolveMaskOrNull(io.env) },
    intervalSeconds: Math.round(config.intervalMs / 1000),
    tables: tablesFrom(values as { tables?: string }, config),
  });
  io.out(values.json ? JSON.stringify(r) : formatDoctorReport(r));
  return r.ok ? 0 : 1;
}

export async function main(argv: string[], io: Io = defaultIo()): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        from: { type: 'string' }, to: { type: 'string' }, target: { type: 'string' }, tables: { type: 'string' }, config: { type: 'string' },
        every: { type: 'string' }, json: { type: 'boolean' }, drop: { type: 'boolean' }, 'allow-production-target': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    io.err(`elara-sync: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const command = positionals[0];
  if (values.help || !command) {
    (command || values.help ? io.out : io.err)(USAGE);
    return values.help ? 0 : 2;
  }
  try {
    switch (command) {
      case 'run': return await cmdRun(io, values, false);
      case 'plan': return await cmdRun(io, values, true);
      case 'verify': return await cmdVerify(io, values);
      case 'status': return await cmdStatus(io, values);
      case 'doctor': return await cmdDoctor(io, values);
      case 'watch': return await cmdWatch(io, values);
      default:
        io.err(`elara-sync: unknown command "${command}"\n\n${USAGE}`);
        return 2;
    }
  } catch (e) {
    return printError(io, e, Boolean(values.json));
  }
}
