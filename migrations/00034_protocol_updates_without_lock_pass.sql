-- The worker protocol's compare-and-swaps without a locking pass.
--
-- step_claim_batch (00031) and step_submit_results (00029) locked the rows
-- they were about to update in a statement of their own (`SELECT … FOR
-- UPDATE` in step_uuid order, so that concurrent batches cannot deadlock),
-- then updated them joined to that set. Their plans are generic (the
-- functions run with plan_cache_mode = force_generic_plan), made for an
-- array of unknown length: the estimates say one row, and the planner
-- joined the rows found by `step_uuid = ANY` to the locked set and to the
-- requests by nested loops that scan the other side once per row. A batch
-- of 50 compared 2,450 pairs per join, twice in each function; with the
-- row locks (a WAL record each) that was most of their time (auto_explain:
-- 1.1 of the claim's 1.8 ms, 2.2 of the submission's 3.6 ms).
--
-- The update itself now moves the rows, in two small functions that plan
-- it with nested loops and bitmap scans turned off (neither can be turned
-- off for the callers' other statements, whose primary-key probes need
-- nested loops): the steps are read by `step_uuid = ANY` through the
-- primary key, in key order, and merged or hashed with the requests, so
-- every plan left visits them in step_uuid order, and the update locks
-- each as it goes, in the order every writer of several step rows uses.
-- No row is locked twice. The functions' answers are unchanged. Down
-- restores 00031's claim and 00029's submission.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION tasker.step_claim_cas(
    p_step_uuids uuid[], p_attempts integer[], p_worker_id text, p_lease_seconds integer
) RETURNS TABLE (step_uuid uuid, task_uuid uuid, transition_count integer, attempts integer)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_nestloop = off
SET plan_cache_mode = force_generic_plan
SET jit = off AS $$
#variable_conflict use_column
BEGIN
    -- One entry per step is the claim's: the first of those with the
    -- highest attempt (step_claim_batch answers the others).
    RETURN QUERY
    WITH r AS (
        SELECT u.s, u.a, row_number() OVER (PARTITION BY u.s ORDER BY u.a DESC, u.o) = 1 AS chosen
          FROM unnest(p_step_uuids, p_attempts) WITH ORDINALITY AS u(s, a, o)
    ), moved AS (
        UPDATE tasker.workflow_steps ws
           SET state = 'in_progress',
               attempts = ws.attempts + 1,
               claimed_by = p_worker_id,
               lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
               transition_count = ws.transition_count + 1,
               updated_at = now(),
               state_entered_at = now()
          FROM r
         WHERE ws.step_uuid = ANY (p_step_uuids) AND ws.step_uuid = r.s AND r.chosen
           -- bigint: r.a - 1 overflowed integer for attempt -2147483648.
           AND ws.state = 'enqueued' AND ws.attempts = r.a::bigint - 1
        RETURNING ws.step_uuid, ws.task_uuid, ws.transition_count, ws.attempts
    )
    SELECT * FROM moved;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION tasker.step_claim_cas(uuid[], integer[], text, integer) FROM PUBLIC;

-- +goose StatementBegin
CREATE FUNCTION tasker.step_submit_cas(
    p_step_uuids uuid[], p_attempts integer[], p_worker_id text, p_success boolean[],
    p_results jsonb[], p_errors jsonb[], p_headers jsonb[]
) RETURNS TABLE (step_uuid uuid, task_uuid uuid, state text, transition_count integer,
                 attempt integer, success boolean, hdr jsonb, ord bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_nestloop = off
SET plan_cache_mode = force_generic_plan
SET jit = off AS $$
#variable_conflict use_column
BEGIN
    -- Sequential semantics: for each (step, attempt) only its first element
    -- is a candidate, and a step row holds one attempt, so at most one
    -- element per step can match it.
    RETURN QUERY
    WITH cand AS (
        SELECT DISTINCT ON (u.s, u.a) u.s, u.a, u.ok, u.res, u.err, u.hdr, u.ord
          FROM unnest(p_step_uuids, p_attempts, p_success, p_results, p_errors, p_headers)
               WITH ORDINALITY AS u(s, a, ok, res, err, hdr, ord)
         WHERE u.s IS NOT NULL AND u.a IS NOT NULL
         ORDER BY u.s, u.a, u.ord
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
          FROM cand c
         WHERE ws.step_uuid = ANY (p_step_uuids)
           AND c.s = ws.step_uuid
           AND c.a = ws.attempts
           AND ws.state = 'in_progress'
           AND ws.claimed_by = p_worker_id
        RETURNING ws.step_uuid, ws.task_uuid, ws.state, ws.transition_count, c.a, c.ok, c.hdr, c.ord
    )
    SELECT * FROM moved;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION tasker.step_submit_cas(uuid[], integer[], text, boolean[], jsonb[], jsonb[], jsonb[]) FROM PUBLIC;

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
SET plan_cache_mode = force_generic_plan
SET jit = off AS $$
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

    IF cardinality(p_step_uuids) = 1 THEN
        -- One step: the batch's answer for one entry, without the batch's
        -- machinery. With one entry there is no choice between entries and
        -- one row needs no lock order: no window function, no lock taken
        -- first, no hash joins. The update's own row lock is the claim's,
        -- and its conditions are checked again if it waited for it.
        RETURN QUERY
        WITH moved AS (
            UPDATE tasker.workflow_steps ws
               SET state = 'in_progress',
                   attempts = ws.attempts + 1,
                   claimed_by = p_worker_id,
                   lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
                   transition_count = ws.transition_count + 1,
                   updated_at = now(),
                   state_entered_at = now()
             WHERE ws.step_uuid = p_step_uuids[1]
               AND ws.state = 'enqueued' AND ws.attempts = p_attempts[1]::bigint - 1
            RETURNING ws.step_uuid, ws.task_uuid, ws.transition_count, ws.attempts
        ), flipped AS (
            UPDATE tasker.workflow_step_transitions tr
               SET most_recent = false
             WHERE tr.step_uuid = (SELECT m.step_uuid FROM moved m) AND tr.most_recent
            RETURNING tr.step_uuid
        ), logged AS (
            INSERT INTO tasker.workflow_step_transitions
                   (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, metadata)
            SELECT m.step_uuid, m.task_uuid, 'enqueued', 'in_progress', m.transition_count, true,
                   jsonb_build_object('worker_id', p_worker_id, 'trigger', 'claim')
              FROM moved m LEFT JOIN flipped f ON f.step_uuid = m.step_uuid
        )
        SELECT m.step_uuid IS NOT NULL,
               CASE
                   WHEN ws.step_uuid IS NULL THEN 'step not found'
                   WHEN m.step_uuid IS NOT NULL THEN ''
                   WHEN ws.state <> 'enqueued' THEN 'step is ' || ws.state
                   ELSE 'message is for attempt ' || p_attempts[1] || ' but the step has had ' || ws.attempts
               END,
               p_step_uuids[1], ws.task_uuid,
               CASE WHEN t.namespace IS NULL OR tasker.serves_namespace(t.namespace) THEN t.namespace
                    ELSE tasker.deny_namespace(t.namespace) END,
               ws.name, ws.handler, coalesce(m.attempts, ws.attempts), ws.max_attempts,
               ws.timeout_seconds, t.correlation_id, t.traceparent,
               CASE WHEN m.step_uuid IS NOT NULL THEN t.context END,
               CASE WHEN m.step_uuid IS NOT NULL THEN ws.inputs END,
               CASE WHEN m.step_uuid IS NOT NULL THEN
                   (SELECT coalesce(jsonb_object_agg(p.name, coalesce(p.results, 'null'::jsonb)), '{}'::jsonb)
                      FROM tasker.workflow_step_edges e,
                           LATERAL (SELECT ps.name, ps.results FROM tasker.workflow_steps ps
                                     WHERE ps.step_uuid = e.from_step LIMIT 1) p
                     WHERE e.to_step = ws.step_uuid)
               END
          FROM (SELECT 1) AS one
          LEFT JOIN moved m ON true
          LEFT JOIN tasker.workflow_steps ws ON ws.step_uuid = p_step_uuids[1]
          LEFT JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid;
        RETURN;
    END IF;

    RETURN QUERY
    WITH r AS MATERIALIZED (
        -- One entry per step is the claim's: the first of those with the
        -- highest attempt.
        SELECT u.s, u.a, u.o,
               row_number() OVER (PARTITION BY u.s ORDER BY u.a DESC, u.o) = 1 AS chosen
          FROM unnest(p_step_uuids, p_attempts) WITH ORDINALITY AS u(s, a, o)
    ), moved AS (
        -- The compare-and-swap (step_claim_cas) visits the steps in
        -- step_uuid order and locks each as it updates it.
        SELECT * FROM tasker.step_claim_cas(p_step_uuids, p_attempts, p_worker_id, p_lease_seconds)
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
SET plan_cache_mode = force_generic_plan
SET jit = off AS $$
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

    -- The compare-and-swap of every element at once (step_submit_cas): it
    -- visits the steps in step_uuid order, the order every writer of
    -- several step rows uses, and locks each as it updates it.
    SELECT array_agg(m.ord ORDER BY m.step_uuid),
           array_agg(m.step_uuid ORDER BY m.step_uuid),
           array_agg(m.task_uuid ORDER BY m.step_uuid),
           array_agg(m.state ORDER BY m.step_uuid),
           array_agg(m.transition_count ORDER BY m.step_uuid),
           array_agg(jsonb_build_object('worker_id', p_worker_id, 'attempt', m.attempt) ORDER BY m.step_uuid),
           -- the notices in the order the worker listed the results
           array_agg(jsonb_build_object('task_uuid', m.task_uuid, 'step_uuid', m.step_uuid,
                                        'attempt', m.attempt, 'success', m.success) ORDER BY m.ord),
           array_agg(coalesce(m.hdr, '{}'::jsonb) ORDER BY m.ord)
      INTO v_ords, v_steps, v_tasks, v_to, v_sort, v_meta, v_msgs, v_hdrs
      FROM tasker.step_submit_cas(p_step_uuids, p_attempts, p_worker_id, p_success, p_results, p_errors, p_headers) m;

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

    IF cardinality(p_step_uuids) = 1 THEN
        -- One step: the batch's answer for one entry, without the batch's
        -- machinery. With one entry there is no choice between entries and
        -- one row needs no lock order: no window function, no lock taken
        -- first, no hash joins. The update's own row lock is the claim's,
        -- and its conditions are checked again if it waited for it.
        RETURN QUERY
        WITH moved AS (
            UPDATE tasker.workflow_steps ws
               SET state = 'in_progress',
                   attempts = ws.attempts + 1,
                   claimed_by = p_worker_id,
                   lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
                   transition_count = ws.transition_count + 1,
                   updated_at = now(),
                   state_entered_at = now()
             WHERE ws.step_uuid = p_step_uuids[1]
               AND ws.state = 'enqueued' AND ws.attempts = p_attempts[1]::bigint - 1
            RETURNING ws.step_uuid, ws.task_uuid, ws.transition_count, ws.attempts
        ), flipped AS (
            UPDATE tasker.workflow_step_transitions tr
               SET most_recent = false
             WHERE tr.step_uuid = (SELECT m.step_uuid FROM moved m) AND tr.most_recent
            RETURNING tr.step_uuid
        ), logged AS (
            INSERT INTO tasker.workflow_step_transitions
                   (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, metadata)
            SELECT m.step_uuid, m.task_uuid, 'enqueued', 'in_progress', m.transition_count, true,
                   jsonb_build_object('worker_id', p_worker_id, 'trigger', 'claim')
              FROM moved m LEFT JOIN flipped f ON f.step_uuid = m.step_uuid
        )
        SELECT m.step_uuid IS NOT NULL,
               CASE
                   WHEN ws.step_uuid IS NULL THEN 'step not found'
                   WHEN m.step_uuid IS NOT NULL THEN ''
                   WHEN ws.state <> 'enqueued' THEN 'step is ' || ws.state
                   ELSE 'message is for attempt ' || p_attempts[1] || ' but the step has had ' || ws.attempts
               END,
               p_step_uuids[1], ws.task_uuid,
               CASE WHEN t.namespace IS NULL OR tasker.serves_namespace(t.namespace) THEN t.namespace
                    ELSE tasker.deny_namespace(t.namespace) END,
               ws.name, ws.handler, coalesce(m.attempts, ws.attempts), ws.max_attempts,
               ws.timeout_seconds, t.correlation_id, t.traceparent,
               CASE WHEN m.step_uuid IS NOT NULL THEN t.context END,
               CASE WHEN m.step_uuid IS NOT NULL THEN ws.inputs END,
               CASE WHEN m.step_uuid IS NOT NULL THEN
                   (SELECT coalesce(jsonb_object_agg(p.name, coalesce(p.results, 'null'::jsonb)), '{}'::jsonb)
                      FROM tasker.workflow_step_edges e,
                           LATERAL (SELECT ps.name, ps.results FROM tasker.workflow_steps ps
                                     WHERE ps.step_uuid = e.from_step LIMIT 1) p
                     WHERE e.to_step = ws.step_uuid)
               END
          FROM (SELECT 1) AS one
          LEFT JOIN moved m ON true
          LEFT JOIN tasker.workflow_steps ws ON ws.step_uuid = p_step_uuids[1]
          LEFT JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid;
        RETURN;
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
ALTER FUNCTION tasker.step_claim_batch(uuid[], integer[], text, integer) SET jit = off;
ALTER FUNCTION tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]) SET jit = off;
DROP FUNCTION tasker.step_claim_cas(uuid[], integer[], text, integer);
DROP FUNCTION tasker.step_submit_cas(uuid[], integer[], text, boolean[], jsonb[], jsonb[], jsonb[]);
