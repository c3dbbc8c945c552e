// The metrics of `elara-sync watch`, one series per target (label `target`), as the alert rules
// (deploy/prometheus/elara-alerts.yml), the Grafana dashboard and docs/operations.md use them. The
// names are the contract; whichever process exports them registers exactly these (prom-client:
// `new Gauge({ name, help, labelNames })` / `new Counter(...)`). Each is a StreamStatus field.
import type { StreamStatus } from './types.ts';

export interface StreamMetric {
  name: string;
  type: 'gauge' | 'counter';
  help: string;
  /** The StreamStatus field it reports (`phase` as 1 for streaming, else 0). */
  field: keyof StreamStatus;
}

export const STREAM_METRICS: readonly StreamMetric[] = [
  { name: 'elara_sync_stream_up', type: 'gauge', field: 'phase', help: '1 while watch is streaming changes to the target, 0 while it starts, snapshots, reconnects or has stopped' },
  { name: 'elara_sync_stream_lag_seconds', type: 'gauge', field: 'lagSeconds', help: "Seconds between production's commit and the target's commit of the last applied transaction; 0 when idle and caught up" },
  { name: 'elara_sync_stream_lag_bytes', type: 'gauge', field: 'lagBytes', help: "Bytes of WAL between production's current position and the position applied to the target" },
  { name: 'elara_sync_stream_retained_wal_bytes', type: 'gauge', field: 'retainedWalBytes', help: "WAL the target's replication slot keeps on production (pg_current_wal_lsn() - restart_lsn)" },
  { name: 'elara_sync_stream_transactions_total', type: 'counter', field: 'transactions', help: 'Production transactions watch applied to the target' },
  { name: 'elara_sync_stream_rows_total', type: 'counter', field: 'rows', help: 'Row changes (inserts, updates, deletes) of the production transactions watch applied to the target' },
  { name: 'elara_sync_stream_reconnects_total', type: 'counter', field: 'reconnects', help: 'Times watch reconnected to production or the target after losing a connection' },
  { name: 'elara_sync_stream_snapshots_total', type: 'counter', field: 'snapshots', help: "Full snapshots (a reconcile under the slot's exported snapshot): at the first start and after the slot was invalidated" },
];
