-- Least-privilege roles (docs/security.md). Three kinds of principal touch
-- the database:
--
--   the owner          whoever runs the migrations (`orchestrator migrate`, or
--                      the daemon with migrate_on_start). It owns every object
--                      in schemas tasker and pgmq, so it is the only role that
--                      may run DDL, and the SECURITY DEFINER functions below
--                      run as it. It needs CREATE on the database and
--                      CREATEROLE (or a DBA creates the roles below first:
--                      every CREATE ROLE here is skipped when the role
--                      exists). It should not be a superuser in production.
--                      It is not a role this migration creates: it is the
--                      login that runs it.
--   tasker_api         the daemon's runtime role (REST API, and the
--                      orchestration loops that share its pool): DML on the
--                      tasker tables (no DELETE), every queue, the tasker
--                      functions; no DDL, owns nothing.
--   tasker_worker      a worker: the five protocol functions (claim,
--   + tasker_worker_<ns>   heartbeat, release, submit) and the pgmq functions;
--                      tasker_worker_<ns> adds the table privileges on the
--                      worker queue of one namespace. A worker login is
--                      granted tasker_worker and one tasker_worker_<ns> per
--                      namespace it serves; it reads nothing else.
--
-- All three are NOLOGIN group roles: deployments GRANT them to login roles.
--
-- Roles are cluster-wide but privileges are per database, and every test
-- database runs this migration: roles are created only when missing (and a
-- concurrent creation by another database's migration is tolerated), while
-- every GRANT is repeated in each database. Down revokes this database's
-- grants but never drops a role, which other databases may use.

-- +goose Up

-- +goose StatementBegin
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['tasker_api', 'tasker_worker'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- created meanwhile by the migration of another database
            END;
        END IF;
    END LOOP;
END;
$$;
-- +goose StatementEnd

-- The five functions are named without their argument lists (each name is
-- unique), so that a later change of a signature in 00003 needs no change
-- here.
--
-- The worker protocol runs as the owner, so a worker needs no table
-- privilege at all. Their bodies (00003) qualify every table and pgmq
-- function; what they call unqualified (now, clock_timestamp, make_interval,
-- jsonb_build_object, array_fill, ...) is in pg_catalog, searched first. pg_temp
-- comes last so that a caller's temporary objects cannot shadow anything.
ALTER FUNCTION tasker.step_claim_batch
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION tasker.step_claim
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION tasker.step_heartbeat
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION tasker.step_release
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION tasker.step_submit_result
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- PUBLIC (every role of the cluster) may create nothing in our schemas and
-- execute none of our functions, including those later migrations add (the
-- default privileges apply to functions the migration role creates).
REVOKE CREATE ON SCHEMA tasker, pgmq FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA tasker FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pgmq FROM PUBLIC;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- tasker_api. The REST API creates tasks and drives them in the same
-- transaction (transition_steps, dispatch_steps, sends to worker and domain
-- event queues), and API and orchestrator share one pool, hence everything
-- the orchestrator does at run time.
GRANT USAGE ON SCHEMA tasker, pgmq TO tasker_api;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA tasker TO tasker_api;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA tasker TO tasker_api;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tasker TO tasker_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgmq TO tasker_api;
REVOKE INSERT, UPDATE, DELETE ON pgmq.meta FROM tasker_api;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA pgmq TO tasker_api; -- pgmq.metrics reads the msg_id sequence
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgmq TO tasker_api;
-- What later migrations and new queues (created by the owner, directly or
-- through tasker.namespace_provision) add.
ALTER DEFAULT PRIVILEGES IN SCHEMA tasker GRANT SELECT, INSERT, UPDATE ON TABLES TO tasker_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA tasker GRANT USAGE, SELECT ON SEQUENCES TO tasker_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA tasker GRANT EXECUTE ON FUNCTIONS TO tasker_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA pgmq GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO tasker_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA pgmq GRANT SELECT ON SEQUENCES TO tasker_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA pgmq GRANT EXECUTE ON FUNCTIONS TO tasker_api, tasker_worker;

-- /readyz asks goose whether migrations are pending: it reads the version
-- table (named by goose, resolved like goose resolves it).
-- +goose StatementBegin
DO $$
DECLARE
    v regclass := to_regclass('goose_db_version');
BEGIN
    IF v IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON TABLE %s TO tasker_api', v);
    END IF;
END;
$$;
-- +goose StatementEnd

-- tasker_worker. pgmq's functions run as their caller, so EXECUTE on them
-- grants nothing by itself: the table privileges of tasker_worker_<ns> decide
-- which queue a worker can read (and it can send to none).
GRANT USAGE ON SCHEMA tasker, pgmq TO tasker_worker;
GRANT EXECUTE ON FUNCTION
    tasker.step_claim,
    tasker.step_claim_batch,
    tasker.step_heartbeat,
    tasker.step_release,
    tasker.step_submit_result
    TO tasker_worker;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgmq TO tasker_worker;

-- namespace_grant_worker_role gives namespace ns its worker role,
-- tasker_worker_<ns> (created when missing), and the queue privileges: the
-- worker role may read, hide (UPDATE of vt and read_ct only), delete and
-- archive messages of worker_<ns>_queue, and see its length (metrics reads
-- the msg_id sequence); tasker_api gets the namespace's worker and domain
-- event queues. The worker queue must exist (see namespace_provision). It is
-- idempotent and returns the role's name.
--
-- It runs as the owner, which alone may grant on the queues and create roles;
-- ns is checked against the namespace rule and every identifier is quoted, so
-- a caller cannot reach any other object. No schema-level GRANT happens here:
-- concurrent GRANTs on one schema can fail with "tuple concurrently updated"
-- (the schema USAGE comes with tasker_worker).
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.namespace_grant_worker_role(ns text)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_role text;
    v_q    text;
    v_seq  text;
    v_rel  text;
BEGIN
    IF ns IS NULL OR ns !~ '^[a-z][a-z0-9_]{0,32}$' THEN
        RAISE EXCEPTION 'namespace_grant_worker_role: invalid namespace %: use a lowercase letter, then up to 32 lowercase letters, digits or underscores',
            quote_literal(coalesce(ns, '<null>'))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_role := 'tasker_worker_' || ns;
    v_q := 'worker_' || ns || '_queue';
    IF to_regclass(format('pgmq.%I', 'q_' || v_q)) IS NULL THEN
        RAISE EXCEPTION 'namespace_grant_worker_role: queue % does not exist (tasker.namespace_provision creates it)', v_q
            USING ERRCODE = 'undefined_table';
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created meanwhile, by this namespace in another database
        END;
    END IF;

    EXECUTE format('GRANT SELECT, DELETE, UPDATE (vt, read_ct) ON TABLE pgmq.%I TO %I', 'q_' || v_q, v_role);
    EXECUTE format('GRANT SELECT, INSERT ON TABLE pgmq.%I TO %I', 'a_' || v_q, v_role);
    v_seq := pg_catalog.pg_get_serial_sequence(format('pgmq.%I', 'q_' || v_q), 'msg_id');
    IF v_seq IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON SEQUENCE %s TO %I', v_seq, v_role);
    END IF;

    FOREACH v_rel IN ARRAY ARRAY['q_' || v_q, 'a_' || v_q, 'q_domain_events_' || ns, 'a_domain_events_' || ns] LOOP
        IF to_regclass(format('pgmq.%I', v_rel)) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE pgmq.%I TO tasker_api', v_rel);
            v_seq := pg_catalog.pg_get_serial_sequence(format('pgmq.%I', v_rel), 'msg_id');
            IF v_seq IS NOT NULL THEN
                EXECUTE format('GRANT SELECT ON SEQUENCE %s TO tasker_api', v_seq);
            END IF;
        END IF;
    END LOOP;
    RETURN v_role;
END;
$$;
-- +goose StatementEnd

-- namespace_provision creates what a namespace needs besides its row in
-- tasker.namespaces: its worker and domain event queues (with insert
-- notifications), its worker role and the grants. It is idempotent, and it is
-- how a daemon running as tasker_api (which may not create tables) brings up
-- a new namespace. Returns the worker role's name.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.namespace_provision(ns text)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_q text;
BEGIN
    IF ns IS NULL OR ns !~ '^[a-z][a-z0-9_]{0,32}$' THEN
        RAISE EXCEPTION 'namespace_provision: invalid namespace %: use a lowercase letter, then up to 32 lowercase letters, digits or underscores',
            quote_literal(coalesce(ns, '<null>'))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH v_q IN ARRAY ARRAY['worker_' || ns || '_queue', 'domain_events_' || ns] LOOP
        IF to_regclass(format('pgmq.%I', 'q_' || v_q)) IS NULL THEN
            PERFORM pgmq.create(v_q);
        END IF;
        -- Checked first: the extension's enable_notify_insert fails when the
        -- trigger exists.
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                        WHERE tgrelid = to_regclass(format('pgmq.%I', 'q_' || v_q))
                          AND tgname = 'trigger_notify_queue_insert_listeners') THEN
            PERFORM pgmq.enable_notify_insert(v_q);
        END IF;
    END LOOP;
    RETURN tasker.namespace_grant_worker_role(ns);
END;
$$;
-- +goose StatementEnd

REVOKE EXECUTE ON FUNCTION tasker.namespace_grant_worker_role(text), tasker.namespace_provision(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tasker.namespace_grant_worker_role(text), tasker.namespace_provision(text) TO tasker_api;

-- Namespaces that exist already.
-- +goose StatementBegin
DO $$
DECLARE
    v_ns text;
BEGIN
    FOR v_ns IN SELECT name FROM tasker.namespaces ORDER BY name LOOP
        PERFORM tasker.namespace_provision(v_ns);
    END LOOP;
END;
$$;
-- +goose StatementEnd

-- +goose Down

-- +goose StatementBegin
DO $$
DECLARE
    v_role text;
    v regclass := to_regclass('goose_db_version');
BEGIN
    -- The worker roles granted something on this database's queues: roles
    -- are cluster-wide, and one that holds nothing here may be dropped by
    -- another database's owner meanwhile (a REVOKE naming it would fail);
    -- one that holds a grant here cannot be dropped.
    FOR v_role IN SELECT DISTINCT r.rolname
                    FROM pg_catalog.pg_class c
                         CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
                         JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
                   WHERE c.relnamespace = 'pgmq'::regnamespace AND r.rolname LIKE 'tasker\_worker\_%' LOOP
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA pgmq FROM %I', v_role);
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgmq FROM %I', v_role);
    END LOOP;
    IF v IS NOT NULL THEN
        EXECUTE format('REVOKE SELECT ON TABLE %s FROM tasker_api', v);
    END IF;
END;
$$;
-- +goose StatementEnd

DROP FUNCTION IF EXISTS tasker.namespace_provision(text);
DROP FUNCTION IF EXISTS tasker.namespace_grant_worker_role(text);

ALTER DEFAULT PRIVILEGES IN SCHEMA pgmq REVOKE EXECUTE ON FUNCTIONS FROM tasker_api, tasker_worker;
ALTER DEFAULT PRIVILEGES IN SCHEMA pgmq REVOKE SELECT ON SEQUENCES FROM tasker_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA pgmq REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM tasker_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA tasker REVOKE EXECUTE ON FUNCTIONS FROM tasker_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA tasker REVOKE USAGE, SELECT ON SEQUENCES FROM tasker_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA tasker REVOKE SELECT, INSERT, UPDATE ON TABLES FROM tasker_api;
ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO PUBLIC;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA tasker, pgmq FROM tasker_api, tasker_worker;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA tasker, pgmq FROM tasker_api, tasker_worker;
REVOKE ALL ON ALL TABLES IN SCHEMA tasker, pgmq FROM tasker_api, tasker_worker;
REVOKE ALL ON SCHEMA tasker, pgmq FROM tasker_api, tasker_worker;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tasker, pgmq TO PUBLIC;

ALTER FUNCTION tasker.step_submit_result
    SECURITY INVOKER RESET search_path;
ALTER FUNCTION tasker.step_release
    SECURITY INVOKER RESET search_path;
ALTER FUNCTION tasker.step_heartbeat
    SECURITY INVOKER RESET search_path;
ALTER FUNCTION tasker.step_claim
    SECURITY INVOKER RESET search_path;
ALTER FUNCTION tasker.step_claim_batch
    SECURITY INVOKER RESET search_path;
