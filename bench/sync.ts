// npm run bench:sync — elara-sync against the seed's CronJob pipeline and a plain binary COPY pipe,
// side by side in one run, on generated data in the seed's schema (one organization per 3 users).
//
// For each N in --sizes (default 100000,1000000): a source and three targets (bench_sync_*
// databases on 127.0.0.1:5432, migrated by the backend's migrations, always dropped), then
//   full       seed pipeline, plain COPY pipe and elara-sync, each into its own empty target
//   no-change  seed pipeline and elara-sync again
//   1%-changed 1% of users updated and 0.1% deleted in the source, then both again
// Each tool is timed as a whole process (start-up included); elara-sync's peak RSS comes from
// /usr/bin/time, else from polling /proc/<pid>/status. Logs go to stderr; the table to stdout
// (--json: a JSON document instead) and to bench/results/sync-<date>.md.
//
// Options: --sizes 20000[,…]  --json  --timeout-min 15  --rss-poll (skip /usr/bin/time)
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { createClient } from '@elara/sync';
import { migrateDatabase } from '../packages/backend/src/db/migrate.ts';
import { killAllChildren, runTimed, type TimedRun } from './lib/proc.ts';
import { applyChangeSet, checkPropagation, countRows, exec, generateSource, orgCount, type ChangeSet, type Propagation } from './lib/sync-data.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const ADMIN_URL = process.env.BENCH_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const CLI = join(ROOT, 'packages/sync/bin/elara-sync.js');

const { values: flags } = parseArgs({
  options: {
    sizes: { type: 'string', default: '100000,1000000' },
    json: { type: 'boolean', default: false },
    'timeout-min': { type: 'string', default: '15' },
    'rss-poll': { type: 'boolean', default: false },
  },
});
const SIZES = flags.sizes.split(',').map((s) => Number(s.trim())).filter((n) => Number.isInteger(n) && n > 0);
if (SIZES.length === 0) throw new Error(`--sizes wants positive integers, e.g. --sizes 20000; got ${flags.sizes}`);
const TIMEOUT_MS = Number(flags['timeout-min']) * 60_000;

const log = (s: string) => process.stderr.write(`[bench:sync] ${s}\n`);

// ---------------------------------------------------------------- databases, always dropped

const created = new Set<string>();

function dbUrl(name: string): string {
  const u = new URL(ADMIN_URL);
  u.pathname = `/${name}`;
  return u.toString();
}

async function admin(text: string): Promise<void> {
  await exec(ADMIN_URL, text);
}

async function createDatabase(role: string): Promise<string> {
  const name = `bench_sync_${role}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  created.add(name);
  await admin(`CREATE DATABASE "${name}"`);
  return name;
}

async function dropDatabases(names: Iterable<string>): Promise<void> {
  for (const name of [...names]) {
    try {
      await admin(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      created.delete(name);
    } catch (e) {
      log(`could not drop ${name}: ${(e as Error).message} (drop it by hand)`);
    }
  }
}

let cleaning: Promise<void> | null = null;
function cleanup(): Promise<void> {
  killAllChildren();
  cleaning ??= dropDatabases(created);
  return cleaning;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping children and dropping ${created.size} database(s)`);
    void cleanup().finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------- the three tools

// The seed CronJob's script, verbatim apart from `set -e -o pipefail` (so a failure is seen; the
// seed's sh carries on). psql 15 runs a multi-statement -c in one implicit transaction and its
// COPY … FROM STDIN reads psql's stdin, so the pipe does load rows (checked by counts below).
const SEED_SCRIPT = String.raw`set -e -o pipefail
# Sync Organization FIRST (parent table)
psql "$PROD_DB" -c "
  COPY (SELECT * FROM \"Organization\") TO STDOUT
" | psql "$STAGING_DB" -c "
  CREATE TEMP TABLE org_temp (LIKE \"Organization\" INCLUDING ALL);
  COPY org_temp FROM STDIN;
  INSERT INTO \"Organization\"
  SELECT * FROM org_temp
  ON CONFLICT (id) DO NOTHING;
"

# Then sync User table (child table)
psql "$PROD_DB" -c "
  COPY (SELECT * FROM \"User\") TO STDOUT
" | psql "$STAGING_DB" -c "
  CREATE TEMP TABLE user_temp (LIKE \"User\" INCLUDING ALL);
  COPY user_temp FROM STDIN;
  INSERT INTO \"User\"
  SELECT * FROM user_temp
  ON CONFLICT (id) DO NOTHING;
"`;

const PLAIN_SCRIPT = String.raw`set -e -o pipefail
psql "$PROD_DB" -c 'COPY "Organization" TO STDOUT (FORMAT binary)' | psql "$STAGING_DB" -c 'COPY "Organization" FROM STDIN (FORMAT binary)'
psql "$PROD_DB" -c 'COPY "User" TO STDOUT (FORMAT binary)' | psql "$STAGING_DB" -c 'COPY "User" FROM STDIN (FORMAT binary)'`;

interface ToolRun {
  s: number;
  ok: boolean;
  exitCode: number | null;
  /** Rows inserted per table as psql reported them (seed: INSERT 0 n). */
  inserted?: { orgs: number; users: number };
  stderr?: string;
}

async function runScript(script: string, src: string, dst: string): Promise<{ run: TimedRun; tool: ToolRun }> {
  const run = await runTimed('bash', ['-c', script], {
    timeoutMs: TIMEOUT_MS, cwd: ROOT,
    env: { ...process.env, PROD_DB: src, STAGING_DB: dst, PSQLRC: '/dev/null' },
  });
  const ok = run.exitCode === 0;
  const inserts = [...run.stdout.matchAll(/^INSERT 0 (\d+)$/gm)].map((m) => Number(m[1]));
  return {
    run,
    tool: {
      s: run.wallS, ok, exitCode: run.exitCode,
      ...(inserts.length === 2 ? { inserted: { orgs: inserts[0]!, users: inserts[1]! } } : {}),
      ...(ok ? {} : { stderr: run.stderr.trim().slice(-2000) }),
    },
  };
}

interface ElaraTable {
  table: string; sourceRows: number; targetRows: number; inserted: number; updated: number; deleted: number; unchanged: number; conflicts: number; durationMs: number; error?: string;
  checks?: { source: string; target: string; compared: string; sourceMs: number; targetMs: number };
}
interface ElaraJson { ok: boolean; skipped?: boolean; durationMs: number; tables: ElaraTable[]; error?: { code: string; message: string } }

interface ElaraRun extends ToolRun {
  peakRssMb: number | null;
  rssMethod: string | null;
  /** 'bundle' when packages/sync/dist was fresh, else the bin fell back to tsx (slower start-up). */
  startup: 'bundle' | 'tsx';
  json: ElaraJson | null;
  stdout?: string;
  verify?: { exitCode: number | null; s: number; output: string };
}

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

function bundleFresh(): boolean {
  try {
    return statSync(join(ROOT, 'packages/sync/dist/elara-sync.mjs')).mtimeMs >= newestMtime(join(ROOT, 'packages/sync/src'));
  } catch {
    return false;
  }
}

let builds = 0;
async function buildBundle(): Promise<void> {
  const build = await runTimed('node', ['scripts/build-cli.mjs'], { timeoutMs: TIMEOUT_MS, cwd: ROOT });
  if (build.exitCode !== 0) throw new Error(`scripts/build-cli.mjs failed: ${build.stderr}`);
  builds++;
}

// The anonymized target: the shipped elara-sync.yml's `dev` (every column through its rule, keyed
// by ELARA_SYNC_MASK_KEY), into its own database, after the raw run of the same step.
const ANON_ENV = { ...process.env, ELARA_SYNC_MASK_KEY: 'bench-mask-key-0123456789abcdef', ELARA_TEST_PASSWORD: 'bench qa password' };

async function runElara(src: string, dst: string, anonymized = false): Promise<ElaraRun> {
  // Other engineers edit packages/sync/src while the bench runs; rebuild so every run starts from
  // the bundle as the CronJob does (the bin would otherwise fall back to tsx, ~0.7 s slower).
  if (!bundleFresh()) {
    log('packages/sync/src changed since the last build: rebuilding the elara-sync bundle');
    await buildBundle();
  }
  const startup = bundleFresh() ? 'bundle' : 'tsx';
  if (startup === 'tsx') log('warning: packages/sync/src is newer than the bundle; elara-sync starts through tsx for this run');
  const run = await runTimed('node', ['--max-semi-space-size=1', CLI, 'run', '--json', '--from', src, '--to', dst,
    ...(anonymized ? ['--config', join(ROOT, 'elara-sync.yml'), '--target', 'dev'] : [])], {
    timeoutMs: TIMEOUT_MS, cwd: ROOT, measureRss: true, forcePoll: flags['rss-poll'], ...(anonymized ? { env: ANON_ENV } : {}),
  });
  let json: ElaraJson | null = null;
  try {
    json = JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '') as ElaraJson;
  } catch { /* recorded as an anomaly */ }
  const byName = (n: string) => json?.tables.find((t) => t.table === n || t.table.endsWith(`.${n}`) || t.table === `"${n}"`);
  const ok = run.exitCode === 0 && json?.ok === true;
  return {
    s: run.wallS, ok, exitCode: run.exitCode, startup,
    peakRssMb: run.peakRssKb === null ? null : run.peakRssKb / 1024, rssMethod: run.rssMethod,
    json,
    ...(json ? { inserted: { orgs: byName('Organization')?.inserted ?? NaN, users: byName('User')?.inserted ?? NaN } } : {}),
    ...(ok ? {} : { stdout: run.stdout.trim().slice(-2000), stderr: run.stderr.trim().slice(-2000) }),
  };
}

async function verifyElara(src: string, dst: string): Promise<ElaraRun['verify']> {
  const run = await runTimed('node', [CLI, 'verify', '--json', '--from', src, '--to', dst], { timeoutMs: TIMEOUT_MS, cwd: ROOT });
  return { exitCode: run.exitCode, s: run.wallS, output: (run.stdout + run.stderr).trim().slice(-2000) };
}

// ---------------------------------------------------------------- one size

type Step = 'full' | 'no-change' | '1%-changed';
const STEPS: Step[] = ['full', 'no-change', '1%-changed'];

interface SizeResult {
  users: number;
  orgs: number;
  sourceUserMb: number;
  generateS: number;
  steps: Record<Step, { seed?: ToolRun; plain?: ToolRun; elara?: ElaraRun; anon?: ElaraRun }>;
  changeSet?: { updated: number; deleted: number };
  propagation?: { seed: Propagation; elara: Propagation };
  anomalies: string[];
}

async function checkpoint(): Promise<void> {
  await admin('CHECKPOINT');
}

function expectCounts(r: SizeResult, label: string, got: { orgs: number; users: number }, want: { orgs: number; users: number }): void {
  if (got.orgs !== want.orgs || got.users !== want.users) {
    r.anomalies.push(`${label}: target holds ${got.orgs} organizations / ${got.users} users, source ${want.orgs} / ${want.users}`);
  }
}

function expectElara(r: SizeResult, step: string, e: ElaraRun, want: Record<'Organization' | 'User', [number, number, number]>): void {
  if (!e.ok) {
    r.anomalies.push(`elara-sync ${step}: exit ${e.exitCode}, ok=${e.json?.ok}; stdout: ${e.stdout ?? ''} stderr: ${e.stderr ?? ''}`);
  }
  for (const [name, [ins, upd, del]] of Object.entries(want)) {
    const t = e.json?.tables.find((x) => x.table === name || x.table.endsWith(`.${name}`));
    if (!t) { r.anomalies.push(`elara-sync ${step}: no ${name} entry in --json`); continue; }
    if (t.inserted !== ins || t.updated !== upd || t.deleted !== del || t.conflicts !== 0) {
      r.anomalies.push(`elara-sync ${step}: ${name} reported +${t.inserted} ~${t.updated} -${t.deleted} !${t.conflicts}, expected +${ins} ~${upd} -${del} !0`);
    }
  }
}

async function benchSize(users: number): Promise<SizeResult> {
  const names: string[] = [];
  const r: SizeResult = {
    users, orgs: orgCount(users), sourceUserMb: 0, generateS: 0,
    steps: { full: {}, 'no-change': {}, '1%-changed': {} }, anomalies: [],
  };
  try {
    const mk = async (role: string) => { const n = await createDatabase(role); names.push(n); return dbUrl(n); };
    const src = await mk('src');
    const dst = { seed: await mk('seed'), plain: await mk('plain'), elara: await mk('elara'), anon: await mk('anon') };
    await Promise.all([src, ...Object.values(dst)].map((u) => migrateDatabase(u)));

    log(`N=${users}: generating ${r.orgs} organizations and ${users} users`);
    const g0 = performance.now();
    const gen = await generateSource(src, users);
    await exec(src, 'VACUUM ANALYZE');
    r.generateS = (performance.now() - g0) / 1000;
    r.sourceUserMb = gen.userBytes / 2 ** 20;
    const want = { orgs: gen.orgs, users: gen.users };
    log(`N=${users}: generated in ${r.generateS.toFixed(1)} s (User table ${r.sourceUserMb.toFixed(0)} MB with indexes)`);

    // full: each tool into its own empty, migrated (indexed) target
    const full = r.steps.full;
    await checkpoint();
    full.seed = (await runScript(SEED_SCRIPT, src, dst.seed)).tool;
    log(`full seed pipeline ${full.seed.s.toFixed(2)} s`);
    await checkpoint();
    full.plain = (await runScript(PLAIN_SCRIPT, src, dst.plain)).tool;
    log(`full plain COPY pipe ${full.plain.s.toFixed(2)} s`);
    await checkpoint();
    full.elara = await runElara(src, dst.elara);
    log(`full elara-sync ${full.elara.s.toFixed(2)} s, peak RSS ${full.elara.peakRssMb?.toFixed(0)} MB`);
    for (const tool of ['seed', 'plain', 'elara'] as const) {
      if (!full[tool]!.ok) r.anomalies.push(`${tool} full: exit ${full[tool]!.exitCode}: ${full[tool]!.stderr ?? ''}`);
      expectCounts(r, `${tool} full`, await countRows(dst[tool]), want);
    }
    expectElara(r, 'full', full.elara, { Organization: [want.orgs, 0, 0], User: [want.users, 0, 0] });
    full.elara.verify = await verifyElara(src, dst.elara);
    if (full.elara.verify!.exitCode !== 0) r.anomalies.push(`elara-sync verify after full: exit ${full.elara.verify!.exitCode}: ${full.elara.verify!.output}`);
    await checkpoint();
    full.anon = await runElara(src, dst.anon, true);
    log(`full elara-sync anonymized ${full.anon.s.toFixed(2)} s, peak RSS ${full.anon.peakRssMb?.toFixed(0)} MB`);
    expectElara(r, 'full anonymized', full.anon, { Organization: [want.orgs, 0, 0], User: [want.users, 0, 0] });

    // no-change re-runs
    const same = r.steps['no-change'];
    await checkpoint();
    same.seed = (await runScript(SEED_SCRIPT, src, dst.seed)).tool;
    log(`no-change seed pipeline ${same.seed.s.toFixed(2)} s`);
    await checkpoint();
    same.elara = await runElara(src, dst.elara);
    log(`no-change elara-sync ${same.elara.s.toFixed(2)} s, peak RSS ${same.elara.peakRssMb?.toFixed(0)} MB`);
    if (!same.seed.ok) r.anomalies.push(`seed no-change: exit ${same.seed.exitCode}: ${same.seed.stderr ?? ''}`);
    expectElara(r, 'no-change', same.elara, { Organization: [0, 0, 0], User: [0, 0, 0] });
    await checkpoint();
    same.anon = await runElara(src, dst.anon, true);
    log(`no-change elara-sync anonymized ${same.anon.s.toFixed(2)} s`);
    expectElara(r, 'no-change anonymized', same.anon, { Organization: [0, 0, 0], User: [0, 0, 0] });

    // the change set, once, then both again
    const cs: ChangeSet = await applyChangeSet(src, users);
    await exec(src, 'VACUUM ANALYZE');
    r.changeSet = { updated: cs.updatedIds.length, deleted: cs.deletedIds.length };
    log(`source: updated ${cs.updatedIds.length} users, deleted ${cs.deletedIds.length}`);
    const changed = r.steps['1%-changed'];
    await checkpoint();
    changed.seed = (await runScript(SEED_SCRIPT, src, dst.seed)).tool;
    log(`1%-changed seed pipeline ${changed.seed.s.toFixed(2)} s`);
    await checkpoint();
    changed.elara = await runElara(src, dst.elara);
    log(`1%-changed elara-sync ${changed.elara.s.toFixed(2)} s, peak RSS ${changed.elara.peakRssMb?.toFixed(0)} MB`);
    if (!changed.seed.ok) r.anomalies.push(`seed 1%-changed: exit ${changed.seed.exitCode}: ${changed.seed.stderr ?? ''}`);
    expectElara(r, '1%-changed', changed.elara, { Organization: [0, 0, 0], User: [0, cs.updatedIds.length, cs.deletedIds.length] });
    await checkpoint();
    changed.anon = await runElara(src, dst.anon, true);
    log(`1%-changed elara-sync anonymized ${changed.anon.s.toFixed(2)} s`);
    expectElara(r, '1%-changed anonymized', changed.anon, { Organization: [0, 0, 0], User: [0, cs.updatedIds.length, cs.deletedIds.length] });
    changed.elara.verify = await verifyElara(src, dst.elara);
    if (changed.elara.verify!.exitCode !== 0) r.anomalies.push(`elara-sync verify after 1%-changed: exit ${changed.elara.verify!.exitCode}: ${changed.elara.verify!.output}`);
    r.propagation = { seed: await checkPropagation(dst.seed, cs), elara: await checkPropagation(dst.elara, cs) };
    if (r.propagation.elara.stale || r.propagation.elara.stillPresent) {
      r.anomalies.push(`elara target after 1%-changed: ${r.propagation.elara.stale} updated rows stale, ${r.propagation.elara.stillPresent} deleted rows present`);
    }
    expectCounts(r, 'elara 1%-changed', await countRows(dst.elara), await countRows(src));
  } finally {
    await dropDatabases(names);
  }
  return r;
}

// ---------------------------------------------------------------- report

const n0 = (x: number) => Math.round(x).toLocaleString('en-US');
const sec = (t?: ToolRun) => (t ? `${t.s.toFixed(2)}${t.ok ? '' : ' FAILED'}` : '—');
const mb = (e?: ElaraRun) => (e?.peakRssMb == null ? '—' : e.peakRssMb.toFixed(0));
const ratio = (a?: ToolRun, b?: ToolRun) => (a && b ? a.s / b.s : NaN);

function elaraCounts(e?: ElaraRun): string {
  if (!e?.json) return 'no --json';
  return e.json.tables.map((t) => `${t.table} +${n0(t.inserted)} ~${n0(t.updated)} -${n0(t.deleted)}${t.conflicts ? ` !${t.conflicts}` : ''}`).join(', ');
}

function propagatedCell(r: SizeResult, step: Step): string {
  const s = r.steps[step];
  const seedIns = s.seed?.inserted ? `seed: +${n0(s.seed.inserted.orgs)}/+${n0(s.seed.inserted.users)}` : 'seed: ?';
  if (step === 'full') return `${seedIns}; elara: ${elaraCounts(s.elara)}`;
  if (step === 'no-change') return `${seedIns} (re-sent all rows); elara: ${elaraCounts(s.elara)}`;
  const p = r.propagation;
  const seed = p ? `seed: NO (${n0(p.seed.stale)} updated rows stale, ${n0(p.seed.stillPresent)} deleted rows still present)` : 'seed: ?';
  const ver = s.elara?.verify ? `, verify exit ${s.elara.verify.exitCode}` : '';
  const elara = p ? `elara: ${p.elara.stale || p.elara.stillPresent ? 'NO' : 'yes'} (${elaraCounts(s.elara)}${ver})` : 'elara: ?';
  return `${seed}; ${elara}`;
}

function targetsLine(r: SizeResult, smallest?: SizeResult): string {
  const st = r.steps;
  const mark = (ok: boolean) => (ok ? 'met' : 'MISSED');
  const full = ratio(st.full.elara, st.full.plain);
  const same = ratio(st['no-change'].elara, st['no-change'].seed);
  const chg = ratio(st['1%-changed'].elara, st['1%-changed'].seed);
  const peak = maxRss(r);
  const parts = [
    `full ${full.toFixed(2)}× plain (≤ 1.30×: ${mark(full <= 1.3)})`,
    `no-change ${(same * 100).toFixed(0)}% of seed (≤ 10%: ${mark(same <= 0.1)})`,
    `1%-changed ${(chg * 100).toFixed(0)}% of seed (≤ 20%: ${mark(chg <= 0.2)}${r.propagation && !r.propagation.elara.stale && !r.propagation.elara.stillPresent ? ', every change propagated' : ', NOT every change propagated'})`,
    `peak RSS ${peak.toFixed(0)} MB (< 200 MB: ${mark(peak < 200)})`,
    `anonymized full ${ratio(st.full.anon, st.full.elara).toFixed(2)}× raw (≤ 1.50×: ${mark(ratio(st.full.anon, st.full.elara) <= 1.5)})`,
    `anonymized no-change ${ratio(st['no-change'].anon, st['no-change'].elara).toFixed(2)}× raw (≤ 1.20×: ${mark(ratio(st['no-change'].anon, st['no-change'].elara) <= 1.2)})`,
  ];
  if (smallest && smallest !== r) {
    const growth = peak / maxRss(smallest) - 1;
    parts.push(`RSS vs N=${n0(smallest.users)}: ${growth >= 0 ? '+' : ''}${(growth * 100).toFixed(0)}% (within 20%: ${mark(Math.abs(growth) <= 0.2)})`);
  }
  return `targets N=${n0(r.users)}: ${parts.join('; ')}`;
}

function maxRss(r: SizeResult): number {
  return Math.max(...STEPS.map((s) => r.steps[s].elara?.peakRssMb ?? NaN));
}

function timeBreakdown(r: SizeResult): string[] {
  return STEPS.flatMap((step) => {
    const e = r.steps[step].elara;
    if (!e?.json) return [];
    const engine = e.json.durationMs / 1000;
    const tables = e.json.tables.map((t) => `${t.table} ${(t.durationMs / 1000).toFixed(2)} s`).join(', ');
    // What change detection cost on each side (staging's own row versions are checked too, so a
    // change made behind the engine's back is found): per table, source / staging check seconds.
    const checks = e.json.tables.map((t) => (t.checks
      ? `${t.table} ${(t.checks.sourceMs / 1000).toFixed(2)}/${(t.checks.targetMs / 1000).toFixed(2)} s (${t.checks.source}/${t.checks.target}, compared ${t.checks.compared})`
      : `${t.table} ?`)).join(', ');
    return [`  elara ${step.padEnd(10)}: wall ${e.s.toFixed(2)} s = engine ${engine.toFixed(2)} s (${tables}) + start-up/connect/exit ${(e.s - engine).toFixed(2)} s; verify ${e.verify ? `${e.verify.s.toFixed(2)} s, exit ${e.verify.exitCode}` : 'not run'}; ${e.startup}`,
      `    change detection, production/staging: ${checks}`];
  });
}

function renderSize(r: SizeResult, smallest?: SizeResult): string {
  const head = `N = ${n0(r.users)} users, ${n0(r.orgs)} organizations (source User table ${r.sourceUserMb.toFixed(0)} MB incl. indexes; generated in ${r.generateS.toFixed(1)} s)`
    + (r.changeSet ? `; change set: ${n0(r.changeSet.updated)} users updated, ${n0(r.changeSet.deleted)} deleted` : '');
  const rows = STEPS.map((step) => {
    const s = r.steps[step];
    const rat = step === 'full'
      ? `${ratio(s.elara, s.plain).toFixed(2)}× plain (seed ${ratio(s.seed, s.plain).toFixed(2)}×)`
      : `${ratio(s.elara, s.seed).toFixed(2)}× seed`;
    return `| ${step} | ${sec(s.seed)} | ${sec(s.plain)} | ${sec(s.elara)} | ${rat} | ${sec(s.anon)} | ${ratio(s.anon, s.elara).toFixed(2)}× raw | ${mb(s.elara)} | ${propagatedCell(r, step)} |`;
  });
  return [
    head,
    '',
    '| step | seed pipeline s | plain COPY pipe s | elara-sync s | ratio | elara anonymized s | anonymized ratio | elara peak RSS MB | propagated |',
    '|---|---:|---:|---:|---|---:|---|---:|---|',
    ...rows,
    '',
    targetsLine(r, smallest),
    ...timeBreakdown(r),
    ...(r.anomalies.length ? ['ANOMALIES:', ...r.anomalies.map((a) => `  - ${a}`)] : []),
  ].join('\n');
}

function gitInfo(): { head: string; dirty: string[] } {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', 'packages/sync'], { cwd: ROOT, encoding: 'utf8' }).split('\n').filter(Boolean);
    return { head, dirty };
  } catch {
    return { head: 'unknown', dirty: [] };
  }
}

async function serverVersion(): Promise<string> {
  // TLS as BENCH_ADMIN_URL says (sslmode, sslrootcert), like every connection of the project.
  const c = createClient(ADMIN_URL);
  await c.connect();
  try {
    return (await c.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]!.v;
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const startedAt = new Date();
  const git = gitInfo();
  const pgVersion = await serverVersion();
  log(`building the elara-sync bundle (scripts/build-cli.mjs)`);
  await buildBundle();

  const results: SizeResult[] = [];
  for (const users of SIZES) results.push(await benchSize(users));

  const smallest = results.reduce<SizeResult | undefined>((a, b) => (a && a.users <= b.users ? a : b), undefined);
  const rssMethod = results.flatMap((r) => STEPS.map((s) => r.steps[s].elara?.rssMethod)).find(Boolean) ?? 'none';
  const header = [
    `elara-sync benchmark (elara-sync runs as the CronJob does: node --max-semi-space-size=1 …), ${startedAt.toISOString()}: git ${git.head}${git.dirty.length ? ` + ${git.dirty.length} uncommitted file(s) in packages/sync` : ''}`
      + `${builds > 1 ? ` (packages/sync/src changed during the run: bundle built ${builds} times, now at ${gitInfo().head})` : ''}, `
      + `Node ${process.versions.node}, PostgreSQL ${pgVersion}, ${availableParallelism()} cores; whole-process wall times (start-up included); `
      + `RSS via ${rssMethod === 'time' ? '/usr/bin/time %M' : '/proc/<pid>/status VmHWM polled every 50 ms'}.`,
    'Ratios: full = elara / plain COPY pipe; re-runs = elara / seed pipeline. Propagated: +inserted ~updated -deleted per table.',
  ].join('\n');
  const text = [header, ...results.map((r) => renderSize(r, smallest))].join('\n\n');

  const dir = join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `sync-${startedAt.toISOString().replace(/:/g, '-').replace(/\..*/, '')}.md`);
  writeFileSync(file, `# npm run bench:sync -- --sizes ${SIZES.join(',')}\n\n${text}\n`);

  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ startedAt, git, node: process.versions.node, pg: pgVersion, cores: availableParallelism(), sizes: results }, null, 2)}\n`);
    process.stderr.write(`${text}\n`);
  } else {
    process.stdout.write(`${text}\n`);
  }
  log(`written to ${file}`);
  return results.some((r) => r.anomalies.length) ? 1 : 0;
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
