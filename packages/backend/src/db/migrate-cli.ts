// npm run db:migrate — migrates DATABASE_URL (with the outbox schema) and, when set,
// STAGING_DATABASE_URL. Prints only redacted URLs.
import { migrateDatabase } from './migrate.ts';
import { redactUrl } from '@elara/sync';

const prod = process.env.DATABASE_URL;
const staging = process.env.STAGING_DATABASE_URL;
if (!prod) {
  console.error('db:migrate: DATABASE_URL is not set. Set it to the production database URL (and STAGING_DATABASE_URL for staging). `npm start` migrates its embedded databases by itself.');
  process.exit(2);
}
try {
  await migrateDatabase(prod, { outbox: true });
  console.log(`migrated production ${redactUrl(prod)}`);
  if (staging) {
    await migrateDatabase(staging);
    console.log(`migrated staging ${redactUrl(staging)}`);
  } else {
    console.log('STAGING_DATABASE_URL is not set; staging not migrated');
  }
} catch (err) {
  console.error(`db:migrate failed: ${(err as Error).message}`);
  process.exit(1);
}
