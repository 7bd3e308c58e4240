-- Queue reads as HOT updates on the engine's own queues.
--
-- A pgmq read hides a message by rewriting its row (vt, read_ct). pgmq
-- creates every queue with an index on vt, so that rewrite was never a HOT
-- update: each read wrote a new heap tuple plus an entry in both of the
-- queue's indexes, and each send wrote the vt index too. No statement of the
-- engine, of the worker protocol or of pgmq's own functions is planned on
-- that index here: reads take the oldest visible messages in msg_id order,
-- which the primary key serves (docs/performance.md, row 33).
--
-- tasker.tune_queue_for_reads(queue) drops the index on vt of one queue and
-- sets its fillfactor to 50, which leaves room on every page for the one
-- rewrite a message gets when it is read (at fillfactor 100 only about a
-- quarter of the reads found room on their page). It is applied to the
-- orchestration queues, to every namespace's worker and domain event queues,
-- and, through namespace_provision, to the queues of namespaces created
-- later. pgmq.create itself is unchanged, so queues created by anyone else
-- keep pgmq's layout, and this works the same with the pgmq extension.
--
-- DROP INDEX takes an exclusive lock on each queue table for a moment.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION tasker.tune_queue_for_reads(p_queue text)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_table regclass := to_regclass(format('pgmq.%I', 'q_' || p_queue));
    v_index regclass;
BEGIN
    IF v_table IS NULL THEN
        RAISE EXCEPTION 'tune_queue_for_reads: queue % does not exist', p_queue
            USING ERRCODE = 'undefined_table';
    END IF;
    -- Every plain index on vt alone, whatever its name (pgmq's releases
    -- have named it differently).
    FOR v_index IN
        SELECT i.indexrelid::regclass
          FROM pg_catalog.pg_index i
          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = v_table AND i.indnatts = 1 AND NOT i.indisprimary AND NOT i.indisunique
           AND a.attname = 'vt'
    LOOP
        EXECUTE format('DROP INDEX %s', v_index);
    END LOOP;
    EXECUTE format('ALTER TABLE %s SET (fillfactor = 50)', v_table);
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION tasker.tune_queue_for_reads(text) FROM PUBLIC;

-- namespace_provision as in 00009, tuning the queues it creates.
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
            PERFORM tasker.tune_queue_for_reads(v_q);
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
    FOR v_q IN SELECT n FROM unnest(ARRAY['orchestration_task_requests', 'orchestration_step_results']) AS n
               UNION ALL
               SELECT n FROM tasker.namespaces ns,
                      LATERAL unnest(ARRAY['worker_' || ns.name || '_queue', 'domain_events_' || ns.name]) AS n
               WHERE to_regclass(format('pgmq.%I', 'q_' || n)) IS NOT NULL
    LOOP
        PERFORM tasker.tune_queue_for_reads(v_q);
    END LOOP;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
DECLARE
    v_q text;
BEGIN
    FOR v_q IN SELECT n FROM unnest(ARRAY['orchestration_task_requests', 'orchestration_step_results']) AS n
               UNION ALL
               SELECT n FROM tasker.namespaces ns,
                      LATERAL unnest(ARRAY['worker_' || ns.name || '_queue', 'domain_events_' || ns.name]) AS n
               WHERE to_regclass(format('pgmq.%I', 'q_' || n)) IS NOT NULL
    LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (vt ASC)', 'q_' || v_q || '_vt_idx', 'q_' || v_q);
        EXECUTE format('ALTER TABLE pgmq.%I RESET (fillfactor)', 'q_' || v_q);
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
                          AND tgname = 'tasker_notify_queue_insert') THEN
            PERFORM tasker.enable_queue_notify(v_q);
        END IF;
    END LOOP;
    RETURN tasker.namespace_grant_worker_role(ns);
END;
$$;
-- +goose StatementEnd
DROP FUNCTION IF EXISTS tasker.tune_queue_for_reads(text);
