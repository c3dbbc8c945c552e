// `npm start`. With DATABASE_URL set it serves that database (and STAGING_DATABASE_URL, if set).
// Without it, it starts an embedded PostgreSQL with elara_production and elara_staging, migrates
// both, marks production, then starts the API, the outbox worker and the reconcile loop
// (`elara-sync run` every 5 minutes, in-process) and prints a curl to try.
import { mkdirSync, writeFileSync } from 'node:fs';
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

let embedded: EmbeddedPostgresHandle | null = null;
try {
  let env = process.env;
  if (!process.env.DATABASE_URL) {
    say('DATABASE_URL is not set: starting the embedded PostgreSQL');
    embedded = await startEmbeddedPostgres(`${REPO_ROOT}.elara/pg`, say);
    say(`embedded data directory: ${embedded.dataDir}`);
    await ensureDatabase(embedded.url('postgres'), 'elara_production');
    await ensureDatabase(embedded.url('postgres'), 'elara_staging');
    // A previous `npm run staging:down` may have left staging refusing connections.
    await allowConnections(embedded.url('postgres'), 'elara_staging');
    const prod = embedded.url('elara_production');
    const staging = embedded.url('elara_staging');
    await migrateDatabase(prod, { outbox: true });
    await markProduction(prod);
    await migrateDatabase(staging);
    say('migrated elara_production and elara_staging');
    env = {
      ...process.env,
      DATABASE_URL: prod,
      STAGING_DATABASE_URL: process.env.STAGING_DATABASE_URL || staging,
      RECONCILE_INTERVAL: process.env.RECONCILE_INTERVAL || '5m',
      // Local only (the embedded server and the API listen on 127.0.0.1): no token for /sync.
      STATUS_OPEN_ON_LOOPBACK: process.env.STATUS_OPEN_ON_LOOPBACK || '1',
    };
    mkdirSync(`${REPO_ROOT}.elara`, { recursive: true });
    writeFileSync(`${REPO_ROOT}.elara/embedded.json`, JSON.stringify({ port: embedded.port }));
  }
  const server = await startServer({ env, afterClose: async () => { await embedded?.stop(); } });
  const body = JSON.stringify({ email: 'ada@example.com', password: 'correct horse battery staple', organizationName: 'Acme Corp', firstName: 'Ada', lastName: 'Lovelace' });
  const lines = [
    '',
    `Elara API ready on ${server.url}`,
    server.stagingPool ? 'Staging sync: on' : 'Staging sync: off (STAGING_DATABASE_URL is not set)',
    '',
    'Register a user:',
    `  curl -sS -X POST ${server.url}/api/v2/auth/register -H 'content-type: application/json' -d '${body}'`,
  ];
  if (embedded) {
    lines.push('', 'Then see it in staging:', `  psql -h 127.0.0.1 -p ${embedded.port} -U postgres elara_staging -c 'SELECT email, "organizationId" FROM "User"'`);
  }
  lines.push('', `Sync dashboard: ${server.url}/sync`);
  if (embedded) {
    lines.push('Reconcile: every 5 minutes in this process; run one now with:',
      `  DATABASE_URL=${embedded.url('elara_production')} STAGING_DATABASE_URL=${embedded.url('elara_staging')} npx elara-sync run`,
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
