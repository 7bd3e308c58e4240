-- Transition rows are written without foreign-key checks; deleting a task
-- or a step still deletes its transitions.
--
-- A transition row is written only by the functions that move its task or
-- step, in the same transaction as the compare-and-swap update of that row
-- (or, at creation, in the statement that inserts it): the row it names
-- exists by construction, and a concurrent delete of it makes the update
-- wait, then find nothing to move and write no transition. Yet every
-- transition row paid for a check of that: a `SELECT … FOR KEY SHARE` of
-- the parent row, queued as an after-trigger and run at the end of the
-- statement, which also rewrites the lock bits of the parent row just
-- updated. A linear4 step wrote about nine transition rows, so nine of
-- these checks (pg_stat_statements: 130,000 checks on workflow_steps and
-- 110,000 on tasks for 20,000 steps; 2 s of 28 s of Postgres time).
--
-- The foreign keys also deleted a task's or a step's transitions with it
-- (ON DELETE CASCADE): statement-level triggers on the parent tables keep
-- that, at the cost of a delete's statement rather than of every insert.
-- (Steps are deleted with their task through workflow_steps' own foreign
-- key; the cascade fires the steps' trigger.)

-- +goose Up
ALTER TABLE tasker.workflow_step_transitions DROP CONSTRAINT workflow_step_transitions_step_uuid_fkey;
ALTER TABLE tasker.task_transitions DROP CONSTRAINT task_transitions_task_uuid_fkey;

-- +goose StatementBegin
CREATE FUNCTION tasker.delete_task_transitions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tasker.task_transitions tt USING gone
     WHERE tt.task_uuid = gone.task_uuid;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker.delete_step_transitions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM tasker.workflow_step_transitions st USING gone
     WHERE st.step_uuid = gone.step_uuid;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER tasks_delete_transitions AFTER DELETE ON tasker.tasks
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION tasker.delete_task_transitions();
CREATE TRIGGER workflow_steps_delete_transitions AFTER DELETE ON tasker.workflow_steps
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION tasker.delete_step_transitions();

-- +goose Down
DROP TRIGGER workflow_steps_delete_transitions ON tasker.workflow_steps;
DROP TRIGGER tasks_delete_transitions ON tasker.tasks;
DROP FUNCTION tasker.delete_step_transitions();
DROP FUNCTION tasker.delete_task_transitions();
ALTER TABLE tasker.task_transitions
    ADD CONSTRAINT task_transitions_task_uuid_fkey FOREIGN KEY (task_uuid)
        REFERENCES tasker.tasks (task_uuid) ON DELETE CASCADE;
ALTER TABLE tasker.workflow_step_transitions
    ADD CONSTRAINT workflow_step_transitions_step_uuid_fkey FOREIGN KEY (step_uuid)
        REFERENCES tasker.workflow_steps (step_uuid) ON DELETE CASCADE;
