-- Transition logging and the worker protocol (DESIGN §6): plain SQL functions,
-- so that a worker in any language with a Postgres driver can claim a step,
-- keep its lease alive and submit its result. Each function is one statement
-- from the caller's side, hence one transaction unless the caller opens one.

-- +goose Up

-- log_step_transitions appends transition rows for steps whose state column
-- has just been moved by a compare-and-swap in the same transaction, and moves
-- the most_recent flag. sort_key is the parent row's new transition_count.
-- +goose StatementBegin
CREATE FUNCTION tasker.log_step_transitions(
    p_steps uuid[], p_tasks uuid[], p_from text[], p_to text[], p_sort integer[], p_meta jsonb[]
) RETURNS void
LANGUAGE sql VOLATILE AS $$
    UPDATE tasker.workflow_step_transitions
       SET most_recent = false
     WHERE step_uuid = ANY (p_steps) AND most_recent;
    INSERT INTO tasker.workflow_step_transitions
           (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, metadata)
    SELECT u.s, u.t, u.f, u.tt, u.k, true, coalesce(u.m, '{}'::jsonb)
      FROM unnest(p_steps, p_tasks, p_from, p_to, p_sort, p_meta) AS u(s, t, f, tt, k, m);
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker.log_task_transitions(
    p_tasks uuid[], p_from text[], p_to text[], p_sort integer[], p_meta jsonb[]
) RETURNS void
LANGUAGE sql VOLATILE AS $$
    UPDATE tasker.task_transitions
       SET most_recent = false
     WHERE task_uuid = ANY (p_tasks) AND most_recent;
    INSERT INTO tasker.task_transitions
           (task_uuid, from_state, to_state, sort_key, most_recent, metadata)
    SELECT u.t, u.f, u.tt, u.k, true, coalesce(u.m, '{}'::jsonb)
      FROM unnest(p_tasks, p_from, p_to, p_sort, p_meta) AS u(t, f, tt, k, m);
$$;
-- +goose StatementEnd

-- step_claim_batch claims steps named by queue messages: a compare-and-swap
-- enqueued -> in_progress that only succeeds for the attempt the message was
-- sent for (attempts = attempt - 1), so a stale or duplicate message can never
-- start a second execution. For each requested step it returns one row: either
-- claimed with everything the handler needs, or not claimed with the reason
-- (the worker then deletes the message and runs nothing).
-- +goose StatementBegin
CREATE FUNCTION tasker.step_claim_batch(
    p_step_uuids uuid[], p_attempts integer[], p_worker_id text, p_lease_seconds integer
) RETURNS TABLE (
    claimed boolean, reason text, step_uuid uuid, task_uuid uuid, namespace text,
    step_name text, handler text, attempt integer, max_attempts integer,
    timeout_seconds integer, correlation_id uuid, traceparent text,
    task_context jsonb, step_inputs jsonb, dependency_results jsonb
)
LANGUAGE plpgsql VOLATILE AS $$
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
         WHERE ws.state = 'enqueued' AND ws.attempts = req.a - 1
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
         WHERE ws.step_uuid = lockable.step_uuid
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
    SELECT (ws.step_uuid = ANY (coalesce(v_steps, '{}'))) AS claimed,
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
               (SELECT coalesce(jsonb_object_agg(p.name, coalesce(p.results, 'null'::jsonb)), '{}'::jsonb)
                  FROM tasker.workflow_step_edges e
                  JOIN tasker.workflow_steps p ON p.step_uuid = e.from_step
                 WHERE e.to_step = ws.step_uuid)
           END
      FROM unnest(p_step_uuids, p_attempts) AS r(s, a)
      LEFT JOIN tasker.workflow_steps ws ON ws.step_uuid = r.s
      LEFT JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid;
END;
$$;
-- +goose StatementEnd

-- step_claim claims one step; see step_claim_batch.
-- +goose StatementBegin
CREATE FUNCTION tasker.step_claim(
    p_step_uuid uuid, p_attempt integer, p_worker_id text, p_lease_seconds integer
) RETURNS TABLE (
    claimed boolean, reason text, step_uuid uuid, task_uuid uuid, namespace text,
    step_name text, handler text, attempt integer, max_attempts integer,
    timeout_seconds integer, correlation_id uuid, traceparent text,
    task_context jsonb, step_inputs jsonb, dependency_results jsonb
)
LANGUAGE sql VOLATILE AS $$
    SELECT * FROM tasker.step_claim_batch(ARRAY[p_step_uuid], ARRAY[p_attempt], p_worker_id, p_lease_seconds);
$$;
-- +goose StatementEnd

-- step_heartbeat extends the lease of a step the worker still holds and, when
-- a message id is given, the visibility of its queue message to match. It
-- returns false when the step is no longer the caller's (cancelled, resolved,
-- or its lease was reaped): the worker should then abandon the handler.
-- +goose StatementBegin
CREATE FUNCTION tasker.step_heartbeat(
    p_step_uuid uuid, p_attempt integer, p_worker_id text, p_lease_seconds integer,
    p_msg_id bigint DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_ns text;
BEGIN
    UPDATE tasker.workflow_steps ws
       SET lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
           updated_at = now()
      FROM tasker.tasks t
     WHERE ws.step_uuid = p_step_uuid
       AND t.task_uuid = ws.task_uuid
       AND ws.state = 'in_progress'
       AND ws.claimed_by = p_worker_id
       AND ws.attempts = p_attempt
    RETURNING t.namespace INTO v_ns;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_msg_id IS NOT NULL THEN
        PERFORM pgmq.set_vt('worker_' || v_ns || '_queue', p_msg_id, p_lease_seconds);
    END IF;
    RETURN true;
END;
$$;
-- +goose StatementEnd

-- step_submit_result records a handler's outcome. In one transaction it
-- moves the step in_progress -> enqueued_for_orchestration (success) or
-- enqueued_as_error_for_orchestration (failure) if and only if the caller
-- still holds that attempt, stores the result or error, sends a notice to
-- orchestration_step_results, and deletes the step's queue message. A
-- duplicate or late submission changes nothing but the message deletion and
-- returns false.
--
-- p_error, on failure: {"message": text, "retryable": bool, "kind": text}.
-- p_headers: message headers for the notice (the W3C traceparent).
-- +goose StatementBegin
CREATE FUNCTION tasker.step_submit_result(
    p_step_uuid uuid, p_attempt integer, p_worker_id text, p_success boolean,
    p_result jsonb, p_error jsonb, p_msg_id bigint DEFAULT NULL, p_headers jsonb DEFAULT '{}'
) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
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
        PERFORM pgmq.send('orchestration_step_results',
            jsonb_build_object('task_uuid', v_task, 'step_uuid', p_step_uuid,
                               'attempt', p_attempt, 'success', p_success),
            coalesce(p_headers, '{}'::jsonb), 0);
    END IF;

    IF p_msg_id IS NOT NULL THEN
        SELECT t.namespace INTO v_ns
          FROM tasker.workflow_steps ws JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid
         WHERE ws.step_uuid = p_step_uuid;
        IF v_ns IS NOT NULL THEN
            PERFORM pgmq.delete('worker_' || v_ns || '_queue', p_msg_id);
        END IF;
    END IF;
    RETURN v_task IS NOT NULL;
END;
$$;
-- +goose StatementEnd


-- step_release gives up a claimed step without a result (a worker shutting
-- down that cannot finish it in time): its lease is expired at once, so the
-- orchestrator's reaper ends the attempt and retries the step promptly. A
-- release is not the step's fault, so it does not use up an attempt
-- (max_attempts grows by one). With p_msg_id, the attempt's queue message is
-- deleted too. Returns false when the step is no longer the caller's.
-- +goose StatementBegin
CREATE FUNCTION tasker.step_release(p_step_uuid uuid, p_attempt integer, p_worker_id text, p_msg_id bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_ns text;
BEGIN
    UPDATE tasker.workflow_steps ws
       SET lease_expires_at = clock_timestamp() - interval '1 millisecond',
           max_attempts = ws.max_attempts + 1,
           last_error = jsonb_build_object('message', 'released by worker ' || p_worker_id || ' at shutdown',
                                           'retryable', true, 'kind', 'released'),
           updated_at = now()
      FROM tasker.tasks t
     WHERE ws.step_uuid = p_step_uuid AND t.task_uuid = ws.task_uuid
       AND ws.state = 'in_progress' AND ws.claimed_by = p_worker_id AND ws.attempts = p_attempt
    RETURNING t.namespace INTO v_ns;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_msg_id IS NOT NULL THEN
        PERFORM pgmq.delete('worker_' || v_ns || '_queue', p_msg_id);
    END IF;
    RETURN true;
END;
$$;
-- +goose StatementEnd

-- transition_task is one task compare-and-swap with its transition row, in
-- one round trip: the task moves from p_from to p_to only if it is still in
-- p_from. first_finish says this is the task's first terminal state (its
-- root span is then due).
-- +goose StatementBegin
CREATE FUNCTION tasker.transition_task(p_task uuid, p_from text, p_to text, p_wake_at timestamptz, p_meta jsonb)
RETURNS TABLE (moved boolean, first_finish boolean)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_sort     integer;
    v_emitted  boolean;
    v_terminal boolean := p_to IN ('complete', 'error', 'cancelled', 'resolved_manually');
BEGIN
    SELECT t.root_span_emitted INTO v_emitted FROM tasker.tasks t WHERE t.task_uuid = p_task;
    UPDATE tasker.tasks t
       SET state = p_to, transition_count = t.transition_count + 1, wake_at = p_wake_at,
           updated_at = now(), state_entered_at = now(),
           completed_at = CASE WHEN v_terminal THEN now() END,
           root_span_emitted = t.root_span_emitted OR v_terminal
     WHERE t.task_uuid = p_task AND t.state = p_from
    RETURNING t.transition_count INTO v_sort;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, false;
        RETURN;
    END IF;
    UPDATE tasker.task_transitions SET most_recent = false WHERE task_uuid = p_task AND most_recent;
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, metadata)
    VALUES (p_task, p_from, p_to, v_sort, true, coalesce(p_meta, '{}'::jsonb));
    RETURN QUERY SELECT true, v_terminal AND NOT coalesce(v_emitted, false);
END;
$$;
-- +goose StatementEnd

-- transition_steps applies step compare-and-swaps in one statement: each
-- step moves from p_from[i] to p_to[i] only if it is still in p_from[i] (and,
-- when p_lease_guard[i], only if its lease has expired). It returns the steps
-- that moved. Orchestrator-side transitions use it; claims and submissions
-- have their own functions above.
-- +goose StatementBegin
CREATE FUNCTION tasker.transition_steps(
    p_steps uuid[], p_from text[], p_to text[], p_next_attempt_at timestamptz[],
    p_results jsonb[], p_extra_attempts integer[], p_lease_guard boolean[], p_meta jsonb[]
) RETURNS TABLE (step_uuid uuid, task_uuid uuid, from_state text, to_state text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_steps uuid[]; v_tasks uuid[]; v_from text[]; v_to text[]; v_sort integer[]; v_meta jsonb[];
BEGIN
    WITH m AS (
        SELECT * FROM unnest(p_steps, p_from, p_to, p_next_attempt_at, p_results, p_extra_attempts, p_lease_guard, p_meta)
                   AS m(id, f, t, next_at, res, extra, guard, meta)
    ), locked AS (
        SELECT ws.step_uuid FROM tasker.workflow_steps ws JOIN m ON m.id = ws.step_uuid
         ORDER BY ws.step_uuid FOR UPDATE OF ws
    ), moved AS (
        UPDATE tasker.workflow_steps ws
           SET state = m.t,
               transition_count = ws.transition_count + 1,
               next_attempt_at = m.next_at,
               results = coalesce(m.res, ws.results),
               max_attempts = ws.max_attempts + coalesce(m.extra, 0),
               lease_expires_at = NULL,
               updated_at = now(),
               state_entered_at = now(),
               completed_at = CASE WHEN m.t IN ('complete', 'cancelled', 'resolved_manually') THEN now() END
          FROM m, locked
         WHERE ws.step_uuid = m.id AND locked.step_uuid = ws.step_uuid
           AND ws.state = m.f
           AND (NOT coalesce(m.guard, false) OR ws.lease_expires_at < clock_timestamp())
        RETURNING ws.step_uuid, ws.task_uuid, m.f, m.t, ws.transition_count, m.meta
    )
    SELECT array_agg(mv.step_uuid), array_agg(mv.task_uuid), array_agg(mv.f), array_agg(mv.t),
           array_agg(mv.transition_count), array_agg(mv.meta)
      INTO v_steps, v_tasks, v_from, v_to, v_sort, v_meta
      FROM moved mv;
    IF v_steps IS NULL THEN
        RETURN;
    END IF;
    PERFORM tasker.log_step_transitions(v_steps, v_tasks, v_from, v_to, v_sort, v_meta);
    RETURN QUERY SELECT u.s, u.t, u.f, u.tt FROM unnest(v_steps, v_tasks, v_from, v_to) AS u(s, t, f, tt);
END;
$$;
-- +goose StatementEnd

-- dispatch_steps moves pending steps to enqueued and sends their messages to
-- their namespaces' worker queues in the same transaction (the queue is a
-- transactional outbox: a step is enqueued if and only if its message
-- exists). p_headers[i] are the message headers of p_steps[i] (traceparent).
-- It returns the steps dispatched with the attempt their message carries.
-- +goose StatementBegin
CREATE FUNCTION tasker.dispatch_steps(p_steps uuid[], p_headers jsonb[])
RETURNS TABLE (step_uuid uuid, task_uuid uuid, attempt integer, msg_id bigint)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_ns    text;
    v_steps uuid[]; v_tasks uuid[]; v_sort integer[]; v_attempts integer[];
    v_msgs  jsonb[]; v_hdrs jsonb[]; v_ids bigint[];
    v_n     integer;
BEGIN
    FOR v_ns IN
        SELECT DISTINCT t.namespace
          FROM tasker.workflow_steps ws JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid
         WHERE ws.step_uuid = ANY (p_steps)
         ORDER BY 1
    LOOP
        WITH req AS (
            SELECT * FROM unnest(p_steps, p_headers) AS r(id, hdr)
        ), locked AS (
            SELECT ws.step_uuid
              FROM tasker.workflow_steps ws
              JOIN req ON req.id = ws.step_uuid
              JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid
             WHERE ws.state = 'pending' AND t.namespace = v_ns
             ORDER BY ws.step_uuid FOR UPDATE OF ws
        ), moved AS (
            UPDATE tasker.workflow_steps ws
               SET state = 'enqueued',
                   transition_count = ws.transition_count + 1,
                   next_attempt_at = NULL,
                   updated_at = now(),
                   state_entered_at = now()
              FROM locked
             WHERE ws.step_uuid = locked.step_uuid AND ws.state = 'pending'
            RETURNING ws.step_uuid, ws.task_uuid, ws.name, ws.handler, ws.attempts, ws.transition_count
        )
        SELECT array_agg(mv.step_uuid ORDER BY mv.step_uuid),
               array_agg(mv.task_uuid ORDER BY mv.step_uuid),
               array_agg(mv.transition_count ORDER BY mv.step_uuid),
               array_agg(mv.attempts + 1 ORDER BY mv.step_uuid),
               array_agg(jsonb_build_object('task_uuid', mv.task_uuid, 'step_uuid', mv.step_uuid,
                             'step_name', mv.name, 'handler', mv.handler, 'namespace', v_ns,
                             'correlation_id', t.correlation_id, 'attempt', mv.attempts + 1) ORDER BY mv.step_uuid),
               array_agg(coalesce(req.hdr, '{}'::jsonb) ORDER BY mv.step_uuid)
          INTO v_steps, v_tasks, v_sort, v_attempts, v_msgs, v_hdrs
          FROM moved mv
          JOIN tasker.tasks t ON t.task_uuid = mv.task_uuid
          JOIN req ON req.id = mv.step_uuid;

        v_n := coalesce(array_length(v_steps, 1), 0);
        CONTINUE WHEN v_n = 0;
        PERFORM tasker.log_step_transitions(v_steps, v_tasks,
            array_fill('pending'::text, ARRAY[v_n]), array_fill('enqueued'::text, ARRAY[v_n]), v_sort,
            array_fill('{"trigger":"enqueue"}'::jsonb, ARRAY[v_n]));
        SELECT array_agg(x.id ORDER BY x.ord) INTO v_ids
          FROM pgmq.send_batch('worker_' || v_ns || '_queue', v_msgs, v_hdrs, 0) WITH ORDINALITY AS x(id, ord);
        RETURN QUERY SELECT u.s, u.t, u.a, u.m FROM unnest(v_steps, v_tasks, v_attempts, v_ids) AS u(s, t, a, m);
    END LOOP;
END;
$$;
-- +goose StatementEnd

SELECT pgmq.create('orchestration_task_requests');
SELECT pgmq.create('orchestration_step_results');

-- +goose Down
SELECT pgmq.drop_queue('orchestration_step_results');
SELECT pgmq.drop_queue('orchestration_task_requests');
DROP FUNCTION IF EXISTS tasker.dispatch_steps(uuid[], jsonb[]);
DROP FUNCTION IF EXISTS tasker.transition_task(uuid, text, text, timestamptz, jsonb);
DROP FUNCTION IF EXISTS tasker.step_release(uuid, integer, text, bigint);
DROP FUNCTION IF EXISTS tasker.transition_steps(uuid[], text[], text[], timestamptz[], jsonb[], integer[], boolean[], jsonb[]);
DROP FUNCTION IF EXISTS tasker.step_submit_result(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb);
DROP FUNCTION IF EXISTS tasker.step_heartbeat(uuid, integer, text, integer, bigint);
DROP FUNCTION IF EXISTS tasker.step_claim(uuid, integer, text, integer);
DROP FUNCTION IF EXISTS tasker.step_claim_batch(uuid[], integer[], text, integer);
DROP FUNCTION IF EXISTS tasker.log_task_transitions(uuid[], text[], text[], integer[], jsonb[]);
DROP FUNCTION IF EXISTS tasker.log_step_transitions(uuid[], uuid[], text[], text[], integer[], jsonb[]);
