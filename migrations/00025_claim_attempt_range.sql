-- step_claim_batch answers every step it is asked about: never an error for
-- an extreme attempt, never claimed = NULL for a step that does not exist.
--
-- step_claim_batch (00016, guarded by 00021 as step_claim_batch_unchecked)
-- compared a step's attempts with req.a - 1, which overflows integer for
-- the smallest integer: the whole call failed with 22003 (integer out of
-- range), so one such message in a batch kept every other message of it
-- from being claimed, and the batch came back after its visibility timeout
-- to fail again. The comparison is now made in bigint, and such a message is
-- answered like any other stale one (claimed false, "message is for attempt
-- -2147483648 but the step has had 0").
--
-- A step that does not exist was answered claimed = NULL (NULL = ANY of the
-- claimed steps) whenever another step of the batch was claimed; a client
-- reading claimed as a boolean failed on that row after the claims had
-- committed, and the steps it had claimed waited for their leases to
-- expire, an attempt each. It is now false.
--
-- Everything else is as in 00016, with its settings restated (CREATE OR
-- REPLACE resets what it does not restate; the owner-only grants of 00021
-- are kept). Down keeps this definition: the previous one differs only in
-- the two answers above.

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

-- +goose Down
-- See the header: Down keeps this definition.
