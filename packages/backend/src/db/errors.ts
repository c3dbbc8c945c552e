// What may be logged of a database error, and whether it is a transient unavailability.
//
// drizzle wraps driver errors in a DrizzleQueryError whose message is the SQL text followed by its
// parameters (an email, an argon2 hash); PostgreSQL puts row values in `detail` ("Key (email)=(…)
// already exists") and, for data exceptions (class 22), in the message itself ("invalid input
// syntax for type uuid: "…""). So a logged error keeps the SQLSTATE and the names PostgreSQL gives
// (table, column, constraint) and never the query, its parameters, the detail or a quoted value.

export interface LoggedError {
  type: string;
  code?: string;
  message: string;
  table?: string;
  column?: string;
  constraint?: string;
  /** What to do, for errors that carry one (TLS failures: which setting, which file). */
  hint?: string;
  cause?: LoggedError;
}

import { isTlsError, scrubSecrets } from '@elara/sync';

const SQLSTATE = /^[0-9A-Z]{5}$/;

const isQueryWrapper = (e: Error) => e.name === 'DrizzleQueryError' || e.message.startsWith('Failed query:');

/** The message of a PostgreSQL or Node error with anything that can hold a value removed. */
function safeMessage(e: Error, code: string | undefined): string {
  if (isQueryWrapper(e)) return 'query failed';
  let m = scrubSecrets(e.message, []);
  // Data exceptions quote the offending input; the other classes quote only names.
  if (code?.startsWith('22')) m = m.replace(/"[^"]*"/g, '"…"');
  return m.split('\n')[0]!.slice(0, 500);
}

export function describeError(err: unknown, depth = 0): LoggedError {
  if (!(err instanceof Error)) return { type: typeof err, message: typeof err === 'string' ? '(non-Error thrown)' : String(err) };
  const e = err as Error & { code?: unknown; table?: unknown; column?: unknown; constraint?: unknown };
  const code = typeof e.code === 'string' ? e.code : undefined;
  const out: LoggedError = { type: e.name, ...(code ? { code } : {}), message: safeMessage(e, code) };
  const hint = (e as { hint?: unknown }).hint;
  if (typeof hint === 'string') out.hint = scrubSecrets(hint, []);
  if (code && SQLSTATE.test(code)) {
    for (const k of ['table', 'column', 'constraint'] as const) if (typeof e[k] === 'string') out[k] = e[k] as string;
  }
  if (e.cause !== undefined && depth < 5) out.cause = describeError(e.cause, depth + 1);
  return out;
}

// Class 08 (connection exception) is matched by prefix below.
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE',
  '57P01', '57P02', '57P03', // admin shutdown, crash shutdown, cannot connect now (starting up)
  '53300', // too many connections
  '55P03', // lock_not_available (lock_timeout)
  '57014', // query_canceled (statement_timeout)
  '40001', '40P01', // serialization failure, deadlock: retrying succeeds
]);

/** True for errors that mean "the database is briefly out of reach", which a retry can fix. */
export function isUnavailable(err: unknown, depth = 0): boolean {
  if (!(err instanceof Error) || depth > 5) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (UNAVAILABLE_CODES.has(code) || code.startsWith('08'))) return true;
  // pg-pool and pg raise these without a code.
  if (/timeout exceeded when trying to connect|Connection terminated|connect ECONNREFUSED/i.test(err.message)) return true;
  // TLS failing (a certificate or CA rotated on one side only) makes production unreachable, not a bug.
  if (isTlsError(err)) return true;
  if (err instanceof AggregateError && err.errors.some((x) => isUnavailable(x, depth + 1))) return true;
  return isUnavailable(err.cause, depth + 1);
}
