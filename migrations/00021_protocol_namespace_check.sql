-- The worker protocol checks that its caller serves the step's namespace.
--
-- The protocol functions run as their owner (SECURITY DEFINER, 00005), so
-- until now they did not ask who called them: a worker login of namespace A
-- that learned the UUID of a step of namespace B (UUIDs appear in API
-- responses and logs) could claim it during its `enqueued` window and
-- receive B's task context and dependency results, and, knowing the
-- claimant's worker id, heartbeat, release or submit for it
-- (docs/security.md, "Known limits").
--
-- Each of the five functions a worker calls with step UUIDs is now a thin
-- guard with the same signature: tasker.assert_serves_steps raises
-- insufficient_privilege (42501), naming the role and the namespace, unless
-- the session's login may serve every namespace among the steps; then the
-- previous definition, renamed to <name>_unchecked and callable by its owner
-- only, does the work. step_claim calls step_claim_batch by name, so it is
-- guarded too.
--
-- "May serve" is what the namespace's queue already grants: DELETE on
-- pgmq.q_worker_<ns>_queue (tasker_worker_<ns>'s members, tasker_api, the
-- owner, superusers) or membership in tasker_worker_<ns> (which also covers
-- a login that reaches the role with SET ROLE). It is asked of
-- session_user, the login: inside a SECURITY DEFINER function current_user
-- is the owner. Steps that do not exist are left to the function, which
-- reports them as it did. The check reads each step's task by primary key
-- and asks once per namespace of the batch. Its plan is generic, made once
-- per session (a custom plan of it cost ~0.4 ms of planning per call), and,
-- like the other protocol functions' (00012, 00013), without sequential
-- scans: a plan made while the tables were young read all of tasks on
-- every call as they grew.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION tasker.assert_serves_steps(p_steps uuid[])
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_ns text;
BEGIN
    SELECT d.namespace INTO v_ns
      FROM (SELECT DISTINCT st.namespace
              FROM unnest(p_steps) AS u(s),
                   LATERAL (SELECT t.namespace
                              FROM tasker.workflow_steps ws JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid
                             WHERE ws.step_uuid = u.s
                             LIMIT 1) st -- LIMIT: keeps the probe from being flattened into a join
             OFFSET 0 -- the privileges are asked per namespace, not per step
           ) d
     WHERE NOT (coalesce(has_table_privilege(session_user,
                            to_regclass(format('pgmq.%I', 'q_worker_' || d.namespace || '_queue')), 'DELETE'), false)
                OR coalesce(pg_has_role(session_user, to_regrole('tasker_worker_' || d.namespace), 'MEMBER'), false))
     ORDER BY d.namespace
     LIMIT 1;
    IF v_ns IS NOT NULL THEN
        RAISE EXCEPTION 'permission denied: role % does not serve namespace % (it is not a member of tasker_worker_%)',
            session_user, v_ns, v_ns
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION tasker.assert_serves_steps(uuid[]) FROM PUBLIC;

ALTER FUNCTION tasker.step_claim_batch(uuid[], integer[], text, integer) RENAME TO step_claim_batch_unchecked;
ALTER FUNCTION tasker.step_heartbeat(uuid, integer, text, integer, bigint) RENAME TO step_heartbeat_unchecked;
ALTER FUNCTION tasker.step_release(uuid, integer, text, bigint) RENAME TO step_release_unchecked;
ALTER FUNCTION tasker.step_submit_result(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb) RENAME TO step_submit_result_unchecked;
ALTER FUNCTION tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]) RENAME TO step_submit_results_unchecked;
REVOKE ALL ON FUNCTION
    tasker.step_claim_batch_unchecked(uuid[], integer[], text, integer),
    tasker.step_heartbeat_unchecked(uuid, integer, text, integer, bigint),
    tasker.step_release_unchecked(uuid, integer, text, bigint),
    tasker.step_submit_result_unchecked(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb),
    tasker.step_submit_results_unchecked(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[])
    FROM PUBLIC, tasker_api, tasker_worker;

-- +goose StatementBegin
CREATE FUNCTION tasker.step_claim_batch(
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
CREATE FUNCTION tasker.step_heartbeat(
    p_step_uuid uuid, p_attempt integer, p_worker_id text, p_lease_seconds integer, p_msg_id bigint DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tasker.assert_serves_steps(ARRAY[p_step_uuid]);
    RETURN tasker.step_heartbeat_unchecked(p_step_uuid, p_attempt, p_worker_id, p_lease_seconds, p_msg_id);
END;
$$;
-- +goose StatementEnd

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

-- +goose StatementBegin
CREATE FUNCTION tasker.step_submit_result(
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

-- +goose StatementBegin
CREATE FUNCTION tasker.step_submit_results(
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

REVOKE ALL ON FUNCTION
    tasker.step_claim_batch(uuid[], integer[], text, integer),
    tasker.step_heartbeat(uuid, integer, text, integer, bigint),
    tasker.step_release(uuid, integer, text, bigint),
    tasker.step_submit_result(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb),
    tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    tasker.step_claim_batch(uuid[], integer[], text, integer),
    tasker.step_heartbeat(uuid, integer, text, integer, bigint),
    tasker.step_release(uuid, integer, text, bigint),
    tasker.step_submit_result(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb),
    tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[])
    TO tasker_api, tasker_worker;

-- +goose Down
DROP FUNCTION tasker.step_claim_batch(uuid[], integer[], text, integer);
DROP FUNCTION tasker.step_heartbeat(uuid, integer, text, integer, bigint);
DROP FUNCTION tasker.step_release(uuid, integer, text, bigint);
DROP FUNCTION tasker.step_submit_result(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb);
DROP FUNCTION tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]);
ALTER FUNCTION tasker.step_claim_batch_unchecked(uuid[], integer[], text, integer) RENAME TO step_claim_batch;
ALTER FUNCTION tasker.step_heartbeat_unchecked(uuid, integer, text, integer, bigint) RENAME TO step_heartbeat;
ALTER FUNCTION tasker.step_release_unchecked(uuid, integer, text, bigint) RENAME TO step_release;
ALTER FUNCTION tasker.step_submit_result_unchecked(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb) RENAME TO step_submit_result;
ALTER FUNCTION tasker.step_submit_results_unchecked(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]) RENAME TO step_submit_results;
GRANT EXECUTE ON FUNCTION
    tasker.step_claim_batch(uuid[], integer[], text, integer),
    tasker.step_heartbeat(uuid, integer, text, integer, bigint),
    tasker.step_release(uuid, integer, text, bigint),
    tasker.step_submit_result(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb),
    tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[])
    TO tasker_api, tasker_worker;
DROP FUNCTION tasker.assert_serves_steps(uuid[]);
