// Builds the fastify app: plugins, routes, error handling. Never listens (server.ts does), so tests
// use app.inject(). Other parts of Elara add routes through `plugins` (or app.register before
// ready), e.g. the status page and dashboard: buildApp(deps, { plugins: [statusRoutes] }).
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyPluginAsync } from 'fastify';
import rateLimit from '@fastify/rate-limit';
import { Redis } from 'ioredis';
import type { AppDeps, AppDepsInput } from './deps.ts';
import { createPasswordHasher } from './auth/passwords.ts';
import { createTokenSigner } from './auth/tokens.ts';
import { createDatabase } from './db/client.ts';
import { ApiError, clientErrorHandler, errorBody, installErrorHandlers, RETRY_AFTER_SECONDS } from './errors.ts';
import { describeError } from './db/errors.ts';
import { authRoutes } from './routes/auth.ts';

export type { AppDeps, AppDepsInput } from './deps.ts';

export interface BuildAppOptions {
  /** Extra fastify plugins (routes, hooks), registered after the core routes; each receives { deps }. */
  plugins?: Array<FastifyPluginAsync<{ deps: AppDeps }>>;
}

export const BODY_LIMIT_BYTES = 16 * 1024;

export async function buildApp(input: AppDepsInput, options: BuildAppOptions = {}): Promise<FastifyInstance> {
  const deps: AppDeps = {
    ...input,
    hasher: input.hasher ?? createPasswordHasher(input.config.hashConcurrency),
    tokens: input.tokens ?? createTokenSigner(input.config.jwt),
  };
  const { config } = deps;
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: BODY_LIMIT_BYTES,
    trustProxy: config.trustProxy,
    // Incoming request ids are not trusted as-is; fastify generates its own.
    requestIdHeader: false,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // Slow or stuck clients are cut off: the headers and the whole body must arrive within
    // REQUEST_TIMEOUT_MS (Node checks every second instead of its default 30 s).
    requestTimeout: config.http.requestTimeoutMs,
    http: { headersTimeout: config.http.requestTimeoutMs, connectionsCheckingInterval: 1000 },
    // Our own 503 during shutdown (below), in the error shape and with Retry-After.
    return503OnClosing: false,
    clientErrorHandler,
  });
  app.decorate('elara', deps);
  // JSON only: without fastify's default text/plain parser, any other body is a 415.
  app.removeContentTypeParser('text/plain');
  installErrorHandlers(app);

  let closing = false;
  app.addHook('preClose', async () => { closing = true; });
  app.addHook('onRequest', async (_req, reply) => {
    if (!closing) return;
    reply.header('connection', 'close');
    throw new ApiError('E_UNAVAILABLE', 'the server is shutting down; retry on another instance or in a moment',
      { headers: { 'retry-after': String(RETRY_AFTER_SECONDS) } });
  });
  // Requests that were in flight when shutdown began end their connection with the response.
  app.addHook('onSend', async (_req, reply, payload) => {
    if (closing) reply.header('connection', 'close');
    return payload;
  });

  app.addHook('onResponse', async (req, reply) => {
    deps.metrics.httpRequestsTotal.inc({ method: req.method, route: req.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) });
  });

  // Rate limits (@fastify/rate-limit): per process in memory, or in Redis when REDIS_URL is set so
  // that every replica counts against the same limit. Routes opt in (auth POSTs).
  let redis: Redis | null = null;
  if (config.redisUrl) {
    redis = new Redis(config.redisUrl, { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 2000, lazyConnect: false });
    let warned = 0;
    // Without a listener an unreachable Redis would end the process; warn at most once a minute.
    redis.on('error', (err) => {
      if (Date.now() - warned > 60_000) { warned = Date.now(); deps.logger.warn({ error: describeError(err) }, 'rate-limit store (Redis) unreachable; requests are not limited until it is back'); }
    });
    app.addHook('onClose', async () => { await redis?.quit().catch(() => redis?.disconnect()); });
    // With no offline queue, a command sent before the connection is up fails and (skipOnError)
    // is not counted: wait for it (at most connectTimeout) so the first requests after start-up
    // count too. An unreachable Redis is not waited for any longer: the warning above says so.
    const r = redis;
    if (r.status !== 'ready') {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t);
          r.off('ready', done);
          resolve();
        };
        const t = setTimeout(done, 2000);
        r.once('ready', done);
      });
    }
  }
  await app.register(rateLimit, {
    global: false,
    ...(redis ? { redis, nameSpace: config.rateLimit.redisPrefix } : {}),
    // A Redis outage must not take logins and registrations down with it: fail open, warn (above).
    skipOnError: true,
    errorResponseBuilder: (_req, ctx) => new ApiError('E_RATE_LIMITED', `too many attempts; retry after ${Math.max(1, Math.ceil(ctx.ttl / 1000))} s`),
  });

  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/ready', async (_req, reply) => {
    try {
      await deps.prodPool.query('SELECT 1');
      return { status: 'ready', stagingSync: deps.stagingPool ? 'on' : 'off' };
    } catch {
      return reply.code(503).send(errorBody('E_NOT_READY', 'production database is not reachable'));
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
