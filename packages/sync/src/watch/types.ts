// The public face of `watch` (engine in watch/watch.ts): what the CLI, the backend, the status API
// and the metrics read.
export type StreamPhase = 'starting' | 'snapshot' | 'streaming' | 'reconnecting' | 'stopped' | 'failed';

export interface StreamStatus {
  target: string;
  slot: string;
  publication: string;
  phase: StreamPhase;
  /** Last source commit LSN applied to the target (committed there), e.g. '0/1A2B3C'. */
  lsn: string | null;
  /** Commit time (production's clock) of the last applied transaction. */
  lastCommitAt: Date | null;
  /** When the target last committed something the stream applied (or a heartbeat position). */
  lastAppliedAt: Date | null;
  /** Seconds between production's commit and the target's commit of the last applied transaction; 0 when idle and caught up. */
  lagSeconds: number;
  /** Bytes of WAL between production's current position and the applied position. */
  lagBytes: number;
  /** WAL the slot keeps on production (pg_current_wal_lsn() - restart_lsn). */
  retainedWalBytes: number;
  /** Production transactions applied by this process (a counter: never reset; stream_state keeps the totals since the snapshot). */
  transactions: number;
  /** Row changes (inserts, updates, deletes) of those transactions. */
  rows: number;
  reconnects: number;
  snapshots: number;
  lastError: { code: string; message: string; hint?: string; at: Date } | null;
  startedAt: Date;
}
