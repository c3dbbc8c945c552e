// What every part of the app is built from. Its own module so that routes and plugins can name
// these types without importing app.ts (which imports them: no import cycle).
import type pg from 'pg';
import type { Config } from './config.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import type { PasswordHasher } from './auth/passwords.ts';
import type { TokenSigner } from './auth/tokens.ts';

export interface AppDeps {
  config: Config;
  prodPool: pg.Pool;
  /** null when STAGING_DATABASE_URL is unset: staging sync is off. */
  stagingPool: pg.Pool | null;
  logger: Logger;
  metrics: Metrics;
  hasher: PasswordHasher;
  tokens: TokenSigner;
}

export type AppDepsInput = Omit<AppDeps, 'hasher' | 'tokens'> & Partial<Pick<AppDeps, 'hasher' | 'tokens'>>;

declare module 'fastify' {
  interface FastifyInstance {
    elara: AppDeps;
  }
}
