// npm run bench:register — registration latency with staging up, down (closed port) and unset, and
// production→staging visibility delay, on real local PostgreSQL (127.0.0.1:5432, as the tests).
// The server runs in this process (startServer, real HTTP on 127.0.0.1); requests are sequential.
// Env: BENCH_N (registrations per scenario and round, default 200), BENCH_ROUNDS (default 2),
// BENCH_PAUSE_MS (pause between registrations, default 0 = back to back; with a pause, the sync of
// one registration does not overlap the next registration on this 2-core machine).
import { createServer } from 'node:net';
import { createClient } from '@elara/sync';
import { createTestDatabase, type TestDatabase } from '@elara/testkit';
import { createLogger } from '../packages/backend/src/logger.ts';
import { migrateDatabase } from '../packages/backend/src/db/migrate.ts';
import { startServer } from '../packages/backend/src/server.ts';

const N = Number(process.env.BENCH_N ?? 200);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const WARMUP = 20;
const PAUSE_MS = Number(process.env.BENCH_PAUSE_MS ?? 0);

type Scenario = 'unset' | 'up' | 'down';

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? NaN;
};

async function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => resolve(p)); });
  });
}

let seq = 0;
function body() {
  seq++;
  return JSON.stringify({ email: `bench${seq}.${process.pid}@example.com`, password: `bench-password-${seq}-xxxxxxxx`, organizationName: `Bench Org ${seq}` });
}

async function main() {
  const dbs: TestDatabase[] = [];
  const mk = async (p: string) => { const d = await createTestDatabase(p); dbs.push(d); return d; };
  try {
    const prod: Record<Scenario, TestDatabase> = { unset: await mk('bench_reg_prod_unset'), up: await mk('bench_reg_prod_up'), down: await mk('bench_reg_prod_down') };
    const staging = await mk('bench_reg_staging');
    for (const d of Object.values(prod)) await migrateDatabase(d.url, { outbox: true });
    await migrateDatabase(staging.url);
    const admin = createClient(staging.url);
    await admin.connect();
    await admin.query(`CREATE FUNCTION public.bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_notify('bench_user', NEW.id::text); RETURN NEW; END $$;
      CREATE TRIGGER bench_notify AFTER INSERT ON "User" FOR EACH ROW EXECUTE FUNCTION public.bench_notify();
      -- The engine applies with session_replication_role = replica, where ordinary triggers do not fire.
      ALTER TABLE "User" ENABLE ALWAYS TRIGGER bench_notify;`);
    const arrivals = new Map<string, number>();
    const listener = createClient(staging.url);
    listener.on('error', () => {});
    admin.on('error', () => {});
    await listener.connect();
    await listener.query('LISTEN bench_user');
    listener.on('notification', (n) => { if (n.payload) arrivals.set(n.payload, performance.now()); });

    const downUrl = `postgresql://postgres@127.0.0.1:${await closedPort()}/nowhere`;
    const latency: Record<Scenario, number[]> = { unset: [], up: [], down: [] };
    const visibility: number[] = [];
    const logger = createLogger('silent');
    let syncSum = 0;
    let syncCount = 0;

    for (let round = 0; round < ROUNDS; round++) {
      for (const sc of ['unset', 'up', 'down'] as Scenario[]) {
        const server = await startServer({
          env: {
            DATABASE_URL: prod[sc].url,
            STAGING_DATABASE_URL: sc === 'unset' ? undefined : sc === 'up' ? staging.url : downUrl,
            PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'error',
            JWT_SECRET: 'bench-secret-bench-secret-bench-secret-0123',
            RATE_LIMIT_IP_PER_MINUTE: '10000000', RATE_LIMIT_EMAIL_PER_HOUR: '10000000',
            STAGING_CONNECT_TIMEOUT_MS: '1000',
          },
          logger,
          handleSignals: false,
        });
        const responded = new Map<string, number>();
        try {
          for (let i = 0; i < WARMUP + N; i++) {
            const t0 = performance.now();
            const res = await fetch(`${server.url}/api/v2/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: body() });
            const json = (await res.json()) as { user?: { id: string } };
            const t1 = performance.now();
            if (res.status !== 201) throw new Error(`registration failed with ${res.status} in scenario ${sc}`);
            if (i >= WARMUP) {
              latency[sc].push(t1 - t0);
              if (sc === 'up') responded.set(json.user!.id, t1);
            }
            if (PAUSE_MS > 0) await new Promise((r) => setTimeout(r, PAUSE_MS));
          }
          if (sc === 'up') {
            const h = (await server.metrics.immediateSyncDuration.get()).values;
            syncSum += h.find((v) => v.metricName?.endsWith('_sum'))?.value ?? 0;
            syncCount += h.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0;
            const deadline = Date.now() + 10_000;
            while ([...responded.keys()].some((id) => !arrivals.has(id)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
            for (const [id, t] of responded) {
              const a = arrivals.get(id);
              if (a === undefined) throw new Error('a registration did not reach staging within 10 s');
              visibility.push(Math.max(0, a - t));
            }
          }
        } finally {
          await server.close();
        }
      }
    }
    await listener.end();
    await admin.end();

    const base50 = pct(latency.unset, 50);
    const base99 = pct(latency.unset, 99);
    const rows = [
      ['staging unset (baseline)', latency.unset],
      ['staging up', latency.up],
      ['staging down (closed port)', latency.down],
    ] as const;
    const f = (x: number) => x.toFixed(2).padStart(8);
    console.log(`\nregistration latency, ${N * ROUNDS} sequential requests per scenario (${ROUNDS} interleaved rounds, ${WARMUP} warm-up each, ${PAUSE_MS ? `${PAUSE_MS} ms pause between requests` : 'back to back'}), HTTP on 127.0.0.1`);
    console.log('| scenario                   |  p50 ms  |  p99 ms  | p50 vs unset | p99 vs unset |');
    console.log('|----------------------------|----------|----------|--------------|--------------|');
    for (const [name, xs] of rows) {
      console.log(`| ${name.padEnd(26)} | ${f(pct(xs, 50))} | ${f(pct(xs, 99))} | ${((pct(xs, 50) / base50 - 1) * 100).toFixed(1).padStart(10)} % | ${((pct(xs, 99) / base99 - 1) * 100).toFixed(1).padStart(10)} % |`);
    }
    console.log(`\nproduction→staging visibility (HTTP 201 received → staging INSERT notified), staging up, n=${visibility.length}`);
    console.log('|  p50 ms  |  p99 ms  |  max ms  |');
    console.log('|----------|----------|----------|');
    console.log(`| ${f(pct(visibility, 50))} | ${f(pct(visibility, 99))} | ${f(Math.max(...visibility))} |`);
    console.log(`\nmean duration of one immediate sync (syncKeys: read production + apply to staging), from elara_immediate_sync_duration_seconds: ${(syncSum / Math.max(1, syncCount) * 1000).toFixed(2)} ms over ${syncCount} jobs`);

  } finally {
    for (const d of dbs) await d.drop().catch(() => {});
  }
}

await main().catch((err) => {
  console.error(`bench:register failed: ${(err as Error).stack ?? err}`);
  process.exit(1);
});
