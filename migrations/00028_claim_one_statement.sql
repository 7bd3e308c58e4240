-- step_claim_batch in one statement.
--
-- The claim (00027's body) ran four statements and a nested function per
-- call: a SELECT … FOR UPDATE of the claimable rows, the UPDATE of the same
-- rows, tasker.log_step_transitions (the most_recent flip and the insert,
-- each a statement of its own) and the answer. Each statement a PL/pgSQL
-- function runs pays executor start-up and shut-down and the plan cache's
-- checks, and locking a row before updating it writes the row twice (a lock
-- record, then the update). The design model (`orchestrator bench --model`,
-- docs/performance.md) does the same compare-and-swap, flip and insert as
-- one statement at about a third of the cost per step.
--
-- Now the update, the flip, the transition rows and the answer are one
-- statement of data-modifying CTEs:
--
--   * the update finds its rows by `step_uuid = ANY (p_step_uuids)` through
--     the primary key, whose array scan visits them in step_uuid order: the
--     order every writer of several step rows locks them in, so concurrent
--     batches still cannot deadlock (the SELECT … FOR UPDATE before it was
--     there for that order only);
--   * the insert of the new transition rows reads the flip's output, so a
--     step's previous row has lost most_recent before its new row is
--     checked against the partial unique index;
--   * the answer reads the moved rows' new values from the update's
--     RETURNING (the statement's own snapshot shows the rows as they were)
--     and everything else (tasks, parents' results, unmoved steps) from the
--     tables, which the statement does not change.
--
-- What a call answers, moves and logs is unchanged (00027's tests hold).
-- Down restores 00027's definition.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.step_claim_batch_unchecked(
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
           r.s, ws.task_uuid, t.namespace, ws.name, ws.handler, coalesce(m.attempts, ws.attempts), ws.max_attempts,
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

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.step_claim_batch_unchecked(
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
DECLARE
    v_steps uuid[];
    v_tasks uuid[];
    v_sort  integer[];
    v_n     integer;
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

    -- Lock in step_uuid order, the order every writer of step rows uses, so
    -- that concurrent batches cannot deadlock.
    WITH req AS (
        SELECT r.s, max(r.a) AS a
          FROM unnest(p_step_uuids, p_attempts) AS r(s, a)
         GROUP BY r.s
    ), lockable AS (
        SELECT ws.step_uuid
          FROM tasker.workflow_steps ws
          JOIN req ON req.s = ws.step_uuid
         WHERE ws.step_uuid = ANY (p_step_uuids)
           -- bigint: req.a - 1 overflowed integer for attempt -2147483648.
           AND ws.state = 'enqueued' AND ws.attempts = req.a::bigint - 1
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
          FROM lockable
         WHERE ws.step_uuid = ANY (p_step_uuids) AND ws.step_uuid = lockable.step_uuid
           AND ws.state = 'enqueued'
        RETURNING ws.step_uuid, ws.task_uuid, ws.transition_count
    )
    SELECT array_agg(m.step_uuid), array_agg(m.task_uuid), array_agg(m.transition_count)
      INTO v_steps, v_tasks, v_sort
      FROM moved m;

    v_n := coalesce(array_length(v_steps, 1), 0);
    IF v_n > 0 THEN
        PERFORM tasker.log_step_transitions(
            v_steps, v_tasks,
            array_fill('enqueued'::text, ARRAY[v_n]),
            array_fill('in_progress'::text, ARRAY[v_n]),
            v_sort,
            array_fill(jsonb_build_object('worker_id', p_worker_id, 'trigger', 'claim'), ARRAY[v_n]));
    END IF;

    -- One entry per step is answered claimed: the first of those with the
    -- highest attempt, the one the claim went through. Any other entry for
    -- the step (a stale message, a duplicate) is answered not claimed, so a
    -- client that deletes the messages of unclaimed entries keeps exactly
    -- one run. Rows come back in the order of the entries.
    RETURN QUERY
    SELECT coalesce(r.chosen AND ws.step_uuid = ANY (coalesce(v_steps, '{}')), false) AS claimed,
           CASE
               WHEN ws.step_uuid IS NULL THEN 'step not found'
               WHEN ws.step_uuid = ANY (coalesce(v_steps, '{}')) THEN
                   CASE
                       WHEN r.chosen THEN ''
                       WHEN r.a = ws.attempts THEN 'step claimed through another entry of this call for attempt ' || r.a
                       ELSE 'message is for attempt ' || r.a || ' but the step has had ' || ws.attempts
                   END
               WHEN ws.state <> 'enqueued' THEN 'step is ' || ws.state
               ELSE 'message is for attempt ' || r.a || ' but the step has had ' || ws.attempts
           END AS reason,
           r.s, ws.task_uuid, t.namespace, ws.name, ws.handler, ws.attempts, ws.max_attempts,
           ws.timeout_seconds, t.correlation_id, t.traceparent,
           CASE WHEN r.chosen AND ws.step_uuid = ANY (coalesce(v_steps, '{}')) THEN t.context END,
           CASE WHEN r.chosen AND ws.step_uuid = ANY (coalesce(v_steps, '{}')) THEN ws.inputs END,
           CASE WHEN r.chosen AND ws.step_uuid = ANY (coalesce(v_steps, '{}')) THEN
               -- Each parent by its primary key (LIMIT keeps the probe from
               -- being flattened into a join; see 00016).
               (SELECT coalesce(jsonb_object_agg(p.name, coalesce(p.results, 'null'::jsonb)), '{}'::jsonb)
                  FROM tasker.workflow_step_edges e,
                       LATERAL (SELECT ps.name, ps.results FROM tasker.workflow_steps ps
                                 WHERE ps.step_uuid = e.from_step LIMIT 1) p
                 WHERE e.to_step = ws.step_uuid)
           END
      FROM (SELECT u.s, u.a, u.o,
                   row_number() OVER (PARTITION BY u.s ORDER BY u.a DESC, u.o) = 1 AS chosen
              FROM unnest(p_step_uuids, p_attempts) WITH ORDINALITY AS u(s, a, o)) r
      LEFT JOIN tasker.workflow_steps ws ON ws.step_uuid = r.s AND ws.step_uuid = ANY (p_step_uuids)
      LEFT JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid
     ORDER BY r.o;
END;
$$;
-- +goose StatementEnd
