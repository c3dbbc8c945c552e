// Generated production data in the seed's schema (Organization, User), the benchmark's change set,
// and the checks that tell whether a target picked the change set up.
import type pg from 'pg';
import { createClient } from '@elara/sync';

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = createClient(url);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export const orgCount = (users: number) => Math.ceil(users / 3);

// Deterministic ids (md5 of a label, as uuid) so runs are comparable; their order is unrelated to
// insertion order, like gen_random_uuid() keys in production.
const ORGS_SQL = `
INSERT INTO "Organization" (id, name, tier, "apiKey", "apiSecret", "isActive", "createdAt", "updatedAt")
SELECT md5('org:' || i)::uuid,
       (ARRAY['Acme','Globex','Initech','Umbrella','Stark','Wayne','Hooli','Vandelay'])[1 + i % 8]
         || ' ' || initcap(substr(md5('orgname:' || i), 1, 8)) || ' ' || i,
       (ARRAY['free','free','free','pro','pro','enterprise'])[1 + i % 6],
       'elk_live_' || md5('apikey:' || i) || substr(md5('apikey2:' || i), 1, 12),
       encode(sha256(convert_to('apisecret:' || i, 'UTF8')), 'hex'),
       i % 41 <> 0,
       t.ts,
       t.ts + (i % 997) * interval '1 minute'
FROM generate_series(1, $1::int) AS i,
     LATERAL (SELECT timestamptz '2022-01-01 00:00:00+00' + i * interval '83 seconds' + (i % 1000) * interval '1 millisecond' AS ts) t`;

// passwordHash: an argon2id PHC string, 97 characters like the backend's.
const USERS_SQL = `
INSERT INTO "User" (id, email, "passwordHash", "firstName", "lastName", role, "organizationId", "isActive",
                    "emailVerified", "lastLoginAt", "createdAt", "updatedAt")
SELECT md5('user:' || i)::uuid,
       lower(x.fn) || '.' || lower(x.ln) || '.' || i || '@' || (ARRAY['example.com','mail.example.org','corp.example.net'])[1 + i % 3],
       '$argon2id$v=19$m=65536,t=3,p=4$' || rtrim(encode(decode(md5('salt:' || i), 'hex'), 'base64'), '=')
         || '$' || rtrim(encode(sha256(convert_to('pw:' || i, 'UTF8')), 'base64'), '='),
       CASE WHEN i % 97 = 0 THEN NULL ELSE x.fn END,
       CASE WHEN i % 89 = 0 THEN NULL ELSE x.ln END,
       CASE WHEN (i - 1) % 3 = 0 THEN 'owner' ELSE 'member' END,
       md5('org:' || ((i - 1) / 3 + 1))::uuid,
       i % 53 <> 0,
       i % 7 <> 0,
       CASE WHEN i % 5 = 0 THEN NULL ELSE x.ts + (i % 400) * interval '1 day' + (i % 977) * interval '1 second' END,
       x.ts,
       x.ts + (i % 300) * interval '1 hour'
FROM generate_series(1, $1::int) AS i,
     LATERAL (SELECT (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Frances','John','Margaret','Ken',
                            'Radia','Dennis','Lynn','Leslie','Sophie','Niklaus','Shafi','Tim','Whitfield','Hedy'])[1 + i % 20] AS fn,
                     (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Allen','Backus','Hamilton','Thompson',
                            'Perlman','Ritchie','Conway','Lamport','Wilson','Wirth','Goldwasser','Berners-Lee','Diffie','Lamarr',
                            'Kay','Cerf','Hoare','Milner','Rivest'])[1 + (i / 20) % 25] AS ln,
                     timestamptz '2022-06-01 00:00:00+00' + i * interval '29 seconds' + (i % 1000) * interval '1 millisecond' AS ts) x`;

export async function generateSource(url: string, users: number): Promise<{ orgs: number; users: number; userBytes: number }> {
  return withClient(url, async (c) => {
    await c.query('BEGIN');
    await c.query(ORGS_SQL, [orgCount(users)]);
    await c.query(USERS_SQL, [users]);
    await c.query('COMMIT');
    const { rows } = await c.query<{ orgs: number; users: number; bytes: string }>(
      `SELECT (SELECT count(*)::int FROM "Organization") AS orgs, (SELECT count(*)::int FROM "User") AS users,
              pg_total_relation_size('"User"') AS bytes`);
    return { orgs: rows[0]!.orgs, users: rows[0]!.users, userBytes: Number(rows[0]!.bytes) };
  });
}

export interface ChangeSet {
  updatedIds: string[];
  updatedLastNames: (string | null)[];
  deletedIds: string[];
}

/**
 * Updates 1% of users ("lastName" and "updatedAt") and deletes 0.1% of them, disjoint sets picked
 * in a fixed pseudo-random order, in one transaction.
 */
export async function applyChangeSet(url: string, users: number): Promise<ChangeSet> {
  const nUpdate = Math.round(users * 0.01);
  const nDelete = Math.round(users * 0.001);
  return withClient(url, async (c) => {
    await c.query('BEGIN');
    const picked = await c.query<{ id: string }>(`SELECT id FROM "User" ORDER BY md5('change:' || id::text) LIMIT $1`, [nUpdate + nDelete]);
    const ids = picked.rows.map((r) => r.id);
    const upd = await c.query<{ id: string; lastName: string | null }>(
      `UPDATE "User" SET "lastName" = 'Changed-' || substr(md5(id::text), 1, 6), "updatedAt" = now()
       WHERE id = ANY($1::uuid[]) RETURNING id, "lastName"`, [ids.slice(0, nUpdate)]);
    const del = await c.query<{ id: string }>(`DELETE FROM "User" WHERE id = ANY($1::uuid[]) RETURNING id`, [ids.slice(nUpdate)]);
    await c.query('COMMIT');
    return { updatedIds: upd.rows.map((r) => r.id), updatedLastNames: upd.rows.map((r) => r.lastName), deletedIds: del.rows.map((r) => r.id) };
  });
}

export interface Propagation {
  /** Updated rows whose change the target does not show. */
  stale: number;
  /** Rows deleted in the source that the target still holds. */
  stillPresent: number;
}

export async function checkPropagation(url: string, cs: ChangeSet): Promise<Propagation> {
  return withClient(url, async (c) => {
    const { rows } = await c.query<{ stale: number; present: number }>(
      `SELECT (SELECT count(*)::int FROM "User" t JOIN unnest($1::uuid[], $2::text[]) AS s(id, ln) USING (id)
                WHERE t."lastName" IS DISTINCT FROM s.ln) AS stale,
              (SELECT count(*)::int FROM "User" WHERE id = ANY($3::uuid[])) AS present`,
      [cs.updatedIds, cs.updatedLastNames, cs.deletedIds]);
    return { stale: rows[0]!.stale, stillPresent: rows[0]!.present };
  });
}

export async function countRows(url: string): Promise<{ orgs: number; users: number }> {
  return withClient(url, async (c) => {
    const { rows } = await c.query<{ orgs: number; users: number }>(
      `SELECT (SELECT count(*)::int FROM "Organization") AS orgs, (SELECT count(*)::int FROM "User") AS users`);
    return rows[0]!;
  });
}

export async function exec(url: string, text: string): Promise<void> {
  await withClient(url, async (c) => { await c.query(text); });
}
