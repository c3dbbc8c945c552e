// docs/errors.md says what the code does: the API table is exactly ERROR_CODES (codes and
// statuses), and every code the sync engine raises is in the engine's table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SYNC_ERRORS } from '@elara/sync';
import { ERROR_CODES } from '../src/errors.ts';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const doc = readFileSync(join(REPO, 'docs/errors.md'), 'utf8');
const section = (title: string) => {
  const start = doc.indexOf(`## ${title}`);
  assert.ok(start >= 0, `docs/errors.md has no "## ${title}" section`);
  const end = doc.indexOf('\n## ', start + 3);
  return doc.slice(start, end < 0 ? undefined : end);
};
const tableRows = (text: string) => text.split('\n').filter((l) => /^\| *\d{3} *\| *`E_/.test(l) || /^\| *`E_/.test(l));

test('the API table of docs/errors.md is ERROR_CODES: same codes, same statuses, in order', () => {
  const documented = tableRows(section('API errors')).map((l) => {
    const [, status, code] = /^\| *(\d{3}) *\| *`(E_[A-Z_]+)`/.exec(l)!;
    return `${status} ${code}`;
  });
  assert.deepEqual(documented, Object.entries(ERROR_CODES).map(([code, v]) => `${v.status} ${code}`));
});

test('the sync engine table of docs/errors.md is SYNC_ERRORS: same codes, same exit codes, in order', () => {
  const documented = tableRows(section('Sync engine errors')).map((l) => {
    const [, code, exit] = /^\| *`(E_[A-Z_]+)` *\| *(\d) *\|/.exec(l)!;
    return `${code} ${exit}`;
  });
  assert.deepEqual(documented, Object.entries(SYNC_ERRORS).map(([code, v]) => `${code} ${v.exit}`));
  // SyncError's code is typed by the catalogue; this also catches a code written in a message.
  const raised = new Set<string>();
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith('.ts')) for (const m of readFileSync(p, 'utf8').matchAll(/\b(E_[A-Z][A-Z_]+)\b/g)) raised.add(m[1]!);
    }
  };
  walk(join(REPO, 'packages/sync/src'));
  assert.deepEqual([...raised].filter((c) => !(c in SYNC_ERRORS)).sort(), []);
});
