// The production entry point (Kubernetes): serves DATABASE_URL (required) and STAGING_DATABASE_URL.
// Unlike main.ts (`npm start`) it never starts an embedded PostgreSQL, so a missing Secret is a
// clear start-up error instead of a pod quietly serving an empty local database.
import { ConfigError } from './config.ts';
import { startServer } from './server.ts';

try {
  await startServer();
} catch (err) {
  const hint = (err as { hint?: unknown }).hint;
  process.stderr.write(`[elara] ${err instanceof ConfigError ? err.message : `start-up failed: ${(err as Error).message}${typeof hint === 'string' ? `; what to do: ${hint}` : ''}`}\n`);
  process.exit(1);
}
