// Database errors turned into SyncErrors that say which side failed. PostgreSQL messages may quote
// values in DETAIL (a duplicate key's value, a failing row); only the message line and the
// SQLSTATE are kept.
import { SyncError, type Side } from '../errors.ts';

interface DbError { code?: string; message?: string; constraint?: string; column?: string }

/** "message (SQLSTATE 23505, constraint x)": the parts of a database error that carry no row value. */
export function describeDatabaseError(e: unknown): string {
  const err = e as DbError;
  const extra = [err.code ? `SQLSTATE ${err.code}` : null, err.constraint ? `constraint ${err.constraint}` : null].filter(Boolean).join(', ');
  return `${err.message ?? String(e)}${extra ? ` (${extra})` : ''}`;
}

const SIDE_NAME: Record<Side, string> = { source: 'production (source)', target: 'staging (target)' };

export function toSyncError(e: unknown, side?: Side, table?: string): SyncError {
  if (e instanceof SyncError) return e;
  const err = e as DbError;
  const where = `${side ? ` on ${SIDE_NAME[side]}` : ''}${table ? ` while syncing table ${table}` : ''}`;
  const opts = { cause: e, table, side };
  if (err.code === '57014') {
    return new SyncError('E_TIMEOUT', `a statement timed out${where}`, 'raise statementTimeout in elara-sync.yml or look for locks held on the table (pg_locks)', opts);
  }
  if (err.code === '55P03') {
    return new SyncError('E_LOCKED', `a lock could not be obtained${where}`, 'another session holds a lock on the table; retry later', opts);
  }
  if (err.code === '42501') {
    return new SyncError('E_PERMISSION', `permission denied${where}: ${err.message}`,
      `grant the sync role the privileges listed in deploy/kubernetes/sql/${side === 'source' ? 'production' : 'staging'}-roles.sql`, opts);
  }
  if (side === 'source') {
    return new SyncError('E_SOURCE', `production (source) rejected the source query${table ? ` of table ${table}` : ''}: ${describeDatabaseError(e)}`,
      'check the transforms and the row filter of that table in elara-sync.yml; nothing was written', opts);
  }
  if (side === 'target' && table) {
    return new SyncError('E_APPLY', `staging (target) rejected the changes of table ${table}: ${describeDatabaseError(e)}; nothing was written`,
      'staging has a constraint, trigger (ENABLE ALWAYS) or type that production does not: compare the two schemas (elara-sync plan lists differences), fix staging, and run again', opts);
  }
  return new SyncError(side === 'target' ? 'E_APPLY' : 'E_INTERNAL', `${describeDatabaseError(e)}${where}`,
    side === 'target' ? 'see docs/errors.md; the run changed nothing in staging and can be re-run' : 'this is a bug: report it with the command you ran', opts);
}
