-- Steps and edges are written without foreign-key checks; deleting a task
-- still deletes its steps, and deleting a step its edges (as 00018 did for
-- transition rows).
--
-- A task's steps and the edges between them are inserted by one statement
-- only, the task's creation (store/create.go), with the task itself: the
-- rows they name exist by construction, in the same statement. Yet every
-- step paid for a check of its task and every edge for checks of both of
-- its steps: a `SELECT … FOR KEY SHARE` queued as an after-trigger, run at
-- the end of the statement, each also writing a row lock (a WAL record) on
-- the row just inserted. pg_stat_statements over linear4 (5,000 tasks):
-- 30,000 probes of workflow_steps and 20,000 of tasks for 20,000 steps,
-- 2.5 per step; fanout's 100 edges per task, 2 per step.
--
-- The foreign keys also deleted with a task its steps, and with a step its
-- edges (ON DELETE CASCADE): statement-level triggers keep that, at the cost
-- of a delete's statement (the retention sweep's) rather than of every
-- creation. The steps' delete fires their own triggers in turn (their
-- transitions, 00018; their edges, below).

-- The deleting triggers (these and 00018's) find the rows of the deleted
-- parents by `= ANY (array)` through an index. Written as a join with the
-- transition table, as 00018 had them, the planner hashed the deleted rows
-- and read the whole child table for every delete statement: a retention
-- batch of 2,000 tasks read all 1,000,000 step transitions (660 ms) of a
-- database holding 50,000 tasks, so a sweep's cost grew with the history it
-- keeps.

-- +goose Up
ALTER TABLE tasker.workflow_step_edges DROP CONSTRAINT workflow_step_edges_from_step_fkey;
ALTER TABLE tasker.workflow_step_edges DROP CONSTRAINT workflow_step_edges_to_step_fkey;
ALTER TABLE tasker.workflow_steps DROP CONSTRAINT workflow_steps_task_uuid_fkey;

-- A task's steps are found through workflow_steps_task_uuid_name_key.
-- +goose StatementBegin
CREATE FUNCTION tasker.delete_task_steps() RETURNS trigger
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    DELETE FROM tasker.workflow_steps s
     WHERE s.task_uuid = ANY (ARRAY(SELECT gone.task_uuid FROM gone));
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- An edge goes with either of its steps: by from_step through the primary
-- key, by to_step through workflow_step_edges_to_idx.
-- +goose StatementBegin
CREATE FUNCTION tasker.delete_step_edges() RETURNS trigger
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_steps uuid[] := ARRAY(SELECT gone.step_uuid FROM gone);
BEGIN
    DELETE FROM tasker.workflow_step_edges e WHERE e.from_step = ANY (v_steps);
    DELETE FROM tasker.workflow_step_edges e WHERE e.to_step = ANY (v_steps);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- 00018's transition deletes, by index.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.delete_task_transitions() RETURNS trigger
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    DELETE FROM tasker.task_transitions tt
     WHERE tt.task_uuid = ANY (ARRAY(SELECT gone.task_uuid FROM gone));
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.delete_step_transitions() RETURNS trigger
LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    DELETE FROM tasker.workflow_step_transitions st
     WHERE st.step_uuid = ANY (ARRAY(SELECT gone.step_uuid FROM gone));
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER tasks_delete_steps AFTER DELETE ON tasker.tasks
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION tasker.delete_task_steps();
CREATE TRIGGER workflow_steps_delete_edges AFTER DELETE ON tasker.workflow_steps
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION tasker.delete_step_edges();

-- +goose Down
-- 00018's transition deletes, as they were.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.delete_task_transitions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tasker.task_transitions tt USING gone
     WHERE tt.task_uuid = gone.task_uuid;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.delete_step_transitions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tasker.workflow_step_transitions st USING gone
     WHERE st.step_uuid = gone.step_uuid;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
ALTER FUNCTION tasker.delete_task_transitions() RESET ALL;
ALTER FUNCTION tasker.delete_step_transitions() RESET ALL;
DROP TRIGGER workflow_steps_delete_edges ON tasker.workflow_steps;
DROP TRIGGER tasks_delete_steps ON tasker.tasks;
DROP FUNCTION tasker.delete_step_edges();
DROP FUNCTION tasker.delete_task_steps();
ALTER TABLE tasker.workflow_steps
    ADD CONSTRAINT workflow_steps_task_uuid_fkey FOREIGN KEY (task_uuid)
        REFERENCES tasker.tasks (task_uuid) ON DELETE CASCADE;
ALTER TABLE tasker.workflow_step_edges
    ADD CONSTRAINT workflow_step_edges_to_step_fkey FOREIGN KEY (to_step)
        REFERENCES tasker.workflow_steps (step_uuid) ON DELETE CASCADE;
ALTER TABLE tasker.workflow_step_edges
    ADD CONSTRAINT workflow_step_edges_from_step_fkey FOREIGN KEY (from_step)
        REFERENCES tasker.workflow_steps (step_uuid) ON DELETE CASCADE;
