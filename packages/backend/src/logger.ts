// One pino logger for the API and the sync worker: JSON lines, or pino-pretty's readable lines when
// stdout is a terminal. Secrets are kept out in three ways: the code never passes them to the
// logger; request URLs are logged as their path only (a query string can carry a token); and
// known secret fields are redacted by path as a second line of defence.
import { pino, type DestinationStream, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

export const REDACT_PATHS = [
  'req.headers.authorization', 'req.headers.cookie', 'headers.authorization', 'headers.cookie',
  'password', 'passwordHash', 'apiSecret', 'accessToken', 'refreshToken', 'token', 'secret',
  '*.password', '*.passwordHash', '*.apiSecret', '*.accessToken', '*.refreshToken', '*.token', '*.secret',
  'body.password', 'req.body.password',
];

/** The path of a request URL, without its query string or fragment. */
export const urlPath = (url: string | undefined): string => (url ?? '').split(/[?#]/, 1)[0]!;

interface RequestLike { method?: string; url?: string; host?: string; hostname?: string; ip?: string; socket?: { remotePort?: number } }

const serializers = {
  // Replaces fastify's request serializer, which logs the URL with its query string.
  req: (req: RequestLike) => ({ method: req.method, url: urlPath(req.url), host: req.host ?? req.hostname, remoteAddress: req.ip, remotePort: req.socket?.remotePort }),
};

export function createLogger(level = 'info', destination?: DestinationStream): Logger {
  const dest = destination ?? (process.stdout.isTTY ? pretty({ colorize: true, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service' }) : undefined);
  return pino({
    level,
    base: { service: 'elara-backend' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    serializers,
  }, dest);
}
