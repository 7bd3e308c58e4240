-- step_release says whether the step's handler started.
--
-- step_release (00003, guarded by 00021 as step_release_unchecked) gives a
-- claimed step back: its lease ends at once, max_attempts grows by one and
-- last_error says it was released. The lease reaper then ends the attempt
-- by the step's own retryable setting only (a stored error on an in_progress
-- step may be an earlier attempt's), so a step whose template says
-- `retryable: false` failed for good when its worker released it, even when
-- no handler had run: the SDKs release unrun a step claimed through a
-- misleading message (another namespace's queue, a handler the worker lacks)
-- and a step a hard stop caught before its handler. For a handler that did
-- start and was abandoned at shutdown, failing a non-retryable step stays
-- right: it may have had side effects.
--
-- A trailing parameter p_handler_started (DEFAULT true, the conservative
-- answer; NULL counts as true) says which it is, and last_error records it
-- with the attempt released:
--
--   {"message": "released by worker w1 without running its handler (attempt 2)",
--    "retryable": true, "kind": "released", "attempt": 2, "handler_started": false}
--
-- The reaper retries at once, whatever `retryable` says, a step whose
-- current attempt was released with handler_started false, and treats any
-- other release as before (internal/orchestration/results.go,
-- failureChange). The three- and four-argument calls keep working through
-- the defaults and mean what they meant. A release repeated for the same
-- attempt no longer adds a second attempt, and cannot turn a handler said
-- to have started into one that did not.
--
-- A new parameter is a new signature: the four-argument guard and its
-- unchecked definition are dropped and recreated with five, in 00021's
-- layering (the guard checks the namespace, then calls the unchecked
-- definition, which only its owner may execute) and with the grants of
-- 00005 and 00021 (EXECUTE on the guard for tasker_api and tasker_worker;
-- PUBLIC nothing). EXECUTE granted on the old function to any other role,
-- outside these migrations, is not carried over (a worker login gets it by
-- membership in tasker_worker). Down restores the four-argument functions of
-- 00003 and 00021 as they were.

-- +goose Up
DROP FUNCTION tasker.step_release(uuid, integer, text, bigint);
DROP FUNCTION tasker.step_release_unchecked(uuid, integer, text, bigint);

-- +goose StatementBegin
CREATE FUNCTION tasker.step_release_unchecked(
    p_step_uuid uuid, p_attempt integer, p_worker_id text, p_msg_id bigint DEFAULT NULL,
    p_handler_started boolean DEFAULT true
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_ns      text;
    v_started boolean := coalesce(p_handler_started, true);
    v_prev    jsonb;
    v_again   boolean;
BEGIN
    -- A release repeated for the same attempt (a client retrying a call
    -- whose answer it lost) gives nothing back twice, and a handler once
    -- said to have started stays started.
    SELECT ws.last_error INTO v_prev FROM tasker.workflow_steps ws
     WHERE ws.step_uuid = p_step_uuid AND ws.state = 'in_progress'
       AND ws.claimed_by = p_worker_id AND ws.attempts = p_attempt
       FOR UPDATE;
    v_again := coalesce(v_prev->>'kind' = 'released' AND v_prev->>'attempt' = p_attempt::text, false);
    IF v_again THEN
        v_started := v_started OR coalesce((v_prev->>'handler_started')::boolean, true);
    END IF;
    UPDATE tasker.workflow_steps ws
       SET lease_expires_at = clock_timestamp() - interval '1 millisecond',
           max_attempts = ws.max_attempts + CASE WHEN v_again THEN 0 ELSE 1 END,
           last_error = jsonb_build_object(
               'message', 'released by worker ' || p_worker_id
                          || CASE WHEN v_started THEN ' after its handler started' ELSE ' without running its handler' END
                          || ' (attempt ' || p_attempt || ')',
               'retryable', true, 'kind', 'released',
               'attempt', p_attempt, 'handler_started', v_started),
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
REVOKE ALL ON FUNCTION tasker.step_release_unchecked(uuid, integer, text, bigint, boolean)
    FROM PUBLIC, tasker_api, tasker_worker;

-- +goose StatementBegin
CREATE FUNCTION tasker.step_release(
    p_step_uuid uuid, p_attempt integer, p_worker_id text, p_msg_id bigint DEFAULT NULL,
    p_handler_started boolean DEFAULT true
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tasker.assert_serves_steps(ARRAY[p_step_uuid]);
    RETURN tasker.step_release_unchecked(p_step_uuid, p_attempt, p_worker_id, p_msg_id, p_handler_started);
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION tasker.step_release(uuid, integer, text, bigint, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tasker.step_release(uuid, integer, text, bigint, boolean) TO tasker_api, tasker_worker;

-- +goose Down
DROP FUNCTION tasker.step_release(uuid, integer, text, bigint, boolean);
DROP FUNCTION tasker.step_release_unchecked(uuid, integer, text, bigint, boolean);

-- 00003's definition, as 00005 made it (SECURITY DEFINER, search path
-- pinned) and 00021 renamed it.
-- +goose StatementBegin
CREATE FUNCTION tasker.step_release_unchecked(p_step_uuid uuid, p_attempt integer, p_worker_id text, p_msg_id bigint DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
REVOKE ALL ON FUNCTION tasker.step_release_unchecked(uuid, integer, text, bigint)
    FROM PUBLIC, tasker_api, tasker_worker;

-- 00021's guard.
-- +goose StatementBegin
CREATE FUNCTION tasker.step_release(
    p_step_uuid uuid, p_attempt integer, p_worker_id text, p_msg_id bigint DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tasker.assert_serves_steps(ARRAY[p_step_uuid]);
    RETURN tasker.step_release_unchecked(p_step_uuid, p_attempt, p_worker_id, p_msg_id);
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION tasker.step_release(uuid, integer, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tasker.step_release(uuid, integer, text, bigint) TO tasker_api, tasker_worker;
