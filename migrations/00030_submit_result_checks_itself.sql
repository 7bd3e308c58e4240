-- The single-result submission checks the caller's namespace itself.
--
-- step_submit_result (one step: what the Go SDK sends for a result that
-- finishes alone, every result of an open loop's single tasks, and what
-- other clients may send for each) was still 00021's guard:
-- tasker.assert_serves_steps, then the unchecked body, which read the
-- step's namespace again to delete its message. In `make bench`'s open
-- loop (100 single tasks/s) the assert was 322 µs of Postgres self time
-- per task.
--
-- Now it is 00015's body with the check where it reads the namespace (now
-- read whether or not a message id was given), as 00029 did for the batch,
-- and with the transition rows written by two statements of its own
-- instead of a call of tasker.log_step_transitions with one-element arrays.
-- Down restores 00021's guard.

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
        UPDATE tasker.workflow_step_transitions
           SET most_recent = false
         WHERE step_uuid = p_step_uuid AND most_recent;
        INSERT INTO tasker.workflow_step_transitions
               (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, metadata)
        VALUES (p_step_uuid, v_task, 'in_progress', v_to, v_sort, true,
                jsonb_build_object('worker_id', p_worker_id, 'attempt', p_attempt));
        INSERT INTO pgmq.q_orchestration_step_results (vt, message, headers)
        VALUES (clock_timestamp(),
                jsonb_build_object('task_uuid', v_task, 'step_uuid', p_step_uuid,
                                   'attempt', p_attempt, 'success', p_success),
                coalesce(p_headers, '{}'::jsonb));
    END IF;

    -- The step's namespace: the caller must serve it (00021; a denial
    -- raises and undoes the call), and its worker queue holds the message.
    -- A step that does not exist is left alone, as before.
    SELECT t.namespace INTO v_ns
      FROM tasker.workflow_steps ws JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid
     WHERE ws.step_uuid = p_step_uuid;
    IF v_ns IS NOT NULL THEN
        IF NOT tasker.serves_namespace(v_ns) THEN
            PERFORM tasker.deny_namespace(v_ns);
        END IF;
        IF p_msg_id IS NOT NULL THEN
            EXECUTE format('DELETE FROM pgmq.%I WHERE msg_id = $1', 'q_worker_' || v_ns || '_queue')
              USING p_msg_id;
        END IF;
    END IF;
    RETURN v_task IS NOT NULL;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.step_submit_result(
    p_step_uuid uuid, p_attempt integer, p_worker_id text, p_success boolean, p_result jsonb,
    p_error jsonb, p_msg_id bigint DEFAULT NULL, p_headers jsonb DEFAULT '{}'::jsonb
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tasker.assert_serves_steps(ARRAY[p_step_uuid]);
    RETURN tasker.step_submit_result_unchecked(p_step_uuid, p_attempt, p_worker_id, p_success, p_result,
                                               p_error, p_msg_id, p_headers);
END;
$$;
-- +goose StatementEnd
