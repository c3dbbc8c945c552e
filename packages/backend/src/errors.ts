// API errors: always {statusCode, code, error, message} (+ details for validation). Messages never
// contain SQL, stack traces, internal ids, row values or secrets.
import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyInstance } from 'fastify';
import type { z } from 'zod';

export interface FieldIssue { field: string; message: string }

export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly details?: FieldIssue[],
    readonly headers?: Record<string, string>,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export function errorBody(statusCode: number, code: string, message: string, details?: FieldIssue[]) {
  return { statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message, ...(details ? { details } : {}) };
}

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
    ? new ApiError(400, 'E_UNKNOWN_FIELD', `unknown field(s): ${details.filter((d) => d.message === 'unknown field').map((d) => d.field).join(', ')}`, details)
    : new ApiError(400, 'E_VALIDATION', `invalid field(s): ${[...new Set(details.map((d) => d.field))].join(', ')}`, details);
}

const FASTIFY_ERRORS: Record<string, [number, string, string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'E_BODY_TOO_LARGE', 'request body is larger than 16 KiB'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'E_UNSUPPORTED_MEDIA_TYPE', 'send the body as application/json'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, 'E_BAD_REQUEST', 'Content-Length does not match the body'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'E_INVALID_JSON', 'the JSON body is empty'],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'E_INVALID_JSON', 'the body is not valid JSON'],
};

export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | ApiError, request, reply) => {
    if (err instanceof ApiError) {
      if (err.headers) reply.headers(err.headers);
      return reply.code(err.statusCode).send(errorBody(err.statusCode, err.code, err.message, err.details));
    }
    const known = err.code ? FASTIFY_ERRORS[err.code] : undefined;
    if (known) return reply.code(known[0]).send(errorBody(known[0], known[1], known[2]));
    const status = typeof err.statusCode === 'number' ? err.statusCode : 500;
    if (status >= 400 && status < 500) {
      // Includes JSON syntax errors and prototype-poisoning rejections from the body parser.
      const code = err instanceof SyntaxError || /JSON/i.test(err.message) ? 'E_INVALID_JSON' : 'E_BAD_REQUEST';
      return reply.code(status).send(errorBody(status, code, code === 'E_INVALID_JSON' ? 'the body is not valid JSON' : 'bad request'));
    }
    request.log.error({ error: { type: err.name, code: (err as { code?: string }).code, message: err.message } }, 'request failed');
    return reply.code(500).send(errorBody(500, 'E_INTERNAL', 'internal error; the request was not completed'));
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send(errorBody(404, 'E_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`));
  });
}
