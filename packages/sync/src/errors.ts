// Errors with a stable code, a message that says what failed (never a row value or a password),
// and a hint that says what to do. Codes are listed in docs/errors.md.
export class SyncError extends Error {
  readonly code: string;
  readonly hint: string;
  readonly table?: string;

  constructor(code: string, message: string, hint: string, options?: { cause?: unknown; table?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SyncError';
    this.code = code;
    this.hint = hint;
    this.table = options?.table;
  }
}
