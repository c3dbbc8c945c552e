// The transactional outbox: a graphile-worker job inserted by SQL inside the registration's
// production transaction, so the job exists if and only if the registration committed.
import { sql, type SQL } from 'drizzle-orm';

export const SYNC_REGISTRATION_TASK = 'sync_registration';
export const SYNC_ERASURE_TASK = 'sync_erasure';
export const SYNC_TASKS = [SYNC_REGISTRATION_TASK, SYNC_ERASURE_TASK];

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

/** Ids only: the person is gone from production, and the outbox must not keep a copy of them. */
export interface ErasureJobPayload {
  userId: string;
  organizationId: string;
}

export function enqueueErasureSync(p: ErasureJobPayload, maxAttempts: number): SQL {
  return sql`SELECT graphile_worker.add_job(${SYNC_ERASURE_TASK}::text,
    json_build_object('userId', ${p.userId}::text, 'organizationId', ${p.organizationId}::text),
    max_attempts := ${maxAttempts}::int)`;
}

/**
 * Removes the user's registration sync jobs that no worker holds: their payload carries the email
 * and organization name, and after the erasure the job has nothing left to deliver (the erasure job
 * syncs the same keys from production, where they are gone). graphile-worker 0.17's public `jobs`
 * view has no payload, so the jobs are found in its table; `complete_jobs` deletes only jobs that
 * are not locked, and a locked one (running right now) is left to finish its attempt.
 */
export function removeRegistrationJobs(userId: string): SQL {
  return sql`SELECT count(*)::int AS removed FROM graphile_worker.complete_jobs(array(
    SELECT j.id FROM graphile_worker._private_jobs j JOIN graphile_worker._private_tasks t ON t.id = j.task_id
     WHERE t.identifier = ${SYNC_REGISTRATION_TASK}::text AND j.payload->>'userId' = ${userId}::text))`;
}

/** Jobs not yet delivered (waiting, retrying, or given up after max_attempts) and the oldest's age. */
export const OUTBOX_BACKLOG_SQL = `
  SELECT count(*)::int AS backlog,
         coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS "oldestAgeSeconds"
    FROM graphile_worker.jobs
   WHERE task_identifier = ANY($1::text[])`;
