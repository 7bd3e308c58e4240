-- The claim and the batch submission check the caller's namespaces in
-- their own statements.
--
-- Since 00021 every protocol function a worker calls is a guard: it ran
-- tasker.assert_serves_steps (each step's task read by primary key, the
-- namespaces asked once each) and then the unchecked definition, which read
-- the same steps and tasks again. In `make bench` the assert was 79 µs of
-- Postgres self time per linear4 step and 146 µs per single task (0.44–0.60
-- ms per call), beside claims of 3–4 ms; the design model
-- (docs/performance.md) has no such check and the engine's claim and
-- submission cost it most.
--
-- Now the two calls a Go worker makes per batch do the check where they
-- already read the steps' tasks:
--
--   * step_claim_batch is 00028's claim with the check in its answer: the
--     answer joins each found step's task, and its namespace column is the
--     namespace when the caller serves it and a call of
--     tasker.deny_namespace (which raises insufficient_privilege, as the
--     assert did) otherwise, so a denial undoes the whole statement;
--   * step_submit_results is 00015's batch submission whose per-namespace
--     loop (it deleted the step messages) now runs over every namespace
--     among the steps found and asks each before deleting anything.
--
-- tasker.serves_namespace is the assert's test as an SQL function the
-- planner inlines. The error is the assert's, and so is the rule: steps that
-- do not exist are left to the function, which reports them as before.
-- step_claim (one step) calls step_claim_batch; the single-result
-- submission, heartbeat and release keep their guards. The _unchecked
-- definitions stay for the owner. Down restores the guards of 00021.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION tasker.serves_namespace(p_ns text)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(has_table_privilege(session_user,
                        to_regclass(format('pgmq.%I', 'q_worker_' || p_ns || '_queue')), 'DELETE'), false)
        OR coalesce(pg_has_role(session_user, to_regrole('tasker_worker_' || p_ns), 'MEMBER'), false)
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION tasker.serves_namespace(text) FROM PUBLIC;

-- +goose StatementBegin
CREATE FUNCTION tasker.deny_namespace(p_ns text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'permission denied: role % does not serve namespace % (it is not a member of tasker_worker_%)',
        session_user, p_ns, p_ns
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION tasker.deny_namespace(text) FROM PUBLIC;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.step_claim_batch(
    p_step_uuids uuid[], p_attempts integer[], p_worker_id text, p_lease_seconds integer
) RETURNS TABLE (
    claimed boolean, reason text, step_uuid uuid, task_uuid uuid, namespace text,
    step_name text, handler text, attempt integer, max_attempts integer,
    timeout_seconds integer, correlation_id uuid, traceparent text,
    task_context jsonb, step_inputs jsonb, dependency_results jsonb
)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    IF p_lease_seconds IS NULL OR p_lease_seconds < 1 THEN
        RAISE EXCEPTION 'step_claim: lease_seconds must be at least 1, got %', p_lease_seconds
            USING ERRCODE = '22023';
    END IF;
    IF coalesce(p_worker_id, '') = '' THEN
        RAISE EXCEPTION 'step_claim: worker_id is required' USING ERRCODE = '22023';
    END IF;
    IF coalesce(array_length(p_step_uuids, 1), 0) <> coalesce(array_length(p_attempts, 1), 0) THEN
        RAISE EXCEPTION 'step_claim: % step uuids but % attempts',
            coalesce(array_length(p_step_uuids, 1), 0), coalesce(array_length(p_attempts, 1), 0)
            USING ERRCODE = '22023';
    END IF;

    RETURN QUERY
    WITH r AS MATERIALIZED (
        -- One entry per step is the claim's: the first of those with the
        -- highest attempt.
        SELECT u.s, u.a, u.o,
               row_number() OVER (PARTITION BY u.s ORDER BY u.a DESC, u.o) = 1 AS chosen
          FROM unnest(p_step_uuids, p_attempts) WITH ORDINALITY AS u(s, a, o)
    ), lockable AS (
        -- Locked in step_uuid order, the order every writer of several
        -- step rows uses, so that concurrent batches cannot deadlock (the
        -- update's own scan visits its rows in the heap's order).
        SELECT ws.step_uuid
          FROM tasker.workflow_steps ws
          JOIN r ON r.s = ws.step_uuid AND r.chosen
         WHERE ws.step_uuid = ANY (p_step_uuids)
           -- bigint: r.a - 1 overflowed integer for attempt -2147483648.
           AND ws.state = 'enqueued' AND ws.attempts = r.a::bigint - 1
         ORDER BY ws.step_uuid
           FOR UPDATE OF ws
    ), moved AS (
        UPDATE tasker.workflow_steps ws
           SET state = 'in_progress',
               attempts = ws.attempts + 1,
               claimed_by = p_worker_id,
               lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
               transition_count = ws.transition_count + 1,
               updated_at = now(),
               state_entered_at = now()
          FROM lockable l
         WHERE ws.step_uuid = ANY (p_step_uuids) AND ws.step_uuid = l.step_uuid
           AND ws.state = 'enqueued'
        RETURNING ws.step_uuid, ws.task_uuid, ws.transition_count, ws.attempts
    ), flipped AS (
        UPDATE tasker.workflow_step_transitions tr
           SET most_recent = false
         WHERE tr.step_uuid = ANY (ARRAY(SELECT m.step_uuid FROM moved m)) AND tr.most_recent
        RETURNING tr.step_uuid
    ), logged AS (
        INSERT INTO tasker.workflow_step_transitions
               (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, metadata)
        SELECT m.step_uuid, m.task_uuid, 'enqueued', 'in_progress', m.transition_count, true,
               jsonb_build_object('worker_id', p_worker_id, 'trigger', 'claim')
          FROM moved m LEFT JOIN flipped f ON f.step_uuid = m.step_uuid
    )
    -- Rows come back in the order of the entries. An entry is claimed when
    -- it is its step's chosen one and the step moved; any other entry of a
    -- moved step is answered not claimed with the reason.
    SELECT coalesce(r.chosen AND m.step_uuid IS NOT NULL, false) AS claimed,
           CASE
               WHEN ws.step_uuid IS NULL THEN 'step not found'
               WHEN m.step_uuid IS NOT NULL THEN
                   CASE
                       WHEN r.chosen THEN ''
                       WHEN r.a = m.attempts THEN 'step claimed through another entry of this call for attempt ' || r.a
                       ELSE 'message is for attempt ' || r.a || ' but the step has had ' || m.attempts
                   END
               WHEN ws.state <> 'enqueued' THEN 'step is ' || ws.state
               ELSE 'message is for attempt ' || r.a || ' but the step has had ' || ws.attempts
           END AS reason,
           r.s, ws.task_uuid,
           -- The caller must serve every namespace among the steps found
           -- (00021): a denial raises here and undoes the whole statement.
           CASE WHEN t.namespace IS NULL OR tasker.serves_namespace(t.namespace) THEN t.namespace
                ELSE tasker.deny_namespace(t.namespace) END,
           ws.name, ws.handler, coalesce(m.attempts, ws.attempts), ws.max_attempts,
           ws.timeout_seconds, t.correlation_id, t.traceparent,
           CASE WHEN r.chosen AND m.step_uuid IS NOT NULL THEN t.context END,
           CASE WHEN r.chosen AND m.step_uuid IS NOT NULL THEN ws.inputs END,
           CASE WHEN r.chosen AND m.step_uuid IS NOT NULL THEN
               -- Each parent by its primary key (LIMIT keeps the probe from
               -- being flattened into a join; see 00016).
               (SELECT coalesce(jsonb_object_agg(p.name, coalesce(p.results, 'null'::jsonb)), '{}'::jsonb)
                  FROM tasker.workflow_step_edges e,
                       LATERAL (SELECT ps.name, ps.results FROM tasker.workflow_steps ps
                                 WHERE ps.step_uuid = e.from_step LIMIT 1) p
                 WHERE e.to_step = ws.step_uuid)
           END
      FROM r
      LEFT JOIN moved m ON m.step_uuid = r.s
      LEFT JOIN tasker.workflow_steps ws ON ws.step_uuid = r.s AND ws.step_uuid = ANY (p_step_uuids)
      LEFT JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid
     ORDER BY r.o;
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

    -- The namespaces of the steps found, each asked once: the caller must
    -- serve every one of them (00021; a denial raises and undoes the whole
    -- call). Then the step messages, accepted or not, one delete per
    -- worker queue.
    FOR v_ns, v_ids IN
        SELECT st.namespace, array_agg(DISTINCT u.msg ORDER BY u.msg) FILTER (WHERE u.msg IS NOT NULL)
          FROM unnest(p_step_uuids, p_msg_ids) AS u(s, msg),
               LATERAL (SELECT t.namespace
                          FROM tasker.workflow_steps ws JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid
                         WHERE ws.step_uuid = u.s
                         LIMIT 1) st -- LIMIT: keeps the probe from being flattened into a join
         GROUP BY st.namespace
         ORDER BY st.namespace
    LOOP
        IF NOT tasker.serves_namespace(v_ns) THEN
            PERFORM tasker.deny_namespace(v_ns);
        END IF;
        IF v_ids IS NOT NULL THEN
            EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = ANY ($1)', 'q_worker_' || v_ns || '_queue')
              USING v_ids;
        END IF;
    END LOOP;

    RETURN QUERY
    SELECT u.s, u.ord = ANY (coalesce(v_ords, '{}'))
      FROM unnest(p_step_uuids) WITH ORDINALITY AS u(s, ord)
     ORDER BY u.ord;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.step_claim_batch(
    p_step_uuids uuid[], p_attempts integer[], p_worker_id text, p_lease_seconds integer
) RETURNS TABLE (
    claimed boolean, reason text, step_uuid uuid, task_uuid uuid, namespace text,
    step_name text, handler text, attempt integer, max_attempts integer,
    timeout_seconds integer, correlation_id uuid, traceparent text,
    task_context jsonb, step_inputs jsonb, dependency_results jsonb
)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tasker.assert_serves_steps(p_step_uuids);
    RETURN QUERY SELECT * FROM tasker.step_claim_batch_unchecked(p_step_uuids, p_attempts, p_worker_id, p_lease_seconds);
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.step_submit_results(
    p_step_uuids uuid[], p_attempts integer[], p_worker_id text, p_success boolean[],
    p_results jsonb[], p_errors jsonb[], p_msg_ids bigint[], p_headers jsonb[]
) RETURNS TABLE (step_uuid uuid, accepted boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tasker.assert_serves_steps(p_step_uuids);
    RETURN QUERY SELECT * FROM tasker.step_submit_results_unchecked(p_step_uuids, p_attempts, p_worker_id, p_success,
                                                                    p_results, p_errors, p_msg_ids, p_headers);
END;
$$;
-- +goose StatementEnd

DROP FUNCTION tasker.deny_namespace(text);
DROP FUNCTION tasker.serves_namespace(text);
