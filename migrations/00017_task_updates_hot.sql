-- Row rewrites that keep every indexed column can be HOT.
--
-- Task and step rows are rewritten by every transaction that moves them
-- (a task about once per step of a linear4 workflow, a step about four
-- times), and none of those rewrites was a HOT update: the index of active
-- tasks was keyed by updated_at, which every rewrite changes, and the
-- steps' lease index had `state` in its predicate, which every move
-- changes; so each rewrite wrote an entry into every index of its table
-- (seven for tasks, three for steps).
--
-- * The index of active tasks is keyed by created_at. The stale-task sweep
--   reads the active tasks through it and checks updated_at on each: work
--   bounded by the tasks in flight, not by history.
-- * The lease index holds the steps that have a lease (lease_expires_at is
--   set by a claim and a heartbeat, cleared by every move out of
--   in_progress; a release sets it in the past). The reaper's condition
--   (in_progress, lease expired) implies the predicate.
-- * Both tables keep a fifth of each page free for new row versions.
--
-- A task rewrite that keeps state and wake_at (a step finished and the next
-- dispatched), and a step's dispatch and completion (no lease before or
-- after), then stay on their page without index entries.

-- +goose Up
DROP INDEX tasker.tasks_active_idx;
CREATE INDEX tasks_active_idx ON tasker.tasks (created_at)
    WHERE state NOT IN ('complete', 'error', 'cancelled', 'resolved_manually');
ALTER TABLE tasker.tasks SET (fillfactor = 80);

DROP INDEX tasker.workflow_steps_lease_idx;
CREATE INDEX workflow_steps_lease_idx ON tasker.workflow_steps (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
ALTER TABLE tasker.workflow_steps SET (fillfactor = 80);

-- +goose Down
ALTER TABLE tasker.workflow_steps RESET (fillfactor);
DROP INDEX tasker.workflow_steps_lease_idx;
CREATE INDEX workflow_steps_lease_idx ON tasker.workflow_steps (lease_expires_at)
    WHERE state = 'in_progress';

ALTER TABLE tasker.tasks RESET (fillfactor);
DROP INDEX tasker.tasks_active_idx;
CREATE INDEX tasks_active_idx ON tasker.tasks (updated_at)
    WHERE state NOT IN ('complete', 'error', 'cancelled', 'resolved_manually');
