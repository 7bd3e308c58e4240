-- Bulk forms of the orchestrator's writes (docs/performance.md).
--
-- apply_step_moves and apply_task_moves apply, in one statement each, the
-- compare-and-swaps a deferred transaction has buffered (store.InTxDeferred):
-- a step or task may move several times in one transaction (a task goes
-- steps_in_process -> evaluating_results -> enqueuing_steps ->
-- steps_in_process for every result), so each row is updated once with the
-- net effect and gets one transition row per move, numbered after its
-- transition_count. They return how many rows were in the expected state;
-- the caller fails the transaction when that is not all of them.
--
-- The transition loggers become PL/pgSQL (PostgreSQL plans the statements of
-- a LANGUAGE sql function with several statements on every call; PL/pgSQL
-- caches them), and transition_steps finds its rows with
-- `step_uuid = ANY (array)` (dispatch_steps too, in 00011), which the planner
-- answers with the primary key whatever it believes about the table's size
-- (a join against unnest() was planned as a sequential scan while the table
-- was small, and the plan stayed cached as it grew).

-- +goose Up

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.log_step_transitions(
    p_steps uuid[], p_tasks uuid[], p_from text[], p_to text[], p_sort integer[], p_meta jsonb[]
) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE tasker.workflow_step_transitions
       SET most_recent = false
     WHERE step_uuid = ANY (p_steps) AND most_recent;
    INSERT INTO tasker.workflow_step_transitions
           (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, metadata)
    SELECT u.s, u.t, u.f, u.tt, u.k, true, coalesce(u.m, '{}'::jsonb)
      FROM unnest(p_steps, p_tasks, p_from, p_to, p_sort, p_meta) AS u(s, t, f, tt, k, m);
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.log_task_transitions(
    p_tasks uuid[], p_from text[], p_to text[], p_sort integer[], p_meta jsonb[]
) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE tasker.task_transitions
       SET most_recent = false
     WHERE task_uuid = ANY (p_tasks) AND most_recent;
    INSERT INTO tasker.task_transitions
           (task_uuid, from_state, to_state, sort_key, most_recent, metadata)
    SELECT u.t, u.f, u.tt, u.k, true, coalesce(u.m, '{}'::jsonb)
      FROM unnest(p_tasks, p_from, p_to, p_sort, p_meta) AS u(t, f, tt, k, m);
END;
$$;
-- +goose StatementEnd

-- apply_step_moves: p_ids[i] moves from p_first[i] to p_final[i] through
-- p_n[i] transitions, ending with next_attempt_at p_next[i], max_attempts
-- raised by p_extra[i] and, when p_results[i] is not null, those results.
-- The p_tr_* arrays are the transition rows (p_tr_seq numbers a step's
-- moves from 1).
-- +goose StatementBegin
CREATE FUNCTION tasker.apply_step_moves(
    p_ids uuid[], p_first text[], p_final text[], p_n integer[], p_next timestamptz[],
    p_extra integer[], p_results jsonb[],
    p_tr_step uuid[], p_tr_from text[], p_tr_to text[], p_tr_seq integer[], p_tr_meta jsonb[]
) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_ids uuid[]; v_tasks uuid[]; v_base integer[]; v_n integer[];
BEGIN
    WITH a AS (
        SELECT * FROM unnest(p_ids, p_first, p_final, p_n, p_next, p_extra, p_results)
                   AS a(id, f, t, n, nx, ex, res)
    ), moved AS (
        UPDATE tasker.workflow_steps ws
           SET state = a.t,
               transition_count = ws.transition_count + a.n,
               next_attempt_at = a.nx,
               results = coalesce(a.res, ws.results),
               max_attempts = ws.max_attempts + coalesce(a.ex, 0),
               lease_expires_at = NULL,
               updated_at = now(),
               state_entered_at = now(),
               completed_at = CASE WHEN a.t IN ('complete', 'cancelled', 'resolved_manually') THEN now() END
          FROM a
         WHERE ws.step_uuid = ANY (p_ids) AND ws.step_uuid = a.id AND ws.state = a.f
        RETURNING ws.step_uuid, ws.task_uuid, ws.transition_count - a.n AS base, a.n
    )
    SELECT array_agg(m.step_uuid), array_agg(m.task_uuid), array_agg(m.base), array_agg(m.n)
      INTO v_ids, v_tasks, v_base, v_n
      FROM moved m;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE tasker.workflow_step_transitions
       SET most_recent = false
     WHERE step_uuid = ANY (v_ids) AND most_recent;
    INSERT INTO tasker.workflow_step_transitions
           (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent, metadata)
    SELECT tr.s, b.t, tr.f, tr.tt, b.base + tr.seq, tr.seq = b.n, coalesce(tr.m, '{}'::jsonb)
      FROM unnest(p_tr_step, p_tr_from, p_tr_to, p_tr_seq, p_tr_meta) AS tr(s, f, tt, seq, m)
      JOIN unnest(v_ids, v_tasks, v_base, v_n) AS b(s, t, base, n) ON b.s = tr.s;
    RETURN array_length(v_ids, 1);
END;
$$;
-- +goose StatementEnd

-- apply_task_moves: p_ids[i] moves from p_first[i] to p_final[i] through
-- p_n[i] transitions (p_n[i] = 0: only its wake time changes) and gets
-- wake_at p_wake[i]; p_terminal[i] says a move entered a terminal state (the
-- root span is then emitted). The p_tr_* arrays are the transition rows.
-- +goose StatementBegin
CREATE FUNCTION tasker.apply_task_moves(
    p_ids uuid[], p_first text[], p_final text[], p_n integer[], p_wake timestamptz[], p_terminal boolean[],
    p_tr_task uuid[], p_tr_from text[], p_tr_to text[], p_tr_seq integer[], p_tr_meta jsonb[]
) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_ids uuid[]; v_base integer[]; v_n integer[]; v_count integer;
BEGIN
    WITH a AS (
        SELECT * FROM unnest(p_ids, p_first, p_final, p_n, p_wake, p_terminal) AS a(id, f, t, n, w, term)
    ), moved AS (
        UPDATE tasker.tasks tk
           SET state = CASE WHEN a.n > 0 THEN a.t ELSE tk.state END,
               transition_count = tk.transition_count + a.n,
               wake_at = a.w,
               updated_at = CASE WHEN a.n > 0 THEN now() ELSE tk.updated_at END,
               state_entered_at = CASE WHEN a.n > 0 THEN now() ELSE tk.state_entered_at END,
               completed_at = CASE WHEN a.n = 0 THEN tk.completed_at
                                   WHEN a.t IN ('complete', 'error', 'cancelled', 'resolved_manually') THEN now() END,
               root_span_emitted = tk.root_span_emitted OR coalesce(a.term, false)
          FROM a
         WHERE tk.task_uuid = ANY (p_ids) AND tk.task_uuid = a.id AND (a.n = 0 OR tk.state = a.f)
        RETURNING tk.task_uuid, tk.transition_count - a.n AS base, a.n
    )
    SELECT array_agg(m.task_uuid), array_agg(m.base), array_agg(m.n), count(*)
      INTO v_ids, v_base, v_n, v_count
      FROM moved m;
    IF v_count = 0 THEN
        RETURN 0;
    END IF;
    UPDATE tasker.task_transitions
       SET most_recent = false
     WHERE task_uuid = ANY (v_ids) AND most_recent
       AND task_uuid = ANY (p_tr_task);
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, metadata)
    SELECT tr.t, tr.f, tr.tt, b.base + tr.seq, tr.seq = b.n, coalesce(tr.m, '{}'::jsonb)
      FROM unnest(p_tr_task, p_tr_from, p_tr_to, p_tr_seq, p_tr_meta) AS tr(t, f, tt, seq, m)
      JOIN unnest(v_ids, v_base, v_n) AS b(t, base, n) ON b.t = tr.t;
    RETURN v_count;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.transition_steps(
    p_steps uuid[], p_from text[], p_to text[], p_next_attempt_at timestamptz[],
    p_results jsonb[], p_extra_attempts integer[], p_lease_guard boolean[], p_meta jsonb[]
) RETURNS TABLE (step_uuid uuid, task_uuid uuid, from_state text, to_state text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_steps uuid[]; v_tasks uuid[]; v_from text[]; v_to text[]; v_sort integer[]; v_meta jsonb[];
BEGIN
    WITH m AS (
        SELECT * FROM unnest(p_steps, p_from, p_to, p_next_attempt_at, p_results, p_extra_attempts, p_lease_guard, p_meta)
                   AS m(id, f, t, next_at, res, extra, guard, meta)
    ), locked AS (
        SELECT ws.step_uuid FROM tasker.workflow_steps ws
         WHERE ws.step_uuid = ANY (p_steps)
         ORDER BY ws.step_uuid FOR UPDATE OF ws
    ), moved AS (
        UPDATE tasker.workflow_steps ws
           SET state = m.t,
               transition_count = ws.transition_count + 1,
               next_attempt_at = m.next_at,
               results = coalesce(m.res, ws.results),
               max_attempts = ws.max_attempts + coalesce(m.extra, 0),
               lease_expires_at = NULL,
               updated_at = now(),
               state_entered_at = now(),
               completed_at = CASE WHEN m.t IN ('complete', 'cancelled', 'resolved_manually') THEN now() END
          FROM m, locked
         WHERE ws.step_uuid = ANY (p_steps) AND ws.step_uuid = m.id AND locked.step_uuid = ws.step_uuid
           AND ws.state = m.f
           AND (NOT coalesce(m.guard, false) OR ws.lease_expires_at < clock_timestamp())
        RETURNING ws.step_uuid, ws.task_uuid, m.f, m.t, ws.transition_count, m.meta
    )
    SELECT array_agg(mv.step_uuid), array_agg(mv.task_uuid), array_agg(mv.f), array_agg(mv.t),
           array_agg(mv.transition_count), array_agg(mv.meta)
      INTO v_steps, v_tasks, v_from, v_to, v_sort, v_meta
      FROM moved mv;
    IF v_steps IS NULL THEN
        RETURN;
    END IF;
    PERFORM tasker.log_step_transitions(v_steps, v_tasks, v_from, v_to, v_sort, v_meta);
    RETURN QUERY SELECT u.s, u.t, u.f, u.tt FROM unnest(v_steps, v_tasks, v_from, v_to) AS u(s, t, f, tt);
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION IF EXISTS tasker.apply_task_moves(uuid[], text[], text[], integer[], timestamptz[], boolean[], uuid[], text[], text[], integer[], jsonb[]);
DROP FUNCTION IF EXISTS tasker.apply_step_moves(uuid[], text[], text[], integer[], timestamptz[], integer[], jsonb[], uuid[], text[], text[], integer[], jsonb[]);
-- The 00003 versions of the other functions are restored by re-running
-- 00003's definitions; these are behaviourally identical, so Down keeps them.
