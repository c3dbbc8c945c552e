// Every connection of the project goes through the TLS module (createClient / createPool): a new
// `new pg.Client(…)`, `new pg.Pool(…)` or a connection string handed to a library elsewhere would
// silently get node-postgres's own TLS rules (require treated as verify-full, PGSSLROOTCERT
// ignored). This scans the sources so such a path fails a test instead of a deployment.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const SCANNED = ['packages/backend/src', 'packages/sync/src', 'bench'];
/** The one place that may construct pg clients. */
// bench/lib/cdc-probe.mjs: bench:cdc's measuring client runs in a worker thread, which cannot load
// TypeScript (no tsx loader there); it only talks to the benchmark's own throwaway loopback cluster.
const ALLOWED = new Set(['packages/sync/src/tls/client.ts', 'bench/lib/cdc-probe.mjs']);
const OPENS = /new\s+pg\.(Client|Pool)\s*\(|new\s+(Client|Pool)\s*\(|\bconnectionString\s*:/;

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (name === 'node_modules' || name === 'dist' || name === 'results') return [];
    return statSync(p).isDirectory() ? files(p) : /\.(ts|mjs|js)$/.test(name) ? [p] : [];
  });
}

test('no source opens a PostgreSQL connection except through createClient / createPool', () => {
  const offenders: string[] = [];
  for (const dir of SCANNED) {
    for (const f of files(join(REPO, dir))) {
      const rel = relative(REPO, f);
      if (ALLOWED.has(rel)) continue;
      readFileSync(f, 'utf8').split('\n').forEach((line, i) => {
        if (OPENS.test(line) && !/^\s*(\/\/|\*)/.test(line)) offenders.push(`${rel}:${i + 1}: ${line.trim()}`);
      });
    }
  }
  assert.deepEqual(offenders, [], 'use createClient/createPool from @elara/sync (packages/sync/src/tls/client.ts)');
});
