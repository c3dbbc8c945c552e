// `npm start`. With DATABASE_URL set it serves that database (and STAGING_DATABASE_URL, if set).
// Without it, it starts an embedded PostgreSQL with elara_production, elara_staging (raw) and
// elara_dev (anonymized), migrates them, marks production, then starts the API, the outbox worker,
// a real-time stream per target (`elara-sync watch`, in-process: the embedded server runs with
// wal_level = logical) and a reconcile loop per target (`elara-sync run` every 5 minutes,
// in-process) and prints a curl.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createClient, quoteIdent } from '@elara/sync';
import { EmbeddedPostgresError, ensureDatabase, startEmbeddedPostgres, type EmbeddedPostgresHandle } from './db/embedded.ts';
import { markProduction, migrateDatabase } from './db/migrate.ts';
import { ConfigError } from './config.ts';
import { startServer } from './server.ts';

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const say = (msg: string) => process.stderr.write(`[elara] ${msg}\n`);

// graphile-worker 0.17 can leave a rejected promise unhandled when it cannot reach production to
// mark a job complete. The job stays locked by this live process until SYNC_STALE_LOCK_SECONDS
// and is then re-run (the apply is idempotent), so log it instead of letting Node end the API process.
process.on('unhandledRejection', (reason) => {
  process.stderr.write(`${JSON.stringify({ level: 50, time: Date.now(), service: 'elara-backend', error: { message: reason instanceof Error ? reason.message : String(reason) }, msg: 'unhandled promise rejection (process kept running)' })}\n`);
});

async function allowConnections(adminUrl: string, database: string): Promise<void> {
  const c = createClient(adminUrl);
  await c.connect();
  try {
    await c.query(`ALTER DATABASE ${quoteIdent(database)} ALLOW_CONNECTIONS true`);
  } finally {
    await c.end();
  }
}

/** The password of every account in the embedded default's anonymized dev copy (unless ELARA_TEST_PASSWORD is set). */
const DEV_PASSWORD = 'elara dev password';

function localSecret(path: string): string {
  if (existsSync(path)) return readFileSync(path, 'utf8').trim();
  const key = randomBytes(24).toString('base64url');
  writeFileSync(path, `${key}\n`, { mode: 0o600 });
  return key;
}

let embedded: EmbeddedPostgresHandle | null = null;
try {
  let env = process.env;
  if (!process.env.DATABASE_URL) {
    say('DATABASE_URL is not set: starting the embedded PostgreSQL');
    embedded = await startEmbeddedPostgres(`${REPO_ROOT}.elara/pg`, say);
    say(`embedded data directory: ${embedded.dataDir}`);
    await ensureDatabase(embedded.url('postgres'), 'elara_production');
    await ensureDatabase(embedded.url('postgres'), 'elara_staging');
    await ensureDatabase(embedded.url('postgres'), 'elara_dev');
    // A previous `npm run staging:down` may have left staging refusing connections.
    await allowConnections(embedded.url('postgres'), 'elara_staging');
    const prod = embedded.url('elara_production');
    const staging = embedded.url('elara_staging');
    await migrateDatabase(prod, { outbox: true });
    await markProduction(prod);
    await migrateDatabase(staging);
    await migrateDatabase(embedded.url('elara_dev'));
    say('migrated elara_production, elara_staging and elara_dev');
    mkdirSync(`${REPO_ROOT}.elara`, { recursive: true, mode: 0o700 });
    env = {
      ...process.env,
      DATABASE_URL: prod,
      STAGING_DATABASE_URL: process.env.STAGING_DATABASE_URL || staging,
      DEV_DATABASE_URL: process.env.DEV_DATABASE_URL || embedded.url('elara_dev'),
      // The anonymized dev copy's key: generated once and kept with the embedded data (mode 0600),
      // so masked values stay the same across restarts.
      ELARA_SYNC_MASK_KEY: process.env.ELARA_SYNC_MASK_KEY || localSecret(`${REPO_ROOT}.elara/mask-key`),
      ELARA_TEST_PASSWORD: process.env.ELARA_TEST_PASSWORD || DEV_PASSWORD,
      RECONCILE_INTERVAL: process.env.RECONCILE_INTERVAL || '5m',
      // Local only (the embedded server and the API listen on 127.0.0.1): no token for /sync.
      STATUS_OPEN_ON_LOOPBACK: process.env.STATUS_OPEN_ON_LOOPBACK || '1',
    };
    writeFileSync(`${REPO_ROOT}.elara/embedded.json`, JSON.stringify({ port: embedded.port }));
  }
  const server = await startServer({ env, afterClose: async () => { await embedded?.stop(); } });
  // The first start takes a snapshot per target: the text below says whether the streams are live.
  const streaming = server.watches.state.mode === 'on' && await server.watches.untilStreaming(20_000);
  const body = JSON.stringify({ email: 'ada@example.com', password: 'correct horse battery staple', organizationName: 'Acme Corp', firstName: 'Ada', lastName: 'Lovelace' });
  const lines = [
    '',
    `Elara API ready on ${server.url}`,
    server.stagingPool ? 'Staging sync: on' : 'Staging sync: off (STAGING_DATABASE_URL is not set)',
    server.watches.state.mode === 'off'
      ? `Real-time sync (watch): off (${server.watches.state.reason}); registrations still reach staging through the outbox, everything else at the next reconcile`
      : streaming
        ? `Real-time sync (watch): streaming to ${server.watches.statuses().map((s) => s.target).join(' and ')}: any change committed in production, by the API or by psql, shows there at once`
        : `Real-time sync (watch): starting (${server.watches.statuses().map((s) => `${s.target}: ${s.phase}${s.lastError ? `, ${s.lastError.code}` : ''}`).join('; ')}); the sync dashboard shows when it streams`,
    '',
    'Register a user:',
    `  curl -sS -X POST ${server.url}/api/v2/auth/register -H 'content-type: application/json' -d '${body}'`,
  ];
  if (embedded) {
    lines.push('', 'Then see it in staging:', `  psql -h 127.0.0.1 -p ${embedded.port} -U postgres elara_staging -c 'SELECT email, "organizationId" FROM "User"'`,
      `and, anonymized, in the dev copy (every account's password there is "${env.ELARA_TEST_PASSWORD}"):`,
      `  psql -h 127.0.0.1 -p ${embedded.port} -U postgres elara_dev -c 'SELECT email, "firstName", "lastName" FROM "User"'`);
    if (server.watches.state.mode === 'on') {
      lines.push('', 'Change production directly; watch streams it to staging (and, masked, to dev) at once:',
        `  psql -h 127.0.0.1 -p ${embedded.port} -U postgres elara_production -c 'UPDATE "Organization" SET name = $$Acme Renamed$$ WHERE name = $$Acme Corp$$'`,
        `  psql -h 127.0.0.1 -p ${embedded.port} -U postgres elara_staging -c 'SELECT name FROM "Organization"'`);
    }
  }
  lines.push('', `Sync dashboard: ${server.url}/sync`);
  if (embedded) {
    lines.push('Reconcile (the safety net behind watch): every 5 minutes in this process, for each target; run one now with:',
      `  DATABASE_URL=${embedded.url('elara_production')} STAGING_DATABASE_URL=${embedded.url('elara_staging')} npx elara-sync run`,
      `  DATABASE_URL=${embedded.url('elara_production')} DEV_DATABASE_URL=${embedded.url('elara_dev')} ELARA_SYNC_MASK_KEY=$(cat ${REPO_ROOT}.elara/mask-key) ELARA_TEST_PASSWORD='${env.ELARA_TEST_PASSWORD}' npx elara-sync run --target dev`,
      'Simulate a staging outage and recovery: npm run staging:down / npm run staging:up');
  }
  lines.push('', 'Stop with Ctrl-C.', '');
  // After the start-up log lines (pino writes asynchronously), not in between them.
  await new Promise<void>((resolve) => server.logger.flush(() => resolve()));
  process.stdout.write(lines.join('\n') + '\n');
} catch (err) {
  if (err instanceof ConfigError || err instanceof EmbeddedPostgresError) {
    say(err.message);
  } else if ((err as { code?: string }).code === 'EADDRINUSE') {
    say(`${(err as Error).message}: the port is taken; set PORT to another one (e.g. PORT=3001 npm start)`);
  } else {
    const hint = (err as { hint?: unknown }).hint;
    say(`start-up failed: ${(err as Error).message}${typeof hint === 'string' ? `; what to do: ${hint}` : ''}`);
  }
  await embedded?.stop().catch(() => {});
  process.exit(1);
}
