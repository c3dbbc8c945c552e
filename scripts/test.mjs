#!/usr/bin/env node
// Runs every test file of every workspace with node's own test runner (CI reads its closing lines).
// Usage: npm test [-- <path filter>]   e.g. npm test -- sync/test/cli
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const filter = process.argv[2];
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (name === 'node_modules') continue;
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.ts')) files.push(p);
  }
};
for (const pkg of readdirSync('packages')) {
  try { walk(join('packages', pkg, 'test')); } catch { /* package without tests */ }
}
try { walk('deploy'); } catch { /* none */ }
const selected = files.sort().filter((f) => !filter || f.includes(filter));
if (selected.length === 0) {
  console.error(`no test files match ${filter ?? '(all)'}`);
  process.exit(2);
}
const r = spawnSync(process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=600000', ...selected],
  { stdio: 'inherit' });
process.exit(r.status ?? 1);
