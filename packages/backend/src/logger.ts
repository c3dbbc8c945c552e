// One pino logger for the API and the sync worker. Structured JSON; secrets are redacted by path as
// a second line of defence (the code never passes them to the logger in the first place).
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

export const REDACT_PATHS = [
  'req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie',
  'password', 'passwordHash', 'apiSecret', 'accessToken', 'refreshToken', 'token', 'secret',
  '*.password', '*.passwordHash', '*.apiSecret', '*.accessToken', '*.refreshToken', '*.token', '*.secret',
  'body.password', 'req.body.password',
];

export function createLogger(level = 'info', destination?: DestinationStream): Logger {
  return pino({
    level,
    base: { service: 'elara-backend' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  }, destination);
}
