-- The result submissions without pgmq's function layers, and the batch's
-- update found through the primary key.
--
-- step_submit_result(s) sent the result notice with pgmq.send/send_batch and
-- deleted the step message with pgmq.delete: each an EXECUTE format() planned
-- on every call, under one or two SQL wrappers. pg_stat_statements, one
-- submission per call: 0.73 ms in all, of which pgmq.send 0.23 ms (its
-- insert 0.05 ms) and pgmq.delete 0.17 ms. The notice queue's name is fixed,
-- so its insert is static SQL here, prepared once per session like the rest
-- of the function (the table layout is pgmq's, checked by the queue
-- package's compatibility tests; the statement-level notify trigger fires
-- for it as for pgmq.send). The step message's queue depends on the
-- namespace, so its delete stays dynamic, without the wrappers.
--
-- step_submit_results' update joined the locked rows to the request with no
-- condition the primary key could serve, and its generic plan walked the
-- worker's in_progress steps (by the lease index, or the whole primary key
-- for a merge join): 6,548 index tuples read for a batch of 50 with 2,000
-- steps in progress. It now probes by `step_uuid = ANY`, as the claim does.
--
-- Both functions keep their settings (00005, 00012, 00013): CREATE OR
-- REPLACE resets what it does not restate, so every one is restated here.
-- Their arguments, results and behaviour are unchanged; Down keeps these
-- definitions.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.step_submit_result(
    p_step_uuid uuid, p_attempt integer, p_worker_id text, p_success boolean,
    p_result jsonb, p_error jsonb, p_msg_id bigint DEFAULT NULL, p_headers jsonb DEFAULT '{}'
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_to    text := CASE WHEN p_success THEN 'enqueued_for_orchestration'
                         ELSE 'enqueued_as_error_for_orchestration' END;
    v_task  uuid;
    v_ns    text;
    v_sort  integer;
BEGIN
    IF p_success IS NULL THEN
        RAISE EXCEPTION 'step_submit_result: success must be true or false' USING ERRCODE = '22023';
    END IF;
    IF NOT p_success AND (p_error IS NULL OR jsonb_typeof(p_error) <> 'object') THEN
        RAISE EXCEPTION 'step_submit_result: a failure needs an error object {"message": ..., "retryable": ...}'
            USING ERRCODE = '22023';
    END IF;

    UPDATE tasker.workflow_steps ws
       SET state = v_to,
           results = CASE WHEN p_success THEN coalesce(p_result, 'null'::jsonb) ELSE ws.results END,
           last_error = CASE WHEN p_success THEN ws.last_error ELSE p_error END,
           lease_expires_at = NULL,
           transition_count = ws.transition_count + 1,
           updated_at = now(),
           state_entered_at = now()
     WHERE ws.step_uuid = p_step_uuid
       AND ws.state = 'in_progress'
       AND ws.claimed_by = p_worker_id
       AND ws.attempts = p_attempt
    RETURNING ws.task_uuid, ws.transition_count INTO v_task, v_sort;

    IF FOUND THEN
        PERFORM tasker.log_step_transitions(
            ARRAY[p_step_uuid], ARRAY[v_task], ARRAY['in_progress'], ARRAY[v_to], ARRAY[v_sort],
            ARRAY[jsonb_build_object('worker_id', p_worker_id, 'attempt', p_attempt)]);
        INSERT INTO pgmq.q_orchestration_step_results (vt, message, headers)
        VALUES (clock_timestamp(),
                jsonb_build_object('task_uuid', v_task, 'step_uuid', p_step_uuid,
                                   'attempt', p_attempt, 'success', p_success),
                coalesce(p_headers, '{}'::jsonb));
    END IF;

    IF p_msg_id IS NOT NULL THEN
        SELECT t.namespace INTO v_ns
          FROM tasker.workflow_steps ws JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid
         WHERE ws.step_uuid = p_step_uuid;
        IF v_ns IS NOT NULL THEN
            EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = $1', 'q_worker_' || v_ns || '_queue')
              USING p_msg_id;
        END IF;
    END IF;
    RETURN v_task IS NOT NULL;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.step_submit_results(
    p_step_uuids uuid[], p_attempts integer[], p_worker_id text, p_success boolean[],
    p_results jsonb[], p_errors jsonb[], p_msg_ids bigint[], p_headers jsonb[]
) RETURNS TABLE (step_uuid uuid, accepted boolean)
-- Runs as the owner, like the rest of the worker protocol (00005): the
-- caller needs no privilege on any table or queue.
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_n     integer := coalesce(cardinality(p_step_uuids), 0);
    v_name  text;
    v_len   integer;
    v_bad   bigint;
    v_step  uuid;
    v_ords  bigint[];
    v_steps uuid[]; v_tasks uuid[]; v_to text[]; v_sort integer[]; v_meta jsonb[];
    v_msgs  jsonb[]; v_hdrs jsonb[];
    v_ns    text;
    v_ids   bigint[];
BEGIN
    -- Shape. cardinality() counts every element of a multidimensional array
    -- (which unnest would flatten): only one-dimensional arrays are accepted.
    SELECT u.name, coalesce(u.len, 0) INTO v_name, v_len
      FROM unnest(ARRAY['p_attempts', 'p_success', 'p_results', 'p_errors', 'p_msg_ids', 'p_headers'],
                  ARRAY[cardinality(p_attempts), cardinality(p_success), cardinality(p_results),
                        cardinality(p_errors), cardinality(p_msg_ids), cardinality(p_headers)])
           WITH ORDINALITY AS u(name, len, ord)
     WHERE coalesce(u.len, 0) <> v_n
     ORDER BY u.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'step_submit_results: % has % elements but p_step_uuids has %: every array needs one element per step (a NULL element where there is nothing)',
            v_name, v_len, v_n
            USING ERRCODE = '22023';
    END IF;
    IF greatest(array_ndims(p_step_uuids), array_ndims(p_attempts), array_ndims(p_success), array_ndims(p_results),
                array_ndims(p_errors), array_ndims(p_msg_ids), array_ndims(p_headers)) > 1 THEN
        RAISE EXCEPTION 'step_submit_results: the arrays must be one-dimensional' USING ERRCODE = '22023';
    END IF;
    IF v_n = 0 THEN
        RETURN;
    END IF;

    -- Per element, as step_submit_result checks its arguments.
    SELECT u.ord, u.s INTO v_bad, v_step
      FROM unnest(p_step_uuids, p_success) WITH ORDINALITY AS u(s, ok, ord)
     WHERE u.ok IS NULL
     ORDER BY u.ord LIMIT 1;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'step_submit_results: element % of % (step %): success must be true or false',
            v_bad, v_n, coalesce(v_step::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    SELECT u.ord, u.s INTO v_bad, v_step
      FROM unnest(p_step_uuids, p_success, p_errors) WITH ORDINALITY AS u(s, ok, err, ord)
     WHERE NOT u.ok AND (u.err IS NULL OR jsonb_typeof(u.err) <> 'object')
     ORDER BY u.ord LIMIT 1;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'step_submit_results: element % of % (step %): a failure needs an error object {"message": ..., "retryable": ...}',
            v_bad, v_n, coalesce(v_step::text, 'NULL')
            USING ERRCODE = '22023';
    END IF;

    -- The compare-and-swap of every element at once. The rows still claimed
    -- by this worker are locked first, in step_uuid order, the order every
    -- writer of several step rows uses, so that concurrent batches cannot
    -- deadlock; the update then checks the full condition. Sequential
    -- semantics: for each (step, attempt) only its first element is a
    -- candidate, and a step row holds one attempt, so at most one element per
    -- step can match it.
    --
    -- The lock and the namespace lookup below probe the primary key once per
    -- element (LATERAL subqueries): PL/pgSQL caches generic plans, and a join
    -- against unnest() planned while workflow_steps was small stays a
    -- sequential scan as the table grows (docs/performance.md). The update
    -- finds its rows by `step_uuid = ANY`, through the primary key: planned
    -- without it, it walked every in_progress step of the worker (00015).
    WITH req AS (
        SELECT u.s, u.a, u.ok, u.res, u.err, u.hdr, u.ord
          FROM unnest(p_step_uuids, p_attempts, p_success, p_results, p_errors, p_headers)
               WITH ORDINALITY AS u(s, a, ok, res, err, hdr, ord)
    ), cand AS (
        SELECT DISTINCT ON (r.s, r.a) r.s, r.a, r.ok, r.res, r.err, r.hdr, r.ord
          FROM req r
         WHERE r.s IS NOT NULL AND r.a IS NOT NULL
         ORDER BY r.s, r.a, r.ord
    ), lockable AS MATERIALIZED (
        SELECT l.step_uuid
          FROM (SELECT DISTINCT u.s FROM unnest(p_step_uuids) AS u(s) WHERE u.s IS NOT NULL ORDER BY u.s) r,
               LATERAL (SELECT ws.step_uuid
                          FROM tasker.workflow_steps ws
                         WHERE ws.step_uuid = r.s AND ws.claimed_by = p_worker_id
                           FOR UPDATE) l
    ), moved AS (
        UPDATE tasker.workflow_steps ws
           SET state = CASE WHEN c.ok THEN 'enqueued_for_orchestration'
                            ELSE 'enqueued_as_error_for_orchestration' END,
               results = CASE WHEN c.ok THEN coalesce(c.res, 'null'::jsonb) ELSE ws.results END,
               last_error = CASE WHEN c.ok THEN ws.last_error ELSE c.err END,
               lease_expires_at = NULL,
               transition_count = ws.transition_count + 1,
               updated_at = now(),
               state_entered_at = now()
          FROM lockable, cand c
         WHERE ws.step_uuid = ANY (p_step_uuids)
           AND ws.step_uuid = lockable.step_uuid
           AND c.s = ws.step_uuid
           AND c.a = ws.attempts
           AND ws.state = 'in_progress'
           AND ws.claimed_by = p_worker_id
        RETURNING ws.step_uuid, ws.task_uuid, ws.state, ws.transition_count, c.a, c.ok, c.hdr, c.ord
    )
    SELECT array_agg(m.ord ORDER BY m.step_uuid),
           array_agg(m.step_uuid ORDER BY m.step_uuid),
           array_agg(m.task_uuid ORDER BY m.step_uuid),
           array_agg(m.state ORDER BY m.step_uuid),
           array_agg(m.transition_count ORDER BY m.step_uuid),
           array_agg(jsonb_build_object('worker_id', p_worker_id, 'attempt', m.a) ORDER BY m.step_uuid),
           -- the notices in the order the worker listed the results
           array_agg(jsonb_build_object('task_uuid', m.task_uuid, 'step_uuid', m.step_uuid,
                                        'attempt', m.a, 'success', m.ok) ORDER BY m.ord),
           array_agg(coalesce(m.hdr, '{}'::jsonb) ORDER BY m.ord)
      INTO v_ords, v_steps, v_tasks, v_to, v_sort, v_meta, v_msgs, v_hdrs
      FROM moved m;

    IF v_steps IS NOT NULL THEN
        PERFORM tasker.log_step_transitions(
            v_steps, v_tasks, array_fill('in_progress'::text, ARRAY[cardinality(v_steps)]), v_to, v_sort, v_meta);
        -- One insert statement, hence one notification for the whole batch.
        INSERT INTO pgmq.q_orchestration_step_results (vt, message, headers)
        SELECT clock_timestamp(), u.m, u.h FROM unnest(v_msgs, v_hdrs) AS u(m, h);
    END IF;

    -- Step messages, accepted or not, one delete per worker queue.
    FOR v_ns, v_ids IN
        SELECT st.namespace, array_agg(DISTINCT u.msg ORDER BY u.msg)
          FROM unnest(p_step_uuids, p_msg_ids) AS u(s, msg),
               LATERAL (SELECT t.namespace
                          FROM tasker.workflow_steps ws JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid
                         WHERE ws.step_uuid = u.s
                         LIMIT 1) st -- LIMIT: keeps the probe from being flattened into a join
         WHERE u.msg IS NOT NULL
         GROUP BY st.namespace
         ORDER BY st.namespace
    LOOP
        EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = ANY ($1)', 'q_worker_' || v_ns || '_queue')
          USING v_ids;
    END LOOP;

    RETURN QUERY
    SELECT u.s, u.ord = ANY (coalesce(v_ords, '{}'))
      FROM unnest(p_step_uuids) WITH ORDINALITY AS u(s, ord)
     ORDER BY u.ord;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- The definitions before these behave the same; Down keeps these.
