-- step_claim_batch answers claimed for one entry per step.
--
-- Given several entries for one step (a duplicate delivery, a stale message
-- of an earlier attempt), step_claim_batch (00016, guarded by 00021, 00025's
-- body) claimed the step once, at the highest attempt, and answered every
-- entry for it alike: all of them came back claimed. A client that follows
-- the protocol's plain rule (claimed: run the handler; not claimed: delete
-- the message) ran the handler once per entry, and the second run's
-- submission was refused after the handler's side effects. Both SDKs send
-- one entry per step, but other clients need not.
--
-- Now the first entry with the highest attempt (the one the claim went
-- through) is answered claimed, with the task context, inputs and
-- dependency results; every other entry of the step is answered not claimed
-- with a reason ("message is for attempt 1 but the step has had 2", or
-- "step claimed through another entry of this call for attempt 2" for an
-- exact duplicate). Rows come back in the order of the entries. The claim
-- itself (which steps move, at which attempt) is unchanged, and so is the
-- answer for a step with one entry.
--
-- Everything else is as in 00025, with its settings restated (CREATE OR
-- REPLACE resets what it does not restate and keeps the owner-only grants
-- of 00021). Down restores 00025's definition.

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

    RETURN QUERY
    -- coalesce: NULL = ANY (a non-empty array) is NULL, not false.
    SELECT coalesce(ws.step_uuid = ANY (coalesce(v_steps, '{}')), false) AS claimed,
           CASE
               WHEN ws.step_uuid IS NULL THEN 'step not found'
               WHEN ws.step_uuid = ANY (coalesce(v_steps, '{}')) THEN ''
               WHEN ws.state <> 'enqueued' THEN 'step is ' || ws.state
               ELSE 'message is for attempt ' || r.a || ' but the step has had ' || ws.attempts
           END AS reason,
           r.s, ws.task_uuid, t.namespace, ws.name, ws.handler, ws.attempts, ws.max_attempts,
           ws.timeout_seconds, t.correlation_id, t.traceparent,
           CASE WHEN ws.step_uuid = ANY (coalesce(v_steps, '{}')) THEN t.context END,
           CASE WHEN ws.step_uuid = ANY (coalesce(v_steps, '{}')) THEN ws.inputs END,
           CASE WHEN ws.step_uuid = ANY (coalesce(v_steps, '{}')) THEN
               -- Each parent by its primary key (LIMIT keeps the probe from
               -- being flattened into a join; see the header).
               (SELECT coalesce(jsonb_object_agg(p.name, coalesce(p.results, 'null'::jsonb)), '{}'::jsonb)
                  FROM tasker.workflow_step_edges e,
                       LATERAL (SELECT ps.name, ps.results FROM tasker.workflow_steps ps
                                 WHERE ps.step_uuid = e.from_step LIMIT 1) p
                 WHERE e.to_step = ws.step_uuid)
           END
      FROM unnest(p_step_uuids, p_attempts) AS r(s, a)
      LEFT JOIN tasker.workflow_steps ws ON ws.step_uuid = r.s AND ws.step_uuid = ANY (p_step_uuids)
      LEFT JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid;
END;
$$;
-- +goose StatementEnd
