-- Staging: the login the reconcile job (and the backend's immediate sync) writes with.
--
-- Run as the owner of the tables (or a superuser), connected to the STAGING database:
--   psql "$STAGING_ADMIN_URL" -v password="$SYNC_WRITER_PASSWORD" -f deploy/kubernetes/sql/staging-roles.sql
-- Optional psql variables: writer_role (default elara_sync_writer), connection_limit (4),
-- statement_timeout (15min), lock_timeout (5s), idle_timeout (60s). Safe to run again.
-- Do NOT run it on production: the writer must not exist there, so a swapped URL cannot log in.
-- (If both databases share one cluster, roles are cluster-wide: then the writer exists but holds
-- no privilege in production; also REVOKE CONNECT ON DATABASE <production> FROM PUBLIC and grant
-- CONNECT only to the roles that need it.)
--
-- What the role can do, and nothing more:
--   * SELECT, INSERT, UPDATE, DELETE and TRIGGER on the synced tables "Organization" and "User"
--     (TRIGGER: the engine records rows created directly in staging with a trigger);
--   * USAGE and CREATE on schema elara_sync, where the engine keeps run records, row provenance
--     and its trigger functions (it owns what it creates there);
--   * SET session_replication_role (PostgreSQL 15+): the engine applies rows as a replica, so
--     staging's own triggers and FK actions do not fire on them (as with logical replication);
--   * SELECT, UPDATE on the synced tables' sequences: staging's sequences are kept ahead of
--     production's, so rows QA inserts with default keys never collide with later production rows.
-- No TRUNCATE, no DDL on the synced tables (not the owner), nothing on other tables, no CREATE in
-- public. The check at the end proves that before committing.
\set ON_ERROR_STOP on

\if :{?password}
\else
  \warn 'staging-roles.sql: pass the password with -v password=... (read it from a secret store, never write it here)'
  DO $$ BEGIN RAISE EXCEPTION 'psql variable "password" is not set'; END $$;
\endif
\if :{?writer_role}
\else
  \set writer_role elara_sync_writer
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

SELECT format('CREATE ROLE %I', :'writer_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'writer_role') \gexec

ALTER ROLE :"writer_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS
  CONNECTION LIMIT :connection_limit PASSWORD :'password';
ALTER ROLE :"writer_role" SET statement_timeout = :'statement_timeout';
ALTER ROLE :"writer_role" SET lock_timeout = :'lock_timeout';
ALTER ROLE :"writer_role" SET idle_in_transaction_session_timeout = :'idle_timeout';

SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'writer_role') \gexec
GRANT USAGE ON SCHEMA public TO :"writer_role";
GRANT SELECT, INSERT, UPDATE, DELETE, TRIGGER ON TABLE public."Organization", public."User" TO :"writer_role";
GRANT SET ON PARAMETER session_replication_role TO :"writer_role";
SELECT format('GRANT SELECT, UPDATE ON SEQUENCE %s TO %I', s, :'writer_role')
  FROM (SELECT pg_get_serial_sequence(format('public.%I', t), a.attname) AS s
          FROM unnest(ARRAY['Organization', 'User']) t JOIN pg_attribute a ON a.attrelid = format('public.%I', t)::regclass AND a.attnum > 0) x
 WHERE s IS NOT NULL \gexec

CREATE SCHEMA IF NOT EXISTS elara_sync;
GRANT USAGE, CREATE ON SCHEMA elara_sync TO :"writer_role";

SELECT set_config('elara.check_role', :'writer_role', true);
DO $$
DECLARE
  r text := current_setting('elara.check_role');
  bad text;
BEGIN
  SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ') INTO bad
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
     AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'elara_sync')
     AND NOT (n.nspname = 'public' AND c.relname IN ('Organization', 'User'))
     AND has_table_privilege(r, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE');
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'role % could write to % (not a synced table): revoke that first', r, bad;
  END IF;
  SELECT string_agg(quote_ident(nspname), ', ') INTO bad
    FROM pg_namespace WHERE nspname <> 'elara_sync' AND has_schema_privilege(r, oid, 'CREATE');
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'role % could create objects in schema %: run REVOKE CREATE ON SCHEMA % FROM PUBLIC', r, bad, bad;
  END IF;
END $$;

COMMIT;
