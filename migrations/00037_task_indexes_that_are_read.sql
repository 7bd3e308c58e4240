-- Two fewer index entries per task written (docs/performance.md, row 81).
--
-- A task's row is inserted once and rewritten by its completion, which is
-- never a HOT update (it sets completed_at, which tasks_completed_idx
-- holds, and leaves tasks_active_idx): both write an entry into every index
-- of the table. Two of them were there for nobody:
--
-- * tasks_correlation_idx: no statement of the engine, its API or its
--   tools looks tasks up by correlation_id. An operator who wants to can
--   create it again (CREATE INDEX CONCURRENTLY ... ON tasker.tasks
--   (correlation_id)); nothing here depends on its absence.
-- * tasks_created_idx (created_at, task_uuid): read only by the task list
--   without a namespace. That list now reads each namespace's newest tasks
--   through tasks_namespace_created_idx (namespace, created_at, task_uuid),
--   the namespaces listed by tasker.namespaces, and keeps the newest of
--   those: a page costs at most a page per namespace.
--
-- Measured on an idle server, completing 50 tasks in one statement as
-- tasker.apply_task_moves does: 1.74-2.06 ms with every index, 0.90-0.98
-- ms without these two.

-- +goose Up
DROP INDEX tasker.tasks_correlation_idx;
DROP INDEX tasker.tasks_created_idx;

-- +goose Down
CREATE INDEX tasks_created_idx ON tasker.tasks (created_at, task_uuid);
CREATE INDEX tasks_correlation_idx ON tasker.tasks (correlation_id);
