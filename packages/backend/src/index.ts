// Public surface of the backend for other packages (status page, tests, bench).
export { buildApp, type AppDeps, type AppDepsInput, type BuildAppOptions } from './app.ts';
export { startServer, type RunningServer, type StartServerOptions } from './server.ts';
export { loadConfig, type Config, ConfigError } from './config.ts';
export { createLogger, type Logger } from './logger.ts';
export { createMetrics, type Metrics } from './metrics.ts';
export { migrateDatabase, migrateOutbox, markProduction } from './db/migrate.ts';
export { redactUrl } from '@elara/sync';
export { syncOrganizationToStaging, syncUserToStaging, syncRegistrationToStaging } from './sync/staging-sync.ts';
export { SYNC_REGISTRATION_TASK, SYNC_TASKS } from './sync/outbox.ts';
