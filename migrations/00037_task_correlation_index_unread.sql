-- One fewer index entry per task written (docs/performance.md, row 81).
--
-- A task's row is inserted once and rewritten by its completion, which is
-- never a HOT update (it sets completed_at, which tasks_completed_idx
-- holds, and leaves tasks_active_idx): both write an entry into every index
-- of the table. tasks_correlation_idx was there for nobody: no statement of
-- the engine, its API or its tools looks tasks up by correlation_id. An
-- operator who wants to can create it again (CREATE INDEX CONCURRENTLY
-- ... ON tasker.tasks (correlation_id)); nothing here depends on its
-- absence.

-- +goose Up
DROP INDEX tasker.tasks_correlation_idx;

-- +goose Down
CREATE INDEX tasks_correlation_idx ON tasker.tasks (correlation_id);
