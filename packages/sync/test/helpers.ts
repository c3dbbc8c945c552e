import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, sql, type TestDatabase } from '@elara/testkit';

export const CLI = fileURLToPath(new URL('../bin/elara-sync.js', import.meta.url));

export interface Pair {
  source: TestDatabase;
  target: TestDatabase;
  drop(): Promise<void>;
}

/** A production and a staging database with the same schema. */
export async function createPair(prefix: string, schema: string): Promise<Pair> {
  const source = await createTestDatabase(`${prefix}_src`);
  const target = await createTestDatabase(`${prefix}_dst`);
  if (schema) {
    await sql(source.url, schema);
    await sql(target.url, schema);
  }
  return {
    source,
    target,
    async drop() {
      await Promise.all([source.drop(), target.drop()]);
    },
  };
}

/** All rows of a table as sorted JSON strings, for exact comparisons. */
export async function rows(url: string, table: string, orderBy = '1'): Promise<string[]> {
  const r = await sql(url, `SELECT row_to_json(_r)::text AS j FROM ${table} _r ORDER BY ${orderBy}`);
  return r.rows.map((x) => x.j);
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

// The seed's two tables plus awkward columns, used by the kill and property tests: jsonb, free
// text (tabs, newlines), NULLs, and a self-reference ("managerId") the FK order must handle.
export const SEED_LIKE_SCHEMA = `
CREATE TABLE "Organization" (
  id uuid PRIMARY KEY,
  name text NOT NULL,
  tier text NOT NULL DEFAULT 'free',
  "apiKey" text NOT NULL UNIQUE,
  "apiSecret" text NOT NULL,
  settings jsonb,
  "isActive" boolean NOT NULL DEFAULT true,
  "createdAt" timestamptz(3) NOT NULL DEFAULT now(),
  "updatedAt" timestamptz(3) NOT NULL DEFAULT now()
);
CREATE TABLE "User" (
  id uuid PRIMARY KEY,
  email text NOT NULL UNIQUE,
  "passwordHash" text NOT NULL,
  "firstName" text,
  "lastName" text,
  bio text,
  profile jsonb,
  role text NOT NULL DEFAULT 'member',
  "organizationId" uuid NOT NULL REFERENCES "Organization"(id) ON DELETE RESTRICT,
  "managerId" uuid REFERENCES "User"(id) ON DELETE SET NULL,
  "lastLoginAt" timestamptz(3),
  "createdAt" timestamptz(3) NOT NULL DEFAULT now(),
  "updatedAt" timestamptz(3) NOT NULL DEFAULT now()
);
CREATE INDEX ON "User" ("organizationId");
CREATE INDEX ON "User" ("managerId");`;

// The privacy tests' shapes (privacy.test.ts, watch-privacy.test.ts): the seed's tables with every
// column a rule cares about, and a rule for each column.
export const PRIVACY_SCHEMA = `
CREATE TABLE "Organization" (id uuid PRIMARY KEY, name text NOT NULL, tier text NOT NULL DEFAULT 'free', "apiKey" text NOT NULL UNIQUE,
  "apiSecret" text NOT NULL, "isActive" boolean NOT NULL DEFAULT true, "createdAt" timestamptz(3) NOT NULL DEFAULT now());
CREATE TABLE "User" (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, "passwordHash" text NOT NULL, "firstName" text, "lastName" text,
  role text NOT NULL DEFAULT 'member', "organizationId" uuid NOT NULL REFERENCES "Organization"(id), "managerId" uuid REFERENCES "User"(id),
  "lastLoginAt" timestamptz(3));
CREATE UNIQUE INDEX user_email_lower ON "User" (lower(email));`;

export const PRIVACY_TABLE_RULES = `tables:
  - name: Organization
    columns: { id: keep, name: company_name, tier: keep, apiKey: token, apiSecret: hash, isActive: keep, createdAt: keep }
  - name: User
    columns: { id: keep, email: email, passwordHash: password_hash, firstName: first_name, lastName: last_name, role: keep,
               organizationId: keep, managerId: keep, lastLoginAt: keep }
`;

/** A small seeded PRNG (mulberry32): the kill tests replay a failing run from its printed seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}
