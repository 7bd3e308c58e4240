-- Retention: the database stops growing with the engine's history
-- (DESIGN §9: "Growth is bounded: archive retention, transition pruning
-- policy, and queue depth metrics"; the queue depth metrics came earlier).
--
-- Three sweeps, each a batch per call, run by the daemon's retention loop
-- and by `orchestrator prune` (internal/store/retention.go):
--
-- * prune_queue_archives: messages archived longer ago than a cut-off are
--   deleted from the archives (pgmq.a_<queue>) of the engine's queues only
--   (tasker.engine_queues): other applications' queues in schema pgmq are
--   theirs to manage. pgmq indexes archived_at on every archive table.
-- * prune_task_history: for tasks finished before a cut-off, every
--   transition row but the most recent one, of the task and of each of its
--   steps, is deleted. The task, its steps (results, errors) and the final
--   states stay. A cursor (tasker.retention_cursor) remembers the last task
--   pruned, by (completed_at, task_uuid), so each batch reads only tasks it
--   has not pruned yet; a task revived by an operator and finished again
--   gets a later completed_at and comes round again.
-- * delete_finished_tasks: tasks finished before a cut-off are deleted
--   with their steps, edges, transitions and DLQ entries (the foreign keys'
--   ON DELETE CASCADE and 00018's triggers), except a task with an open DLQ
--   entry (pending or investigating): that waits for its triage. Rows a
--   live transaction holds are skipped and taken by a later batch.
--
-- The daemon's runtime role, tasker_api, may not DELETE from tasker tables
-- (00005): the three sweeps are SECURITY DEFINER functions, so that it can
-- delete what they delete and nothing else. They run as the owner with the
-- search path pinned; tasker_api gets EXECUTE through 00005's default
-- privileges, PUBLIC nothing.
--
-- Indexes for the sweeps:
-- * tasks_completed_idx (completed_at, task_uuid) of finished tasks: both
--   task sweeps walk it in order. A task's completion already rewrites its
--   row outside HOT (the state leaves tasks_active_idx's predicate), so the
--   cost is one more index entry per finished task.
-- * dlq_entries_task_idx: a deleted task's DLQ entries are found by
--   task_uuid (ON DELETE CASCADE probes by the foreign key; without an
--   index every deleted task scanned the DLQ table), and the open-entry
--   check above uses it too.
-- * workflow_step_edges loses its foreign key to tasks: edges are deleted
--   with their steps (from_step, to_step cascade, both indexed), and the
--   task key's cascade would have scanned the whole edge table for every
--   deleted task (no index leads with task_uuid). Edges are only written
--   by task creation, beside the task and step rows they name.

-- +goose Up
CREATE INDEX tasks_completed_idx ON tasker.tasks (completed_at, task_uuid) WHERE completed_at IS NOT NULL;
CREATE INDEX dlq_entries_task_idx ON tasker.dlq_entries (task_uuid);
ALTER TABLE tasker.workflow_step_edges DROP CONSTRAINT workflow_step_edges_task_uuid_fkey;

CREATE TABLE tasker.retention_cursor (
    name         text PRIMARY KEY,
    completed_at timestamptz NOT NULL,
    task_uuid    uuid NOT NULL
);

-- +goose StatementBegin
CREATE FUNCTION tasker.engine_queues() RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT n FROM unnest(ARRAY['orchestration_task_requests', 'orchestration_step_results']) AS n
    UNION ALL
    SELECT n FROM tasker.namespaces ns,
           LATERAL unnest(ARRAY['worker_' || ns.name || '_queue', 'domain_events_' || ns.name]) AS n
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker.prune_queue_archives(p_before timestamptz, p_limit integer)
RETURNS TABLE (queue_name text, deleted bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_q text;
    v_n bigint;
BEGIN
    IF p_before IS NULL OR p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'prune_queue_archives: a cut-off time and a limit of at least 1 are required'
            USING ERRCODE = '22023';
    END IF;
    FOR v_q IN SELECT q FROM tasker.engine_queues() AS q
                WHERE to_regclass(format('pgmq.%I', 'a_' || q)) IS NOT NULL
                ORDER BY q
    LOOP
        EXECUTE format('DELETE FROM pgmq.%1$I a WHERE a.msg_id IN (
                            SELECT b.msg_id FROM pgmq.%1$I b WHERE b.archived_at < $1
                             ORDER BY b.archived_at LIMIT $2)', 'a_' || v_q)
          USING p_before, p_limit;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        IF v_n > 0 THEN
            queue_name := v_q;
            deleted := v_n;
            RETURN NEXT;
        END IF;
    END LOOP;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker.prune_task_history(p_before timestamptz, p_limit integer)
RETURNS TABLE (tasks integer, task_transitions bigint, step_transitions bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_at    timestamptz;
    v_id    uuid;
    v_tasks uuid[];
    v_steps uuid[];
    v_tt    bigint;
    v_st    bigint;
BEGIN
    IF p_before IS NULL OR p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'prune_task_history: a cut-off time and a limit of at least 1 are required'
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO tasker.retention_cursor (name, completed_at, task_uuid)
    VALUES ('history', '-infinity', '00000000-0000-0000-0000-000000000000')
    ON CONFLICT (name) DO NOTHING;
    -- The row lock makes concurrent sweeps (replicas) take turns.
    SELECT c.completed_at, c.task_uuid INTO v_at, v_id
      FROM tasker.retention_cursor c WHERE c.name = 'history' FOR UPDATE;

    SELECT array_agg(b.task_uuid ORDER BY b.completed_at, b.task_uuid),
           max(b.completed_at)
      INTO v_tasks, v_at
      FROM (SELECT t.task_uuid, t.completed_at
              FROM tasker.tasks t
             WHERE t.completed_at IS NOT NULL
               AND (t.completed_at, t.task_uuid) > (v_at, v_id)
               AND t.completed_at < p_before
             ORDER BY t.completed_at, t.task_uuid
             LIMIT p_limit) b;
    IF v_tasks IS NULL THEN
        RETURN QUERY SELECT 0, 0::bigint, 0::bigint;
        RETURN;
    END IF;
    v_id := v_tasks[cardinality(v_tasks)];

    DELETE FROM tasker.task_transitions tt
     WHERE tt.task_uuid = ANY (v_tasks) AND NOT tt.most_recent;
    GET DIAGNOSTICS v_tt = ROW_COUNT;

    SELECT array_agg(ws.step_uuid) INTO v_steps
      FROM tasker.workflow_steps ws WHERE ws.task_uuid = ANY (v_tasks);
    DELETE FROM tasker.workflow_step_transitions st
     WHERE st.step_uuid = ANY (coalesce(v_steps, '{}')) AND NOT st.most_recent;
    GET DIAGNOSTICS v_st = ROW_COUNT;

    UPDATE tasker.retention_cursor c SET completed_at = v_at, task_uuid = v_id WHERE c.name = 'history';
    RETURN QUERY SELECT cardinality(v_tasks), v_tt, v_st;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker.delete_finished_tasks(p_before timestamptz, p_limit integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_n integer;
BEGIN
    IF p_before IS NULL OR p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'delete_finished_tasks: a cut-off time and a limit of at least 1 are required'
            USING ERRCODE = '22023';
    END IF;
    WITH doomed AS (
        SELECT t.task_uuid
          FROM tasker.tasks t
         WHERE t.completed_at IS NOT NULL AND t.completed_at < p_before
           AND NOT EXISTS (SELECT 1 FROM tasker.dlq_entries d
                            WHERE d.task_uuid = t.task_uuid
                              AND d.resolution_status IN ('pending', 'investigating'))
         ORDER BY t.completed_at, t.task_uuid
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    )
    DELETE FROM tasker.tasks t USING doomed WHERE t.task_uuid = doomed.task_uuid;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;
-- +goose StatementEnd

REVOKE ALL ON FUNCTION tasker.engine_queues() FROM PUBLIC;
REVOKE ALL ON FUNCTION tasker.prune_queue_archives(timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION tasker.prune_task_history(timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION tasker.delete_finished_tasks(timestamptz, integer) FROM PUBLIC;

-- +goose Down
DROP FUNCTION tasker.delete_finished_tasks(timestamptz, integer);
DROP FUNCTION tasker.prune_task_history(timestamptz, integer);
DROP FUNCTION tasker.prune_queue_archives(timestamptz, integer);
DROP FUNCTION tasker.engine_queues();
DROP TABLE tasker.retention_cursor;
ALTER TABLE tasker.workflow_step_edges
    ADD CONSTRAINT workflow_step_edges_task_uuid_fkey FOREIGN KEY (task_uuid)
        REFERENCES tasker.tasks (task_uuid) ON DELETE CASCADE;
DROP INDEX tasker.dlq_entries_task_idx;
DROP INDEX tasker.tasks_completed_idx;
