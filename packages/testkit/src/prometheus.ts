// Prometheus' own tools for tests: promtool (Debian's `prometheus` package; .ci/run installs it)
// and the PromQL grammar of Prometheus' web UI, to list the metrics an expression reads.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parser } from '@prometheus-io/lezer-promql';

export interface PromtoolResult {
  status: number;
  stdout: string;
  stderr: string;
  /** stdout and stderr together: promtool prints some findings on one, some on the other. */
  output: string;
}

/** Runs `promtool <args>` (optionally with stdin); fails with an install hint when it is missing. */
export function promtool(args: string[], input?: string): PromtoolResult {
  const r = spawnSync('promtool', args, { input, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.error) {
    throw new Error(`promtool could not be run (${r.error.message}): apt-get install --no-install-recommends prometheus (bash .ci/run does it)`);
  }
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, output: `${r.stdout}${r.stderr}` };
}

/**
 * Writes `files` (name → content) to a new temporary directory, runs promtool with the arguments
 * `args(dir)` gives, and removes the directory. promtool reads rule and test files by path only
 * (it cannot open /dev/stdin when that is a socket, as it is under node's spawnSync).
 */
export function promtoolOnFiles(files: Record<string, string>, args: (dir: string) => string[]): PromtoolResult {
  const dir = mkdtempSync(join(tmpdir(), 'elara-promtool-'));
  try {
    for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
    return promtool(args(dir));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The metric names a PromQL expression selects (`foo` in `rate(foo{a="b"}[5m])`), from the
 * official grammar's parse tree: label names, function names and grouping labels are not metrics.
 * A selector without a metric name (`{__name__=~"…"}`) is returned as `{…}` so callers can refuse it.
 */
export function metricNamesIn(expr: string): string[] {
  const names = new Set<string>();
  const cursor = parser.parse(expr).cursor();
  do {
    if (cursor.name !== 'VectorSelector') continue;
    const child = cursor.node.getChild('Identifier');
    names.add(child ? expr.slice(child.from, child.to) : expr.slice(cursor.from, cursor.to));
  } while (cursor.next());
  return [...names].sort();
}

/**
 * Metric names an exposition (the text of GET /metrics) declares with `# TYPE`, with the series
 * names a histogram or summary adds (`_bucket`, `_sum`, `_count`).
 */
export function exposedMetricNames(exposition: string): Map<string, string> {
  const types = new Map<string, string>();
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m as unknown as [string, string, string];
    types.set(name, type);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) types.set(`${name}${s}`, `${type} series`);
    if (type === 'summary') for (const s of ['_sum', '_count']) types.set(`${name}${s}`, `${type} series`);
  }
  return types;
}
