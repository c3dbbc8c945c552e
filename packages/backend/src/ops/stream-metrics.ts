// The metrics of the in-process `watch` streams, exactly as STREAM_METRICS names them (the contract
// the alert rules and the Grafana dashboard read): one series per target, read from the live
// handles' status() at scrape time. No stream (watch off): the metrics are declared with no
// series, so no stream alert fires for a process that does not stream.
//
// The counters report the stream's own counts; the engine starts transactions and rows again from 0
// after a snapshot, which Prometheus sees as a counter reset (rate() and increase() handle it).
import client from 'prom-client';
import { STREAM_METRICS, type StreamStatus } from '@elara/sync';
import type { Metrics } from '../metrics.ts';

/** A StreamStatus field as the sample value (`phase`: 1 while streaming, else 0). */
export function streamValue(s: StreamStatus, field: keyof StreamStatus): number {
  if (field === 'phase') return s.phase === 'streaming' ? 1 : 0;
  const v = s[field];
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

export function registerStreamMetrics(metrics: Metrics, statuses: () => StreamStatus[]): void {
  const registers = [metrics.registry];
  for (const m of STREAM_METRICS) {
    const common = { name: m.name, help: m.help, labelNames: ['target'] as const, registers };
    if (m.type === 'counter') {
      new client.Counter({
        ...common,
        collect() {
          this.reset();
          for (const s of statuses()) this.inc({ target: s.target }, streamValue(s, m.field));
        },
      });
    } else {
      new client.Gauge({
        ...common,
        collect() {
          this.reset();
          for (const s of statuses()) this.set({ target: s.target }, streamValue(s, m.field));
        },
      });
    }
  }
}
