#!/usr/bin/env node
// Bundles the elara-sync CLI into one ES module (run by `npm install` through "prepare").
// Loading one bundled file takes ~0.25 s; going through tsx takes ~1 s, which matters for a
// command a CronJob starts every five minutes and whose no-change run should take about a second.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
await build({
  entryPoints: [join(root, 'packages/sync/src/cli/main.ts')],
  outfile: join(root, 'packages/sync/dist/elara-sync.mjs'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['pg-native', '@node-rs/argon2'],
  banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
  logLevel: 'warning',
});
