-- No planner statistics for JSON payload columns.
--
-- ANALYZE builds most-common values and a histogram for every column of a
-- sampled row, and for jsonb that means detoasting each sampled value and
-- sorting them with jsonb's comparison (compareJsonbContainers). No query
-- of the engine, the API, the worker protocol or pgmq's functions filters or
-- joins on these columns as a whole: they read them by key (the expressions
-- ->> 'handler' and the like have no statistics of their own either way). So
-- those statistics were never used, and they were the larger part of each
-- ANALYZE of the tables that autovacuum analyzes most:
--
--   linear4, 5,000 tasks, a fresh database (docs/performance.md, row 36):
--   perf of the Postgres processes put 9.5 % of their CPU samples in
--   autovacuum's analyze_rel, half of that in jsonb_cmp. By hand on the
--   run's tables: domain events queue (50,000 rows) 828 -> 126 ms,
--   workflow_step_transitions 337 -> 158 ms, task_transitions 361 -> 148 ms.
--
-- SET STATISTICS 0 leaves a column out of ANALYZE. It is applied to the
-- engine's JSON payload columns and, through tasker.tune_queue_for_reads
-- (00020), to the message and headers of the orchestration queues and of
-- every namespace's worker and domain event queues, now and when
-- namespace_provision creates them. Small tables (task_templates) and
-- columns that are not payloads (tasks.tags, states, names) keep theirs.
-- SET STATISTICS takes a SHARE UPDATE EXCLUSIVE lock for a moment, which
-- does not block reads or writes.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.tune_queue_for_reads(p_queue text)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_table regclass := to_regclass(format('pgmq.%I', 'q_' || p_queue));
    v_index regclass;
    v_col   text;
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
    -- The payload columns (headers exists from pgmq 1.5 on).
    FOR v_col IN
        SELECT a.attname FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = v_table AND a.attname IN ('message', 'headers') AND NOT a.attisdropped
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET STATISTICS 0', v_table, v_col);
    END LOOP;
END;
$$;
-- +goose StatementEnd

ALTER TABLE tasker.tasks ALTER COLUMN context SET STATISTICS 0;
ALTER TABLE tasker.workflow_steps
    ALTER COLUMN inputs SET STATISTICS 0,
    ALTER COLUMN results SET STATISTICS 0,
    ALTER COLUMN last_error SET STATISTICS 0;
ALTER TABLE tasker.task_transitions ALTER COLUMN metadata SET STATISTICS 0;
ALTER TABLE tasker.workflow_step_transitions ALTER COLUMN metadata SET STATISTICS 0;
ALTER TABLE tasker.dlq_entries ALTER COLUMN snapshot SET STATISTICS 0;

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
        EXECUTE format('ALTER TABLE pgmq.%I ALTER COLUMN message SET STATISTICS -1', 'q_' || v_q);
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                    WHERE attrelid = to_regclass(format('pgmq.%I', 'q_' || v_q)) AND attname = 'headers'
                      AND NOT attisdropped) THEN
            EXECUTE format('ALTER TABLE pgmq.%I ALTER COLUMN headers SET STATISTICS -1', 'q_' || v_q);
        END IF;
    END LOOP;
END;
$$;
-- +goose StatementEnd

ALTER TABLE tasker.tasks ALTER COLUMN context SET STATISTICS -1;
ALTER TABLE tasker.workflow_steps
    ALTER COLUMN inputs SET STATISTICS -1,
    ALTER COLUMN results SET STATISTICS -1,
    ALTER COLUMN last_error SET STATISTICS -1;
ALTER TABLE tasker.task_transitions ALTER COLUMN metadata SET STATISTICS -1;
ALTER TABLE tasker.workflow_step_transitions ALTER COLUMN metadata SET STATISTICS -1;
ALTER TABLE tasker.dlq_entries ALTER COLUMN snapshot SET STATISTICS -1;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.tune_queue_for_reads(p_queue text)
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
