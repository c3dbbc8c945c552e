// The measuring side of bench:cdc, in a worker thread (its own event loop, so the watch engine's
// work on the main thread cannot delay a timestamp): the production writer and one poller per
// target. Plain JavaScript because worker threads do not inherit tsx's loader.
//
// Every transaction writes a marker, "lastLoginAt" = 2030-01-01 + seq ms, seq increasing (one
// writer connection, so commit order = seq order; and both replicas apply in commit order, so
// max(seq) on a target = every seq up to it is visible). A poller runs max("lastLoginAt")
// (indexed) about every 1 ms and stamps each seq with the wall-clock time its first poll returned
// that seq; lag = that − the source's commit timestamp of the seq's transaction
// (track_commit_timestamp = on, pg_xact_commit_timestamp(xmin) of the marked rows, read after the
// scenario; same host clock). The writer's COMMIT-returned time is kept as a cross-check.
//
// Protocol: workerData { urls: { src, native, watch }, orgs, ids }; the main thread sends
// { cmd: 'steady', rate, seconds } | { cmd: 'bursts', count, rows } | { cmd: 'large', rows } | { cmd: 'stop' }
// and gets back { kind: 'result', … } for each scenario, then { kind: 'stopped', polls }.
import { parentPort, workerData } from 'node:worker_threads';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';

const MARK_BASE = "timestamptz '2030-01-01 00:00:00+00'";
const markExpr = (param) => `${MARK_BASE} + ${param}::bigint * interval '1 millisecond'`;
const MAX_SEQ_SQL = `SELECT greatest(-1, coalesce((extract(epoch FROM max("lastLoginAt") - ${MARK_BASE}) * 1000)::bigint, -1)) AS seq FROM "User"`;
const now = () => performance.now();
/** Wall-clock ms with sub-ms precision, comparable with PostgreSQL's commit timestamps (same host clock). */
const wall = () => performance.timeOrigin + performance.now();

async function connect(url) {
  const c = new pg.Client({ connectionString: url, application_name: 'bench-cdc-probe' });
  c.on('error', () => {});
  await c.connect();
  return c;
}

class Poller {
  constructor(c) {
    this.c = c;
    this.seen = new Map();
    this.max = 0;
    this.polls = 0;
    this.running = true;
    this.loop = this.run();
  }

  async run() {
    while (this.running) {
      const t0 = now();
      const r = await this.c.query({ name: 'bench_max_seq', text: MAX_SEQ_SQL, rowMode: 'array' });
      const t = wall();
      this.polls++;
      const m = Number(r.rows[0][0]);
      if (m > this.max) {
        for (let s = this.max + 1; s <= m; s++) this.seen.set(s, t);
        this.max = m;
      }
      const rest = 1 - (now() - t0);
      if (rest > 0) await sleep(rest);
    }
  }

  async waitFor(seq, timeoutMs) {
    const end = now() + timeoutMs;
    while (this.max < seq) {
      if (now() > end) return false;
      await sleep(2);
    }
    return true;
  }

  async stop() {
    this.running = false;
    await this.loop.catch(() => {});
  }
}

const { urls, orgs, ids } = workerData;
const writer = await connect(urls.src);
const pollers = { native: new Poller(await connect(urls.native)), watch: new Poller(await connect(urls.watch)) };
let nextSeq = 1;
/** seq → wall ms when the writer's COMMIT returned (a cross-check; the lag uses the server's commit timestamp). */
const committedAt = new Map();

/** seq → the source's commit timestamp (track_commit_timestamp = on) of the transaction that wrote it, wall ms. */
async function commitTimestamps(first, last) {
  const r = await writer.query(`SELECT seq::int, (extract(epoch FROM min(ts)) * 1000)::float8 AS ms FROM (
      SELECT (extract(epoch FROM "lastLoginAt" - ${MARK_BASE}) * 1000)::bigint AS seq, pg_xact_commit_timestamp(xmin) AS ts
      FROM "User" WHERE "lastLoginAt" BETWEEN ${markExpr('$1')} AND ${markExpr('$2')}) x GROUP BY seq`, [first, last]);
  return new Map(r.rows.map((x) => [x.seq, x.ms]));
}

/** Server commit timestamp → the writer's COMMIT returning, ms (what the client-side stamp would add). */
function replyDelay(seqs, commits) {
  const d = seqs.map((s) => committedAt.get(s) - commits.get(s)).filter(Number.isFinite).sort((a, b) => a - b);
  return { p50: pct(d, 0.5), p99: pct(d, 0.99) };
}

function pct(sorted, p) {
  return sorted.length ? sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)] : NaN;
}

function stats(p, seqs, commits) {
  const lags = [];
  let missing = 0;
  for (const s of seqs) {
    const v = p.seen.get(s);
    const c = commits.get(s);
    if (v === undefined || c === undefined) missing++;
    else lags.push(v - c);
  }
  lags.sort((a, b) => a - b);
  return { n: lags.length, p50: pct(lags, 0.5), p99: pct(lags, 0.99), max: lags.length ? lags[lags.length - 1] : NaN, missing, negative: lags.filter((x) => x < 0).length };
}

async function steady(rate, seconds) {
  const total = Math.round(rate * seconds);
  const interval = 1000 / rate;
  const seqs = [];
  let commitMs = 0;
  const text = `UPDATE "User" SET "lastLoginAt" = ${markExpr('$2')} WHERE id = $1`;
  const t0 = now();
  for (let i = 0; i < total; i++) {
    const wait = t0 + i * interval - now();
    if (wait >= 1) await sleep(wait);
    const seq = nextSeq++;
    const s = now();
    await writer.query({ name: 'bench_login', text, values: [ids[(i * 7919) % ids.length], seq] });
    const c = now();
    committedAt.set(seq, wall());
    commitMs += c - s;
    seqs.push(seq);
  }
  return { seqs, writer: { achievedPerS: total / ((now() - t0) / 1000), meanCommitMs: commitMs / total } };
}

/** One transaction inserting `rows` Users, every row carrying its marker. */
async function insertTx(rows) {
  const seq = nextSeq++;
  const s = now();
  await writer.query(`INSERT INTO "User" (id, email, "passwordHash", "firstName", "lastName", "organizationId", "lastLoginAt")
    SELECT gen_random_uuid(), 'bench.' || $1::bigint || '.' || g || '@insert.example.com',
           '$argon2id$v=19$m=65536,t=3,p=4$' || md5('s' || g) || '$' || md5('h' || g),
           'Bench', 'Row ' || g, md5('org:' || (1 + g % $3::int))::uuid, ${markExpr('$1')}
    FROM generate_series(1, $2::int) g`, [seq, rows, orgs]);
  committedAt.set(seq, wall());
  return { seq, writeMs: now() - s };
}

async function settle(seqs, timeoutMs) {
  const last = Math.max(...seqs);
  const [native, watch] = await Promise.all([pollers.native.waitFor(last, timeoutMs), pollers.watch.waitFor(last, timeoutMs)]);
  return { native, watch };
}

async function handle(msg) {
  if (msg.cmd === 'steady') {
    const { seqs, writer: w } = await steady(msg.rate, msg.seconds);
    const ok = await settle(seqs, msg.timeoutMs);
    return { seqs: seqs.length, writer: w, ok };
  }
  if (msg.cmd === 'bursts') {
    const seqs = [];
    const writeMs = [];
    for (let i = 0; i < msg.count; i++) {
      const { seq, writeMs: ms } = await insertTx(msg.rows);
      seqs.push(seq);
      writeMs.push(ms);
      await settle([seq], msg.timeoutMs);
      await sleep(500);
    }
    const ok = await settle(seqs, msg.timeoutMs);
    return { seqs: seqs.length, writeMs, ok, all: seqs };
  }
  if (msg.cmd === 'large') {
    const { seq, writeMs } = await insertTx(msg.rows);
    const ok = await settle([seq], msg.timeoutMs);
    return { seqs: 1, writeMs: [writeMs], ok, all: [seq] };
  }
  throw new Error(`unknown command ${msg.cmd}`);
}

parentPort.on('message', (msg) => {
  void (async () => {
    if (msg.cmd === 'stop') {
      await Promise.all([pollers.native.stop(), pollers.watch.stop()]);
      await Promise.all([writer, pollers.native.c, pollers.watch.c].map((c) => c.end().catch(() => {})));
      parentPort.postMessage({ kind: 'stopped', polls: pollers.native.polls + pollers.watch.polls });
      return;
    }
    const first = nextSeq;
    try {
      const r = await handle(msg);
      const seqs = Array.from({ length: nextSeq - first }, (_, i) => first + i);
      const commits = await commitTimestamps(first, nextSeq - 1);
      parentPort.postMessage({ kind: 'result', ...r, native: stats(pollers.native, seqs, commits), watch: stats(pollers.watch, seqs, commits), replyDelay: replyDelay(seqs, commits) });
    } catch (e) {
      parentPort.postMessage({ kind: 'error', message: e?.stack ?? String(e) });
    }
  })();
});
parentPort.postMessage({ kind: 'ready' });
