-- The engine's functions run without JIT compilation.
--
-- Their statements run generic plans (plan_cache_mode = force_generic_plan),
-- whose cost estimates are made once for any argument. For a template with
-- many parents per step the estimate of reading a task's steps with their
-- parents passed jit_above_cost (100,000), and Postgres compiled the
-- statement on every call: 8 ms of code generation for 0.6 ms of execution,
-- while the task's row lock was held (`make bench`'s fanout: 62 s of JIT in
-- one run, 2,082 calls of the orchestrator's step read; docs/performance.md).
-- Compilation never pays for itself in statements that touch a few dozen
-- rows by primary key. The orchestrator's connections turn JIT off for the
-- session (store.WithoutJIT); these functions turn it off for themselves,
-- so that workers in any language and any session calling them get the
-- same. Down restores the server's setting.

-- +goose Up
ALTER FUNCTION tasker.step_claim_batch(uuid[], integer[], text, integer) SET jit = off;
ALTER FUNCTION tasker.step_claim_batch_unchecked(uuid[], integer[], text, integer) SET jit = off;
ALTER FUNCTION tasker.step_heartbeat_unchecked(uuid, integer, text, integer, bigint) SET jit = off;
ALTER FUNCTION tasker.step_submit_result(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb) SET jit = off;
ALTER FUNCTION tasker.step_submit_result_unchecked(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb) SET jit = off;
ALTER FUNCTION tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]) SET jit = off;
ALTER FUNCTION tasker.step_submit_results_unchecked(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]) SET jit = off;
ALTER FUNCTION tasker.transition_task(uuid, text, text, timestamptz, jsonb) SET jit = off;
ALTER FUNCTION tasker.transition_steps(uuid[], text[], text[], timestamptz[], jsonb[], integer[], boolean[], jsonb[]) SET jit = off;
ALTER FUNCTION tasker.dispatch_steps(uuid[], jsonb[]) SET jit = off;
ALTER FUNCTION tasker.apply_step_moves(uuid[], text[], text[], integer[], timestamptz[], integer[], jsonb[], uuid[], text[], text[], integer[], jsonb[]) SET jit = off;
ALTER FUNCTION tasker.apply_task_moves(uuid[], text[], text[], integer[], timestamptz[], boolean[], uuid[], text[], text[], integer[], jsonb[]) SET jit = off;
ALTER FUNCTION tasker.assert_serves_steps(uuid[]) SET jit = off;

-- +goose Down
ALTER FUNCTION tasker.step_claim_batch(uuid[], integer[], text, integer) RESET jit;
ALTER FUNCTION tasker.step_claim_batch_unchecked(uuid[], integer[], text, integer) RESET jit;
ALTER FUNCTION tasker.step_heartbeat_unchecked(uuid, integer, text, integer, bigint) RESET jit;
ALTER FUNCTION tasker.step_submit_result(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb) RESET jit;
ALTER FUNCTION tasker.step_submit_result_unchecked(uuid, integer, text, boolean, jsonb, jsonb, bigint, jsonb) RESET jit;
ALTER FUNCTION tasker.step_submit_results(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]) RESET jit;
ALTER FUNCTION tasker.step_submit_results_unchecked(uuid[], integer[], text, boolean[], jsonb[], jsonb[], bigint[], jsonb[]) RESET jit;
ALTER FUNCTION tasker.transition_task(uuid, text, text, timestamptz, jsonb) RESET jit;
ALTER FUNCTION tasker.transition_steps(uuid[], text[], text[], timestamptz[], jsonb[], integer[], boolean[], jsonb[]) RESET jit;
ALTER FUNCTION tasker.dispatch_steps(uuid[], jsonb[]) RESET jit;
ALTER FUNCTION tasker.apply_step_moves(uuid[], text[], text[], integer[], timestamptz[], integer[], jsonb[], uuid[], text[], text[], integer[], jsonb[]) RESET jit;
ALTER FUNCTION tasker.apply_task_moves(uuid[], text[], text[], integer[], timestamptz[], boolean[], uuid[], text[], text[], integer[], jsonb[]) RESET jit;
ALTER FUNCTION tasker.assert_serves_steps(uuid[]) RESET jit;
