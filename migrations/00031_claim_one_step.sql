-- A claim of one step runs a statement of its own.
--
-- Every single task of an open loop is claimed alone, and so is any step a
-- worker reads by itself. step_claim_batch answered it with the batch's
-- statement: the entries ranked by a window function, the steps locked
-- first in step_uuid order (so that concurrent batches cannot deadlock),
-- hash joins of the entries with the moved rows. For one entry none of that
-- decides anything, and each plan node costs its start-up on every call.
--
-- step_claim_batch now answers a one-entry call with a statement of its own:
-- the update by primary key with its transition rows, and the answer from
-- the step and its task as the batch statement gives it for one entry (the
-- same columns, reasons, namespace check and dependency results). Calls of
-- two or more entries run 00029's statement unchanged. Down restores
-- 00029's function.

-- +goose Up
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
