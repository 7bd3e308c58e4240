-- Queue wake-ups without the commit lock (docs/performance.md).
--
-- A NOTIFY makes its transaction take a database-wide lock at commit and
-- hold it through the commit's WAL flush, so transactions that both write and
-- notify commit one at a time: on the reference machine 8 clients managed
-- 620 such commits/s, against 5,500/s for the same inserts without NOTIFY and
-- 10,000/s for transactions that only notify (they write no WAL, so they do
-- not wait for a flush). The orchestrator therefore sends its wake-ups after
-- its commits, in a transaction of its own: its sessions set
-- tasker.notify = 'after_commit' (a startup parameter, store.
-- WithNotifyAfterCommit) and the trigger below then stays silent. Every other
-- writer keeps the in-transaction notification: workers in other languages,
-- psql, and the Go SDK, whose batched submissions (00008) notify once per
-- batch, few enough not to queue on the lock.
--
-- The channel is unchanged: pgmq.q_<queue>.INSERT, once per statement.

-- +goose Up

-- +goose StatementBegin
CREATE FUNCTION tasker.notify_queue_insert()
RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(pg_catalog.current_setting('tasker.notify', true), '') <> 'after_commit' THEN
        PERFORM pg_catalog.pg_notify('pgmq.' || TG_TABLE_NAME || '.' || TG_OP, '');
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- enable_queue_notify replaces a queue's insert notification (pgmq's
-- trigger, from the extension or from our SQL implementation) with
-- tasker.notify_queue_insert. Idempotent.
-- +goose StatementBegin
CREATE FUNCTION tasker.enable_queue_notify(queue_name text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_table regclass;
BEGIN
    IF queue_name IS NULL OR queue_name !~ '^[a-z][a-z0-9_]{0,46}$' THEN
        RAISE EXCEPTION 'enable_queue_notify: invalid queue name %', quote_literal(coalesce(queue_name, '<null>'))
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_table := to_regclass(format('pgmq.%I', 'q_' || queue_name));
    IF v_table IS NULL THEN
        RAISE EXCEPTION 'enable_queue_notify: queue % does not exist', queue_name USING ERRCODE = 'undefined_table';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS trigger_notify_queue_insert_listeners ON %s', v_table);
    EXECUTE format('DROP TRIGGER IF EXISTS tasker_notify_queue_insert ON %s', v_table);
    EXECUTE format('CREATE TRIGGER tasker_notify_queue_insert AFTER INSERT ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION tasker.notify_queue_insert()', v_table);
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION tasker.enable_queue_notify(text) FROM PUBLIC;

-- namespace_provision as in 00005, with the new notification.
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
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                        WHERE tgrelid = to_regclass(format('pgmq.%I', 'q_' || v_q))
                          AND tgname = 'tasker_notify_queue_insert') THEN
            PERFORM tasker.enable_queue_notify(v_q);
        END IF;
    END LOOP;
    RETURN tasker.namespace_grant_worker_role(ns);
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
DECLARE
    v_q text;
BEGIN
    PERFORM tasker.enable_queue_notify('orchestration_step_results');
    PERFORM tasker.enable_queue_notify('orchestration_task_requests');
    FOR v_q IN SELECT n FROM tasker.namespaces ns,
                      LATERAL unnest(ARRAY['worker_' || ns.name || '_queue', 'domain_events_' || ns.name]) AS n
                WHERE to_regclass(format('pgmq.%I', 'q_' || n)) IS NOT NULL LOOP
        PERFORM tasker.enable_queue_notify(v_q);
    END LOOP;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
DECLARE
    v_t regclass;
BEGIN
    FOR v_t IN SELECT tgrelid FROM pg_catalog.pg_trigger WHERE tgname = 'tasker_notify_queue_insert' LOOP
        EXECUTE format('DROP TRIGGER tasker_notify_queue_insert ON %s', v_t);
        EXECUTE format('CREATE TRIGGER trigger_notify_queue_insert_listeners AFTER INSERT ON %s
                        FOR EACH STATEMENT EXECUTE FUNCTION pgmq.notify_queue_listeners()', v_t);
    END LOOP;
END;
$$;
-- +goose StatementEnd
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
DROP FUNCTION IF EXISTS tasker.enable_queue_notify(text);
DROP FUNCTION IF EXISTS tasker.notify_queue_insert();
