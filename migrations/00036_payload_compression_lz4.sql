-- Large JSON payloads compressed with lz4 (docs/performance.md, row 70).
--
-- Postgres compresses a value of more than about 2 kB before it stores it
-- out of line, with pglz unless a column or default_toast_compression says
-- otherwise. pglz is slow: with 16 KiB step results, linear4's submissions
-- (which store each result) and the domain event inserts (whose
-- StepCompleted carries it) spent most of their time compressing, and
-- every read of such a value decompresses it. lz4 compresses and
-- decompresses several times faster, for a little less compression:
--
--   linear4, 2,000 tasks, 16 KiB results, three alternating pairs with
--   default_toast_compression pglz and lz4: Postgres CPU per step 1,252,
--   1,405, 1,514 -> 1,181, 1,195, 1,138 us; 1,132, 1,015, 935 -> 1,146,
--   1,101, 1,187 steps/s; WAL per step 11.8 -> 11.3 kB.
--
-- Set on the engine's large JSON columns (a task's context; a step's
-- inputs, results and last error; a dead-letter snapshot) and, through
-- tasker.tune_queue_for_reads (00020, 00023), on the message and headers of
-- every queue, now and when namespace_provision creates them. Values
-- already stored keep their compression; the change is to the catalog only
-- (no rewrite). A server built without lz4 (configure --with-lz4; the
-- Debian and Docker builds have it) keeps pglz: this migration then changes
-- nothing, and says so.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.tune_queue_for_reads(p_queue text)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_table regclass := to_regclass(format('pgmq.%I', 'q_' || p_queue));
    v_index regclass;
    v_col   text;
    v_lz4   boolean := EXISTS (SELECT 1 FROM pg_catalog.pg_settings
                                WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals));
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
        IF v_lz4 THEN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET COMPRESSION lz4', v_table, v_col);
        END IF;
    END LOOP;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
DECLARE
    v_q text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_settings
                    WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        RAISE NOTICE 'this server has no lz4 (built without --with-lz4): large payloads stay compressed with pglz';
        RETURN;
    END IF;
    ALTER TABLE tasker.tasks ALTER COLUMN context SET COMPRESSION lz4;
    ALTER TABLE tasker.workflow_steps
        ALTER COLUMN inputs SET COMPRESSION lz4,
        ALTER COLUMN results SET COMPRESSION lz4,
        ALTER COLUMN last_error SET COMPRESSION lz4;
    ALTER TABLE tasker.dlq_entries ALTER COLUMN snapshot SET COMPRESSION lz4;
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
        EXECUTE format('ALTER TABLE pgmq.%I ALTER COLUMN message SET COMPRESSION default', 'q_' || v_q);
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                    WHERE attrelid = to_regclass(format('pgmq.%I', 'q_' || v_q)) AND attname = 'headers'
                      AND NOT attisdropped) THEN
            EXECUTE format('ALTER TABLE pgmq.%I ALTER COLUMN headers SET COMPRESSION default', 'q_' || v_q);
        END IF;
    END LOOP;
END;
$$;
-- +goose StatementEnd

ALTER TABLE tasker.tasks ALTER COLUMN context SET COMPRESSION default;
ALTER TABLE tasker.workflow_steps
    ALTER COLUMN inputs SET COMPRESSION default,
    ALTER COLUMN results SET COMPRESSION default,
    ALTER COLUMN last_error SET COMPRESSION default;
ALTER TABLE tasker.dlq_entries ALTER COLUMN snapshot SET COMPRESSION default;

-- tune_queue_for_reads as in 00023.
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
