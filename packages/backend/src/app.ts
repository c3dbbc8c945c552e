// Builds the fastify app: plugins, routes, error handling. Never listens (server.ts does), so tests
// use app.inject(). Other parts of Elara add routes through `plugins` (or app.register before
// ready), e.g. the status page and dashboard: buildApp(deps, { plugins: [statusRoutes] }).
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyPluginAsync } from 'fastify';
import type pg from 'pg';
import type { Config } from './config.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import { createPasswordHasher, type PasswordHasher } from './auth/passwords.ts';
import { createTokenSigner, type TokenSigner } from './auth/tokens.ts';
import { createDatabase } from './db/client.ts';
import { errorBody, installErrorHandlers } from './errors.ts';
import { authRoutes } from './routes/auth.ts';

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

export interface BuildAppOptions {
  /** Extra fastify plugins (routes, hooks), registered after the core routes; each receives { deps }. */
  plugins?: Array<FastifyPluginAsync<{ deps: AppDeps }>>;
}

declare module 'fastify' {
  interface FastifyInstance {
    elara: AppDeps;
  }
}

export const BODY_LIMIT_BYTES = 16 * 1024;

export async function buildApp(input: AppDepsInput, options: BuildAppOptions = {}): Promise<FastifyInstance> {
  const deps: AppDeps = {
    ...input,
    hasher: input.hasher ?? createPasswordHasher(input.config.hashConcurrency),
    tokens: input.tokens ?? createTokenSigner(input.config.jwt),
  };
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: BODY_LIMIT_BYTES,
    trustProxy: deps.config.trustProxy,
    // Incoming request ids are not trusted as-is; fastify generates its own.
    requestIdHeader: false,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    return503OnClosing: true,
  });
  app.decorate('elara', deps);
  // JSON only: without fastify's default text/plain parser, any other body is a 415.
  app.removeContentTypeParser('text/plain');
  installErrorHandlers(app);

  app.addHook('onResponse', async (req, reply) => {
    deps.metrics.httpRequestsTotal.inc({ method: req.method, route: req.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) });
  });

  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/ready', async (_req, reply) => {
    try {
      await deps.prodPool.query('SELECT 1');
      return { status: 'ready', stagingSync: deps.stagingPool ? 'on' : 'off' };
    } catch {
      return reply.code(503).send(errorBody(503, 'E_NOT_READY', 'production database is not reachable'));
    }
  });
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', deps.metrics.registry.contentType);
    return deps.metrics.registry.metrics();
  });

  const db = createDatabase(deps.prodPool);
  await app.register(authRoutes, { prefix: '/api/v2/auth', deps, db });
  for (const plugin of options.plugins ?? []) await app.register(plugin, { deps });
  return app;
}
