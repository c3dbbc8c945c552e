// The transactional outbox: a graphile-worker job inserted by SQL inside the registration's
// production transaction, so the job exists if and only if the registration committed.
import { sql, type SQL } from 'drizzle-orm';

export const SYNC_REGISTRATION_TASK = 'sync_registration';
export const SYNC_TASKS = [SYNC_REGISTRATION_TASK];

export interface RegistrationJobPayload {
  organizationId: string;
  userId: string;
  email: string;
  organizationName: string;
}

export function enqueueRegistrationSync(p: RegistrationJobPayload, maxAttempts: number): SQL {
  return sql`SELECT graphile_worker.add_job(${SYNC_REGISTRATION_TASK}::text,
    json_build_object('organizationId', ${p.organizationId}::text, 'userId', ${p.userId}::text,
                      'email', ${p.email}::text, 'organizationName', ${p.organizationName}::text),
    max_attempts := ${maxAttempts}::int)`;
}

/** Jobs not yet delivered (waiting, retrying, or given up after max_attempts) and the oldest's age. */
export const OUTBOX_BACKLOG_SQL = `
  SELECT count(*)::int AS backlog,
         coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS "oldestAgeSeconds"
    FROM graphile_worker.jobs
   WHERE task_identifier = ANY($1::text[])`;
