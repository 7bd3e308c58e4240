-- Generic plans for the statements of the hot protocol functions.
--
-- PL/pgSQL prepares each statement once per session and, for the first five
-- executions and whenever the generic plan looks costlier than the average
-- custom plan, plans it again with the call's parameter values. For
-- statements keyed by `= ANY (array)` and joined to unnest() of arrays the
-- planner's estimates of a custom plan are always lower, so these statements
-- were planned on every call: pg_stat_statements (track_planning) in a
-- linear4 run counted 581 plans for 751 executions of the claim's read
-- (1.4 ms each), 901 of 1,191 of apply_task_moves' update (0.67 ms), 1,169 of
-- 1,186 of dispatch_steps' namespace lookup (0.46 ms): about 5 s of planning
-- in 18 s of Postgres CPU. Every statement here is a lookup by a key with an
-- index, and 00012 keeps sequential scans out of the generic plans, so each
-- session plans them once.

-- +goose Up
ALTER FUNCTION tasker.step_claim_batch(uuid[], integer[], text, integer) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION tasker.step_submit_result(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION tasker.step_heartbeat(uuid, integer, text, integer, bigint) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION tasker.dispatch_steps(uuid[], jsonb[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION tasker.apply_step_moves(uuid[], text[], text[], integer[], timestamptz[], integer[], jsonb[], uuid[], text[], text[], integer[], jsonb[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION tasker.apply_task_moves(uuid[], text[], text[], integer[], timestamptz[], boolean[], uuid[], text[], text[], integer[], jsonb[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION tasker.transition_steps(uuid[], text[], text[], timestamptz[], jsonb[], integer[], boolean[], jsonb[]) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION tasker.transition_task(uuid, text, text, timestamptz, jsonb) SET plan_cache_mode = force_generic_plan;

-- +goose Down
ALTER FUNCTION tasker.transition_task(uuid, text, text, timestamptz, jsonb) RESET plan_cache_mode;
ALTER FUNCTION tasker.transition_steps(uuid[], text[], text[], timestamptz[], jsonb[], integer[], boolean[], jsonb[]) RESET plan_cache_mode;
ALTER FUNCTION tasker.apply_task_moves(uuid[], text[], text[], integer[], timestamptz[], boolean[], uuid[], text[], text[], integer[], jsonb[]) RESET plan_cache_mode;
ALTER FUNCTION tasker.apply_step_moves(uuid[], text[], text[], integer[], timestamptz[], integer[], jsonb[], uuid[], text[], text[], integer[], jsonb[]) RESET plan_cache_mode;
ALTER FUNCTION tasker.dispatch_steps(uuid[], jsonb[]) RESET plan_cache_mode;
ALTER FUNCTION tasker.step_heartbeat(uuid, integer, text, integer, bigint) RESET plan_cache_mode;
ALTER FUNCTION tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]) RESET plan_cache_mode;
ALTER FUNCTION tasker.step_submit_result(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb) RESET plan_cache_mode;
ALTER FUNCTION tasker.step_claim_batch(uuid[], integer[], text, integer) RESET plan_cache_mode;
