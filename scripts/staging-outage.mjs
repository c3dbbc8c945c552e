#!/usr/bin/env node
// npm run staging:down / staging:up: simulates a staging outage on the embedded default started
// by `npm start` (refuses new connections to elara_staging and ends the open ones), then recovery.
import { readFileSync } from 'node:fs';
import pg from 'pg';

const mode = process.argv[2];
if (mode !== 'down' && mode !== 'up') {
  console.error('usage: node scripts/staging-outage.mjs down|up');
  process.exit(2);
}
let port;
try {
  ({ port } = JSON.parse(readFileSync(new URL('../.elara/embedded.json', import.meta.url), 'utf8')));
} catch {
  console.error('no embedded PostgreSQL found: start it first with npm start');
  process.exit(2);
}
const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
await client.connect();
try {
  if (mode === 'down') {
    await client.query('ALTER DATABASE elara_staging ALLOW_CONNECTIONS false');
    const r = await client.query(`SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE datname = 'elara_staging'`);
    console.log(`staging is down: elara_staging refuses connections (${r.rows[0].n} ended). Registrations keep working; watch /sync. Bring it back with npm run staging:up`);
  } else {
    await client.query('ALTER DATABASE elara_staging ALLOW_CONNECTIONS true');
    console.log('staging is up again: the outbox delivers the waiting registrations; the next reconcile brings lag back to 0');
  }
} finally {
  await client.end();
}
