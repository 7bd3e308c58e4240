-- dispatch_steps (as in 00003, with rows found by primary key) without a
-- namespace filter in its update: joined to
-- tasker.tasks by namespace, the update was planned as a scan of every task
-- of the namespace (tasks_namespace_created_idx) and of workflow_steps, a
-- cost that grew with the namespace's history (docs/performance.md). The
-- steps of each namespace are now found first, through their tasks' primary
-- keys, and updated by primary key.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.dispatch_steps(p_steps uuid[], p_headers jsonb[])
RETURNS TABLE (step_uuid uuid, task_uuid uuid, attempt integer, msg_id bigint)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_ns    text;
    v_of_ns uuid[];
    v_steps uuid[]; v_tasks uuid[]; v_sort integer[]; v_attempts integer[];
    v_msgs  jsonb[]; v_hdrs jsonb[]; v_ids bigint[];
    v_n     integer;
BEGIN
    FOR v_ns, v_of_ns IN
        SELECT t.namespace, array_agg(ws.step_uuid)
          FROM tasker.workflow_steps ws JOIN tasker.tasks t ON t.task_uuid = ws.task_uuid
         WHERE ws.step_uuid = ANY (p_steps)
         GROUP BY t.namespace
         ORDER BY 1
    LOOP
        WITH moved AS (
            UPDATE tasker.workflow_steps ws
               SET state = 'enqueued',
                   transition_count = ws.transition_count + 1,
                   next_attempt_at = NULL,
                   updated_at = now(),
                   state_entered_at = now()
             WHERE ws.step_uuid = ANY (v_of_ns) AND ws.state = 'pending'
            RETURNING ws.step_uuid, ws.task_uuid, ws.name, ws.handler, ws.attempts, ws.transition_count
        )
        SELECT array_agg(mv.step_uuid ORDER BY mv.step_uuid),
               array_agg(mv.task_uuid ORDER BY mv.step_uuid),
               array_agg(mv.transition_count ORDER BY mv.step_uuid),
               array_agg(mv.attempts + 1 ORDER BY mv.step_uuid),
               array_agg(jsonb_build_object('task_uuid', mv.task_uuid, 'step_uuid', mv.step_uuid,
                             'step_name', mv.name, 'handler', mv.handler, 'namespace', v_ns,
                             'correlation_id', t.correlation_id, 'attempt', mv.attempts + 1) ORDER BY mv.step_uuid),
               array_agg(coalesce(h.hdr, '{}'::jsonb) ORDER BY mv.step_uuid)
          INTO v_steps, v_tasks, v_sort, v_attempts, v_msgs, v_hdrs
          FROM moved mv
          JOIN tasker.tasks t ON t.task_uuid = mv.task_uuid
          LEFT JOIN LATERAL (
              SELECT r.hdr FROM unnest(p_steps, p_headers) AS r(id, hdr) WHERE r.id = mv.step_uuid LIMIT 1
          ) h ON true;

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

-- +goose Down
-- The 00003 definition differs only in how rows are found; Down keeps this one.
