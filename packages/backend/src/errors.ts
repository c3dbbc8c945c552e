// API errors: always {statusCode, code, error, message} (+ details for validation). Messages never
// contain SQL, stack traces, internal ids, row values or secrets. ERROR_CODES is the one list of
// codes the API answers with; docs/errors.md documents the same list (a test compares them).
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance } from 'fastify';
import type { z } from 'zod';
import { describeError, isUnavailable } from './db/errors.ts';

export const ERROR_CODES = {
  E_VALIDATION: { status: 400, when: 'A field is invalid or missing, or the body is not a JSON object. `details: [{field, message}]` names each field.' },
  E_UNKNOWN_FIELD: { status: 400, when: 'The body has fields the endpoint does not take (`details` names them).' },
  E_INVALID_JSON: { status: 400, when: 'The body is malformed JSON, or it contains `__proto__` or `constructor` keys.' },
  E_BAD_REQUEST: { status: 400, when: 'The HTTP request itself is malformed: a bad chunk size, a duplicate Content-Length, Content-Length together with Transfer-Encoding, a body shorter or longer than its Content-Length, a bad URL.' },
  E_INVALID_CREDENTIALS: { status: 401, when: 'Login failed (the response is the same for an unknown email and a wrong password), or the password re-entered to erase an account (`DELETE /api/v2/auth/me`) is wrong; nothing was erased.' },
  E_UNAUTHORIZED: { status: 401, when: 'No access token (or operations token) was sent.' },
  E_INVALID_TOKEN: { status: 401, when: 'The token is invalid, expired, revoked, or its claims are malformed.' },
  E_TOKEN_REUSED: { status: 401, when: 'A rotated refresh token was presented again; its family is now revoked.' },
  E_NOT_FOUND: { status: 404, when: 'No such route.' },
  E_REQUEST_TIMEOUT: { status: 408, when: 'The headers or the body did not arrive within `REQUEST_TIMEOUT_MS` (30 s); the connection is closed.' },
  E_EMAIL_TAKEN: { status: 409, when: 'The email is already registered, in any letter case.' },
  E_BODY_TOO_LARGE: { status: 413, when: 'The body is over 16 KiB.' },
  E_UNSUPPORTED_MEDIA_TYPE: { status: 415, when: 'The body is not `application/json`.' },
  E_RATE_LIMITED: { status: 429, when: 'Too many attempts. The `Retry-After` header says when to try again.' },
  E_HEADERS_TOO_LARGE: { status: 431, when: 'The request headers are larger than the server accepts.' },
  E_INTERNAL: { status: 500, when: 'A bug. It is logged without request data, SQL or parameters.' },
  E_UNAVAILABLE: { status: 503, when: 'The server is shutting down, or the production database is briefly unavailable (unreachable, restarting, out of connections, a lock or statement timeout). `Retry-After` says when to try again; nothing was changed.' },
  E_NOT_READY: { status: 503, when: '`/ready` only: production is unreachable.' },
} as const satisfies Record<string, { status: number; when: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface FieldIssue { field: string; message: string }

export class ApiError extends Error {
  readonly statusCode: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly extra: { details?: FieldIssue[]; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = 'ApiError';
    this.statusCode = ERROR_CODES[code].status;
  }
}

export function errorBody(code: ErrorCode, message: string, details?: FieldIssue[]) {
  const statusCode = ERROR_CODES[code].status;
  return { statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message, ...(details ? { details } : {}) };
}

/** Seconds a client should wait before retrying a 503 E_UNAVAILABLE. */
export const RETRY_AFTER_SECONDS = 2;

/** zod issues → 400; unknown fields get their own code so clients can tell the two apart. */
export function validationError(error: z.ZodError): ApiError {
  const details: FieldIssue[] = [];
  let unknown = false;
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      unknown = true;
      for (const k of issue.keys) details.push({ field: [...issue.path, k].join('.'), message: 'unknown field' });
    } else {
      details.push({ field: issue.path.join('.') || '(body)', message: issue.message });
    }
  }
  return unknown
    ? new ApiError('E_UNKNOWN_FIELD', `unknown field(s): ${details.filter((d) => d.message === 'unknown field').map((d) => d.field).join(', ')}`, { details })
    : new ApiError('E_VALIDATION', `invalid field(s): ${[...new Set(details.map((d) => d.field))].join(', ')}`, { details });
}

const FASTIFY_ERRORS: Record<string, [ErrorCode, string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: ['E_BODY_TOO_LARGE', 'request body is larger than 16 KiB'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: ['E_UNSUPPORTED_MEDIA_TYPE', 'send the body as application/json'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: ['E_BAD_REQUEST', 'Content-Length does not match the body'],
  FST_ERR_CTP_EMPTY_JSON_BODY: ['E_INVALID_JSON', 'the JSON body is empty'],
  FST_ERR_CTP_INVALID_JSON_BODY: ['E_INVALID_JSON', 'the body is not valid JSON'],
  FST_ERR_BAD_URL: ['E_BAD_REQUEST', 'the URL is malformed'],
};

export const unavailableError = (message: string) =>
  new ApiError('E_UNAVAILABLE', message, { headers: { 'retry-after': String(RETRY_AFTER_SECONDS) } });

export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | ApiError, request, reply) => {
    if (err instanceof ApiError) {
      if (err.extra.headers) reply.headers(err.extra.headers);
      return reply.code(err.statusCode).send(errorBody(err.code, err.message, err.extra.details));
    }
    const known = err.code ? FASTIFY_ERRORS[err.code] : undefined;
    if (known) return reply.code(ERROR_CODES[known[0]].status).send(errorBody(known[0], known[1]));
    const status = typeof err.statusCode === 'number' ? err.statusCode : 500;
    if (status >= 400 && status < 500) {
      // Includes JSON syntax errors and prototype-poisoning rejections from the body parser.
      const json = err instanceof SyntaxError || /JSON/i.test(err.message);
      return reply.code(400).send(json ? errorBody('E_INVALID_JSON', 'the body is not valid JSON') : errorBody('E_BAD_REQUEST', 'bad request'));
    }
    if (isUnavailable(err)) {
      // Production briefly out of reach (restart, failover, pool exhausted, lock timeout): an
      // honest 503 the client may retry, not a 500. Logged as a warning without SQL or values.
      request.log.warn({ error: describeError(err) }, 'production database unavailable; answered 503');
      reply.header('retry-after', String(RETRY_AFTER_SECONDS));
      return reply.code(503).send(errorBody('E_UNAVAILABLE', 'the service is briefly unavailable; retry after a moment'));
    }
    request.log.error({ error: describeError(err) }, 'request failed');
    return reply.code(500).send(errorBody('E_INTERNAL', 'internal error; the request was not completed'));
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send(errorBody('E_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`));
  });
}

/**
 * Node's HTTP parser rejects some requests before fastify sees them (bad chunk size, duplicate
 * Content-Length, Content-Length with Transfer-Encoding, timeouts, huge headers). Answer those in
 * our shape too, then close the connection, as Node's own handler does.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [code, message]: [ErrorCode, string] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? ['E_REQUEST_TIMEOUT', 'the request did not arrive in time; the connection is closed']
      : err.code === 'HPE_HEADER_OVERFLOW' ? ['E_HEADERS_TOO_LARGE', 'the request headers are too large']
        : ['E_BAD_REQUEST', 'the HTTP request is malformed'];
  const body = JSON.stringify(errorBody(code, message));
  const status = ERROR_CODES[code].status;
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}
