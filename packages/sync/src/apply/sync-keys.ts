import type pg from 'pg';
import type { KeySyncRequest, KeySyncResult } from '../types.ts';
import { SyncError } from '../errors.ts';

/**
 * Reads the rows with the given primary keys from the source (through the engine's source query)
 * and applies them to the target in ONE transaction, parents before children. Keys no longer at
 * the source are deleted from the target when they came from production. Idempotent.
 */
export async function syncKeys(
  _source: pg.Pool,
  _target: pg.Pool,
  _requests: KeySyncRequest[],
): Promise<KeySyncResult[]> {
  throw new SyncError('E_NOT_READY', 'syncKeys is being built', 'wait for the engine');
}
