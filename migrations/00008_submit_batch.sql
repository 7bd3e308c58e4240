-- step_submit_results submits the results of several finished steps in one
-- transaction: the set-based twin of step_submit_result (00003), which stays
-- as it is for workers that submit one step at a time.
--
-- Each element i is (p_step_uuids[i], p_attempts[i], p_success[i],
-- p_results[i], p_errors[i], p_msg_ids[i], p_headers[i]), all for worker
-- p_worker_id, and gets exactly what step_submit_result would do with it had
-- the elements been submitted one after the other in array order: the step
-- moves in_progress -> enqueued_for_orchestration (success) or
-- enqueued_as_error_for_orchestration (failure) if and only if the worker
-- still holds that attempt, its result or error is stored, a notice
-- {task_uuid, step_uuid, attempt, success} with headers p_headers[i] goes to
-- orchestration_step_results, and the message p_msg_ids[i] (when not NULL)
-- is deleted from the step's worker queue whether or not the element was
-- accepted. So of several elements naming one step and attempt only the first
-- can be accepted; the rest are duplicates.
--
-- Why a second function: every step_submit_result is a transaction that
-- sends a notice, and the notify trigger on orchestration_step_results makes
-- each such commit take the database-wide NOTIFY lock (docs/performance.md,
-- "Where the time goes"). Here the whole batch is one update, one transition
-- log call, one send_batch (one NOTIFY) and one delete per namespace.
--
-- It returns one row per element, in array order: the element's step and
-- whether it was accepted. Arrays of different lengths, a NULL success, and
-- a failure without an error object are rejected before anything changes,
-- naming the first offending element (1-based).

-- +goose Up

-- +goose StatementBegin
CREATE FUNCTION tasker.step_submit_results(
    p_step_uuids uuid[], p_attempts integer[], p_worker_id text, p_success boolean[],
    p_results jsonb[], p_errors jsonb[], p_msg_ids bigint[], p_headers jsonb[]
) RETURNS TABLE (step_uuid uuid, accepted boolean)
LANGUAGE plpgsql VOLATILE
-- Runs as the owner, like the rest of the worker protocol (00005): the
-- caller needs no privilege on any table or queue.
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
    -- against unnest() or an "= ANY" planned while workflow_steps was small
    -- stays a sequential scan as the table grows (docs/performance.md). The
    -- update itself may be planned over the partial index of in_progress
    -- steps, which holds only the steps being worked on.
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
         WHERE ws.step_uuid = lockable.step_uuid
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
        PERFORM pgmq.send_batch('orchestration_step_results', v_msgs, v_hdrs, 0);
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
        PERFORM pgmq.delete('worker_' || v_ns || '_queue', v_ids);
    END LOOP;

    RETURN QUERY
    SELECT u.s, u.ord = ANY (coalesce(v_ords, '{}'))
      FROM unnest(p_step_uuids) WITH ORDINALITY AS u(s, ord)
     ORDER BY u.ord;
END;
$$;
-- +goose StatementEnd

-- Workers may call it; PUBLIC may not (00005 revokes EXECUTE from PUBLIC by
-- default, but only for functions created by the role that ran 00005).
REVOKE ALL ON FUNCTION tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[])
    TO tasker_worker, tasker_api;

-- +goose Down
DROP FUNCTION IF EXISTS tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]);
