-- Production: the read-only login of the reconcile job (elara-sync run, plan, verify, doctor).
--
-- Run as the owner of the tables (or a superuser), connected to the PRODUCTION database:
--   psql "$PRODUCTION_ADMIN_URL" -v password="$SYNC_READER_PASSWORD" -f deploy/kubernetes/sql/production-roles.sql
-- Optional psql variables: reader_role (default elara_sync_reader), connection_limit (4),
-- statement_timeout (15min), lock_timeout (5s), idle_timeout (60s). Safe to run again: it
-- re-applies the settings and the grants. The password comes only from -v, never from this file.
--
-- What the role can do, and nothing more:
--   * log in, at most :connection_limit sessions, every transaction read-only by default;
--   * SELECT on the synced tables "Organization" and "User" (add a line per table you sync);
--   * SELECT on graphile_worker.jobs (a view without the job payload) so the doctor can count
--     immediate-sync failures, and on drizzle.__drizzle_migrations to compare migrations.
-- default_transaction_read_only is a default, not a barrier (any session may SET it off), so the
-- real guarantee is the privileges: the role holds no INSERT, UPDATE, DELETE or TRUNCATE anywhere,
-- which the check at the end proves before committing.
\set ON_ERROR_STOP on

\if :{?password}
\else
  \warn 'production-roles.sql: pass the password with -v password=... (read it from a secret store, never write it here)'
  DO $$ BEGIN RAISE EXCEPTION 'psql variable "password" is not set'; END $$;
\endif
\if :{?reader_role}
\else
  \set reader_role elara_sync_reader
\endif
\if :{?connection_limit}
\else
  \set connection_limit 4
\endif
\if :{?statement_timeout}
\else
  \set statement_timeout 15min
\endif
\if :{?lock_timeout}
\else
  \set lock_timeout 5s
\endif
\if :{?idle_timeout}
\else
  \set idle_timeout 60s
\endif

BEGIN;

SELECT format('CREATE ROLE %I', :'reader_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader_role') \gexec

ALTER ROLE :"reader_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
  CONNECTION LIMIT :connection_limit PASSWORD :'password';
ALTER ROLE :"reader_role" SET default_transaction_read_only = on;
ALTER ROLE :"reader_role" SET statement_timeout = :'statement_timeout';
ALTER ROLE :"reader_role" SET lock_timeout = :'lock_timeout';
ALTER ROLE :"reader_role" SET idle_in_transaction_session_timeout = :'idle_timeout';

SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'reader_role') \gexec
GRANT USAGE ON SCHEMA public TO :"reader_role";
GRANT SELECT ON TABLE public."Organization", public."User" TO :"reader_role";

-- Created by the backend's worker and migrations; absent before the first deploy. Run this file
-- again after the first deploy if the doctor says it cannot read them.
SELECT format('GRANT USAGE ON SCHEMA graphile_worker TO %I', :'reader_role'),
       format('GRANT SELECT ON graphile_worker.jobs TO %I', :'reader_role')
 WHERE to_regclass('graphile_worker.jobs') IS NOT NULL \gexec
SELECT format('GRANT USAGE ON SCHEMA drizzle TO %I', :'reader_role'),
       format('GRANT SELECT ON drizzle.__drizzle_migrations TO %I', :'reader_role')
 WHERE to_regclass('drizzle.__drizzle_migrations') IS NOT NULL \gexec

-- Prove it before committing: no write privilege on any table, view or sequence, no CREATE on
-- any schema (PUBLIC had CREATE on schema public before PostgreSQL 15; revoke that first).
SELECT set_config('elara.check_role', :'reader_role', true);
DO $$
DECLARE
  r text := current_setting('elara.check_role');
  bad text;
BEGIN
  SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ') INTO bad
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND has_table_privilege(r, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE');
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'role % could write to %: revoke that before using it as the production reader', r, bad;
  END IF;
  SELECT string_agg(quote_ident(nspname), ', ') INTO bad
    FROM pg_namespace WHERE has_schema_privilege(r, oid, 'CREATE');
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'role % could create objects in schema %: run REVOKE CREATE ON SCHEMA % FROM PUBLIC', r, bad, bad;
  END IF;
END $$;

COMMIT;
