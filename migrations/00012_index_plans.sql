-- Index plans for the hot protocol functions, whatever the table sizes were
-- when their plans were cached (docs/performance.md).
--
-- PL/pgSQL caches a generic plan per statement and session after a few
-- calls. On a young database (the first minute of a deployment, every
-- benchmark run) the tables are small and never analyzed, the generic plan
-- of a lookup by `step_uuid = ANY ($1)` is a sequential scan, and the session
-- keeps it while the table grows: measured at 2,000-3,400 rows read by
-- sequential scans per step in a 1,000-task benchmark. Every statement of
-- these functions is a lookup by a key that has an index, so they run with
-- sequential scans disabled (the planner still uses one where there is no
-- alternative). Forcing custom plans instead was measured slower: planning
-- every call costs more than the scans.

-- +goose Up
ALTER FUNCTION tasker.step_claim_batch(uuid[], integer[], text, integer) SET enable_seqscan = off;
ALTER FUNCTION tasker.step_submit_result(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb) SET enable_seqscan = off;
ALTER FUNCTION tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]) SET enable_seqscan = off;
ALTER FUNCTION tasker.step_heartbeat(uuid, integer, text, integer, bigint) SET enable_seqscan = off;
ALTER FUNCTION tasker.dispatch_steps(uuid[], jsonb[]) SET enable_seqscan = off;
ALTER FUNCTION tasker.apply_step_moves(uuid[], text[], text[], integer[], timestamptz[], integer[], jsonb[], uuid[], text[], text[], integer[], jsonb[]) SET enable_seqscan = off;
ALTER FUNCTION tasker.apply_task_moves(uuid[], text[], text[], integer[], timestamptz[], boolean[], uuid[], text[], text[], integer[], jsonb[]) SET enable_seqscan = off;
ALTER FUNCTION tasker.transition_steps(uuid[], text[], text[], timestamptz[], jsonb[], integer[], boolean[], jsonb[]) SET enable_seqscan = off;
ALTER FUNCTION tasker.transition_task(uuid, text, text, timestamptz, jsonb) SET enable_seqscan = off;

-- +goose Down
ALTER FUNCTION tasker.transition_task(uuid, text, text, timestamptz, jsonb) RESET enable_seqscan;
ALTER FUNCTION tasker.transition_steps(uuid[], text[], text[], timestamptz[], jsonb[], integer[], boolean[], jsonb[]) RESET enable_seqscan;
ALTER FUNCTION tasker.apply_task_moves(uuid[], text[], text[], integer[], timestamptz[], boolean[], uuid[], text[], text[], integer[], jsonb[]) RESET enable_seqscan;
ALTER FUNCTION tasker.apply_step_moves(uuid[], text[], text[], integer[], timestamptz[], integer[], jsonb[], uuid[], text[], text[], integer[], jsonb[]) RESET enable_seqscan;
ALTER FUNCTION tasker.dispatch_steps(uuid[], jsonb[]) RESET enable_seqscan;
ALTER FUNCTION tasker.step_heartbeat(uuid, integer, text, integer, bigint) RESET enable_seqscan;
ALTER FUNCTION tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]) RESET enable_seqscan;
ALTER FUNCTION tasker.step_submit_result(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb) RESET enable_seqscan;
ALTER FUNCTION tasker.step_claim_batch(uuid[], integer[], text, integer) RESET enable_seqscan;
