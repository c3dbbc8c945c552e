// npm run db:migrate — migrates DATABASE_URL (with the outbox schema) and, when set,
// STAGING_DATABASE_URL. Prints only redacted URLs. TLS as the URLs (and PGSSL*) say; with
// NODE_ENV=production, plaintext to a host on the network is refused as at the server's start.
import { migrateDatabase } from './migrate.ts';
import { applyTlsEnv, redactUrl, refusedInProduction } from '@elara/sync';

const prod = process.env.DATABASE_URL ? applyTlsEnv(process.env.DATABASE_URL, process.env) : undefined;
const staging = process.env.STAGING_DATABASE_URL ? applyTlsEnv(process.env.STAGING_DATABASE_URL, process.env) : undefined;
if (!prod) {
  console.error('db:migrate: DATABASE_URL is not set. Set it to the production database URL (and STAGING_DATABASE_URL for staging). `npm start` migrates its embedded databases by itself.');
  process.exit(2);
}
for (const [name, url] of [['DATABASE_URL', prod], ['STAGING_DATABASE_URL', staging]] as const) {
  const refused = url ? refusedInProduction(url) : null;
  if (refused) {
    console.error(`db:migrate: ${name} ${refused}, and NODE_ENV=production refuses that. Use sslmode=verify-full&sslrootcert=<the server's CA file>, or set DB_ALLOW_PLAINTEXT=true on a network you trust.`);
    process.exit(2);
  }
}

try {
  await migrateDatabase(prod, { outbox: true, label: { label: 'production', setting: 'DATABASE_URL' } });
  console.log(`migrated production ${redactUrl(prod)}`);
  if (staging) {
    await migrateDatabase(staging, { label: { label: 'staging', setting: 'STAGING_DATABASE_URL' } });
    console.log(`migrated staging ${redactUrl(staging)}`);
  } else {
    console.log('STAGING_DATABASE_URL is not set; staging not migrated');
  }
} catch (err) {
  const hint = (err as { hint?: unknown }).hint;
  console.error(`db:migrate failed: ${(err as Error).message}${typeof hint === 'string' ? `\n  what to do: ${hint}` : ''}`);
  process.exit(1);
}
