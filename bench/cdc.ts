// npm run bench:cdc — change-to-visible lag of `elara-sync watch` (startWatch, in this process)
// against PostgreSQL's native logical replication (a publication and a subscription), side by side
// on the same throwaway wal_level = logical server, fed by the same writes.
//
// One cluster from startLogicalServer() (stopped at the end, on failure and on Ctrl-C) with three
// databases migrated by the backend's migrations: src (production), native (a subscription to src,
// copy_data = true) and watch (startWatch from src). Both start together and must hold src's rows
// before the scenarios run:
//   steady  500 transactions/s for 20 s, each a login: UPDATE one User's "lastLoginAt"
//   burst   5 transactions of 10k inserted Users each, one at a time, lag to the last row visible
//   large   one transaction inserting 1M Users: time to visible and this process's peak RSS
// Every transaction writes a marker: "lastLoginAt" = 2030-01-01 + seq ms, seq increasing with the
// writer's (single connection, so commit order = seq order). The writer and a poller per target
// run in a worker thread (bench/lib/cdc-probe.mjs); a poller runs max("lastLoginAt") (indexed)
// every ~1 ms and stamps each seq with the first time it saw it; lag = that time − the seq's
// commit timestamp in production (track_commit_timestamp = on). See bench/README.md.
//
// Options: --quick (a few seconds: 3 s steady, 2 bursts, 100k-row transaction, 10k seed)  --json
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { startWatch, type WatchEvent, type WatchHandle } from '@elara/sync';
import { startLogicalServer, type LogicalServer } from '@elara/testkit/logical';
import { migrateDatabase } from '../packages/backend/src/db/migrate.ts';
import { countRows, generateSource, orgCount } from './lib/sync-data.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const QUICK = flags.quick;
const CFG = QUICK
  ? { seedUsers: 10_000, steadyRate: 500, steadyS: 3, bursts: 2, burstRows: 10_000, largeRows: 100_000 }
  : { seedUsers: 100_000, steadyRate: 500, steadyS: 20, bursts: 5, burstRows: 10_000, largeRows: 1_000_000 };

const log = (s: string) => process.stderr.write(`[bench:cdc] ${s}\n`);
const now = () => performance.now();
const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '—');

// ---------------------------------------------------------------- RSS

const rss = { peak: 0, samples: 0 };
const mbOf = (b: number) => b / 2 ** 20;
const rssTimer = setInterval(() => {
  const r = process.memoryUsage().rss;
  rss.samples++;
  if (r > rss.peak) rss.peak = r;
}, 100);
rssTimer.unref();
function rssWindow(): { before: number; end: () => { before: number; peak: number; samples: number } } {
  const before = process.memoryUsage().rss;
  rss.peak = before;
  rss.samples = 0;
  return { before, end: () => ({ before, peak: Math.max(rss.peak, process.memoryUsage().rss), samples: rss.samples }) };
}

// ---------------------------------------------------------------- scenarios

interface Side { n: number; p50: number; p99: number; max: number; missing: number; negative: number }
interface ProbeResult {
  kind: 'result';
  seqs: number;
  ok: { native: boolean; watch: boolean };
  writer?: { achievedPerS: number; meanCommitMs: number };
  writeMs?: number[];
  native: Side;
  watch: Side;
  replyDelay: { p50: number; p99: number };
}
interface ScenarioResult {
  name: string;
  detail: string;
  transactions: number;
  rowsPerTx: number;
  native: Side;
  watch: Side;
  rss: { beforeMb: number; peakMb: number; samples: number };
  batches: { count: number; transactions: number; rows: number; meanMs: number; maxMs: number };
  writer?: { achievedPerS: number; meanCommitMs: number };
  writeMs?: number[];
  replyDelay: { p50: number; p99: number };
}

const applied: Array<Extract<WatchEvent, { kind: 'applied' }>> = [];

/** The writer and the pollers (bench/lib/cdc-probe.mjs) in a worker thread, one command at a time. */
class Probe {
  private worker: Worker;
  private waiting: ((m: { kind: string; message?: string }) => void) | null = null;
  readonly ready: Promise<unknown>;
  constructor(data: { urls: Record<'src' | 'native' | 'watch', string>; orgs: number; ids: string[] }) {
    this.worker = new Worker(new URL('./lib/cdc-probe.mjs', import.meta.url), { workerData: data });
    this.ready = this.next();
    this.worker.on('message', (m) => { const w = this.waiting; this.waiting = null; w?.(m); });
    this.worker.on('error', (e) => { const w = this.waiting; this.waiting = null; w?.({ kind: 'error', message: e.stack ?? String(e) }); });
  }
  private next<T>(): Promise<T> {
    return new Promise((resolve, reject) => {
      this.waiting = (m) => (m.kind === 'error' ? reject(new Error(`probe: ${m.message}`)) : resolve(m as T));
    });
  }
  run(cmd: Record<string, unknown>): Promise<ProbeResult> {
    const p = this.next<ProbeResult>();
    this.worker.postMessage(cmd);
    return p;
  }
  async stop(): Promise<number> {
    const p = this.next<{ polls: number }>();
    this.worker.postMessage({ cmd: 'stop' });
    const r = await p;
    await this.worker.terminate();
    return r.polls;
  }
  terminate(): void {
    void this.worker.terminate();
  }
}

async function scenario(probe: Probe, name: string, detail: string, rowsPerTx: number, cmd: Record<string, unknown>): Promise<ScenarioResult> {
  log(`${name}: ${detail}`);
  applied.length = 0;
  const win = rssWindow();
  const p = await probe.run(cmd);
  const r = win.end();
  if (!p.ok.native) anomalies.push(`${name}: native did not show the last transaction within ${Number(cmd.timeoutMs) / 1000} s`);
  if (!p.ok.watch) anomalies.push(`${name}: watch did not show the last transaction within ${Number(cmd.timeoutMs) / 1000} s`);
  for (const side of ['native', 'watch'] as const) {
    if (p[side].negative) anomalies.push(`${name}: ${side} showed ${p[side].negative} transaction(s) before their commit timestamp (negative lag: clock?)`);
    if (p[side].missing) anomalies.push(`${name}: ${side}: ${p[side].missing} transaction(s) without a commit timestamp or never seen`);
  }
  const ms = applied.map((a) => a.ms);
  const res: ScenarioResult = {
    name, detail, transactions: p.seqs, rowsPerTx, native: p.native, watch: p.watch,
    rss: { beforeMb: mbOf(r.before), peakMb: mbOf(r.peak), samples: r.samples },
    batches: {
      count: applied.length, transactions: applied.reduce((a, b) => a + b.transactions, 0), rows: applied.reduce((a, b) => a + b.rows, 0),
      meanMs: ms.length ? ms.reduce((a, b) => a + b, 0) / ms.length : NaN, maxMs: ms.length ? Math.max(...ms) : NaN,
    },
    ...(p.writer ? { writer: p.writer } : {}),
    ...(p.writeMs ? { writeMs: p.writeMs } : {}),
    replyDelay: p.replyDelay,
  };
  log(`${name}: native p50 ${f1(res.native.p50)} p99 ${f1(res.native.p99)} ms; watch p50 ${f1(res.watch.p50)} p99 ${f1(res.watch.p99)} ms; `
    + `${res.batches.count} watch batches; peak RSS ${res.rss.peakMb.toFixed(0)} MB (before ${res.rss.beforeMb.toFixed(0)} MB)`);
  return res;
}

// ---------------------------------------------------------------- setup

const anomalies: string[] = [];
let server: LogicalServer | null = null;
let handle: WatchHandle | null = null;
let probe: Probe | null = null;

async function cleanup(): Promise<void> {
  await handle?.stop().catch(() => {});
  handle = null;
  probe?.terminate();
  probe = null;
  await server?.stop().catch(() => {});
  server = null;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping watch and dropping the cluster`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function waitUntil(what: string, cond: () => Promise<boolean>, ms: number): Promise<number> {
  const t0 = now();
  for (;;) {
    if (await cond()) return (now() - t0) / 1000;
    if (now() - t0 > ms) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await sleep(100);
  }
}

interface Setup { pg: string; nativeReadyS: number; watchReadyS: number; seedUsers: number; seedOrgs: number }

async function main(): Promise<number> {
  const startedAt = new Date();
  log(`starting a wal_level = logical cluster`);
  server = await startLogicalServer(['track_commit_timestamp = on']);
  const srv = server;
  const [srcDb, nativeDb, watchDb] = [await srv.createDatabase('cdc_src'), await srv.createDatabase('cdc_native'), await srv.createDatabase('cdc_watch')];
  const url = { src: srv.url(srcDb), native: srv.url(nativeDb), watch: srv.url(watchDb) };
  for (const u of Object.values(url)) {
    await migrateDatabase(u);
    // The pollers' index (on every side, so the schemas stay identical).
    await srv.sql(u.replace(/.*\//, ''), `CREATE INDEX "User_lastLoginAt_bench_idx" ON "User" ("lastLoginAt")`);
  }
  const pgVersion = (await srv.sql('postgres', `SELECT current_setting('server_version') AS v`)).rows[0].v as string;

  log(`generating ${orgCount(CFG.seedUsers)} organizations and ${CFG.seedUsers} users in production`);
  const gen = await generateSource(url.src, CFG.seedUsers);
  await srv.sql(srcDb, 'VACUUM ANALYZE');

  // Native: the slot made beforehand (CREATE SUBSCRIPTION cannot create a slot on its own cluster:
  // it would wait for its own transaction), then the subscription copies the tables and streams.
  await srv.sql(srcDb, `CREATE PUBLICATION bench_native FOR TABLE "Organization", "User"`);
  await srv.sql(srcDb, `SELECT pg_create_logical_replication_slot('bench_native', 'pgoutput')`);
  const t0 = now();
  await srv.sql(nativeDb, `CREATE SUBSCRIPTION bench_native CONNECTION 'host=127.0.0.1 port=${srv.port} dbname=${srcDb} user=postgres application_name=bench_native'
    PUBLICATION bench_native WITH (create_slot = false, slot_name = 'bench_native', copy_data = true)`);
  handle = startWatch({
    sourceUrl: url.src, targetUrl: url.watch, tables: [{ name: 'Organization' }, { name: 'User' }], targetName: 'bench',
    onEvent: (e) => {
      if (e.kind === 'applied') applied.push(e);
      else if (e.kind === 'reconnecting') anomalies.push(`watch reconnected (attempt ${e.attempt}): ${e.error.code} ${e.error.message}`);
      else if (e.kind === 'held') anomalies.push(`watch held ${e.held} row(s) of ${e.table}: ${e.keys.join('; ')}`);
    },
  });
  handle.done.catch((e) => anomalies.push(`watch stopped: ${(e as Error).message}`));
  const h = handle;
  const [nativeReadyS, watchReadyS] = await Promise.all([
    waitUntil('the native subscription to copy the tables', async () => (await srv.sql(nativeDb,
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE srsubstate <> 'r')::int AS busy FROM pg_subscription_rel`)).rows.every((r) => r.n === 2 && r.busy === 0), 600_000).then(() => (now() - t0) / 1000),
    waitUntil('watch to stream', async () => h.status().phase === 'streaming', 600_000).then(() => (now() - t0) / 1000),
  ]);
  const want = { orgs: gen.orgs, users: gen.users };
  for (const [side, u] of [['native', url.native], ['watch', url.watch]] as const) {
    const got = await countRows(u);
    if (got.orgs !== want.orgs || got.users !== want.users) anomalies.push(`${side} after its initial copy holds ${got.orgs}/${got.users}, production ${want.orgs}/${want.users}`);
  }
  log(`native ready after ${nativeReadyS.toFixed(1)} s, watch streaming after ${watchReadyS.toFixed(1)} s`);
  const setup: Setup = { pg: pgVersion, nativeReadyS, watchReadyS, seedUsers: gen.users, seedOrgs: gen.orgs };

  const ids = (await srv.sql(srcDb, `SELECT id FROM "User" ORDER BY id LIMIT 20000`)).rows.map((r) => r.id as string);
  probe = new Probe({ urls: url, orgs: gen.orgs, ids });
  await probe.ready;
  await sleep(500);

  const results: ScenarioResult[] = [];
  results.push(await scenario(probe, 'steady', `${CFG.steadyRate} tx/s for ${CFG.steadyS} s, one UPDATE of "User"."lastLoginAt" per transaction`, 1,
    { cmd: 'steady', rate: CFG.steadyRate, seconds: CFG.steadyS, timeoutMs: 120_000 }));
  await sleep(1000);
  results.push(await scenario(probe, 'burst', `${CFG.bursts} transactions of ${CFG.burstRows.toLocaleString('en-US')} inserted Users, one at a time`, CFG.burstRows,
    { cmd: 'bursts', count: CFG.bursts, rows: CFG.burstRows, timeoutMs: 120_000 }));
  await sleep(1000);
  results.push(await scenario(probe, 'large', `one transaction inserting ${CFG.largeRows.toLocaleString('en-US')} Users`, CFG.largeRows,
    { cmd: 'large', rows: CFG.largeRows, timeoutMs: 900_000 }));
  const polls = await probe.stop();
  probe = null;

  // Both targets must end equal to production in row counts.
  const final = await Promise.all([url.src, url.native, url.watch].map((u) => countRows(u)));
  for (const [i, side] of [[1, 'native'], [2, 'watch']] as const) {
    if (final[i]!.users !== final[0]!.users || final[i]!.orgs !== final[0]!.orgs) anomalies.push(`${side} ends with ${final[i]!.orgs}/${final[i]!.users} rows, production ${final[0]!.orgs}/${final[0]!.users}`);
  }
  await cleanup();

  const text = render(setup, results, startedAt, polls);
  const dir = join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `cdc-${startedAt.toISOString().replace(/:/g, '-').replace(/\..*/, '')}.md`);
  writeFileSync(file, `# npm run bench:cdc${QUICK ? ' -- --quick' : ''}\n\n${text}\n`);
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ startedAt, quick: QUICK, config: CFG, git: gitHead(), node: process.versions.node, setup, cores: availableParallelism(), results, anomalies }, null, 2)}\n`);
    process.stderr.write(`${text}\n`);
  } else {
    process.stdout.write(`${text}\n`);
  }
  log(`written to ${file}`);
  return anomalies.length ? 1 : 0;
}

// ---------------------------------------------------------------- output

function gitHead(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

function render(setup: Setup, results: ScenarioResult[], startedAt: Date, polls: number): string {
  const head = [
    `elara-sync watch vs native logical replication${QUICK ? ' (--quick)' : ''}, ${startedAt.toISOString()}: git ${gitHead()}, Node ${process.versions.node}, PostgreSQL ${setup.pg}, ${availableParallelism()} cores;`
      + ` one throwaway cluster (fsync off), production seeded with ${setup.seedOrgs.toLocaleString('en-US')} organizations / ${setup.seedUsers.toLocaleString('en-US')} users;`
      + ` initial copy: native ${setup.nativeReadyS.toFixed(1)} s, watch ${setup.watchReadyS.toFixed(1)} s (concurrently).`,
    `Lag = first poll (every ~1 ms, ${polls} polls in all) that shows a transaction's marker on the target − the transaction's commit timestamp in production (track_commit_timestamp), in ms.`
      + ' Peak RSS: this process (watch runs in it; native replication has no client process, so RSS is reported for watch only), sampled every 100 ms.',
  ];
  const rows = results.map((r) => {
    const label = `${r.name}: ${r.detail}`;
    const ratio = r.watch.p99 / r.native.p99;
    return `| ${label} | ${r.transactions} | ${f1(r.native.p50)} / ${f1(r.native.p99)} | ${f1(r.watch.p50)} / ${f1(r.watch.p99)} | ${ratio.toFixed(2)}× | ${r.rss.peakMb.toFixed(0)} MB (before ${r.rss.beforeMb.toFixed(0)}) |`;
  });
  const extra = results.map((r) => `  ${r.name}: native max ${f1(r.native.max)} ms${r.native.missing ? `, ${r.native.missing} never seen` : ''}; watch max ${f1(r.watch.max)} ms${r.watch.missing ? `, ${r.watch.missing} never seen` : ''};`
    + ` watch applied ${r.batches.count} batch(es) (${r.batches.transactions} transactions, ${r.batches.rows} rows; mean ${f1(r.batches.meanMs)} ms, max ${f1(r.batches.maxMs)} ms from the batch's first commit message to applied)`
    + (r.writer ? `; writer ${r.writer.achievedPerS.toFixed(0)} tx/s achieved, mean COMMIT ${r.writer.meanCommitMs.toFixed(2)} ms` : '')
    + (r.writeMs ? `; the INSERT took ${r.writeMs.map((x) => x.toFixed(0)).join(', ')} ms` : '')
    + `; commit timestamp → writer's COMMIT returned: p50 ${f1(r.replyDelay.p50)} ms, p99 ${f1(r.replyDelay.p99)} ms`);
  const worst = Math.max(...results.map((r) => r.watch.p99 / r.native.p99));
  const large = results.find((r) => r.name === 'large')!;
  const growth = large.rss.peakMb / large.rss.beforeMb - 1;
  const verdicts = [
    `target p99 ≤ 2× native: ${results.every((r) => r.watch.p99 <= 2 * r.native.p99) ? 'MET' : 'NOT MET'} (worst ratio ${worst.toFixed(2)}×; ${results.map((r) => `${r.name} ${(r.watch.p99 / r.native.p99).toFixed(2)}×`).join(', ')})`,
    `target RSS flat under a ${large.rowsPerTx.toLocaleString('en-US')}-row transaction (peak ≤ 1.2× the RSS before it): ${growth <= 0.2 ? 'MET' : 'NOT MET'} (${large.rss.beforeMb.toFixed(0)} → peak ${large.rss.peakMb.toFixed(0)} MB, ${growth >= 0 ? '+' : ''}${(growth * 100).toFixed(0)}%, ${large.rss.samples} samples)`,
  ];
  return [
    ...head, '',
    '| scenario | transactions | native p50 / p99 ms | watch p50 / p99 ms | ratio p99 watch/native | peak RSS (watch) |',
    '|---|---:|---:|---:|---:|---:|',
    ...rows, '',
    ...verdicts,
    ...extra,
    ...(anomalies.length ? ['ANOMALIES:', ...anomalies.map((a) => `  - ${a}`)] : []),
  ].join('\n');
}

let code = 2;
try {
  code = await main();
} catch (err) {
  log(`failed: ${(err as Error).stack ?? err}`);
} finally {
  await cleanup();
}
process.exit(code);
