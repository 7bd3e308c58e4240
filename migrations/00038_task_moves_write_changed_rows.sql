-- A task's row is written only when a result transaction changes what it
-- stores (docs/performance.md, row 88).
--
-- In a linear4 task every step's result moves the task steps_in_process →
-- evaluating_results → enqueuing_steps → steps_in_process: three transition
-- rows, and a rewrite of the task row that ends in the state it started
-- from. That rewrite was a fifth of apply_task_moves's time and, with the
-- task's seven indexes, about 7 % of Postgres's CPU per linear4 step.
--
-- apply_task_moves now rewrites a task row only when its state, its wake
-- time or its terminal flag changes (and for wake-only operations, as
-- before). The compare-and-swap of the others is checked on their most
-- recent transition row, which the move flips anyway: its to_state is the
-- task's current state (the row and the transitions change together, in
-- one transaction, DESIGN §2). Transition rows are numbered from the
-- flipped row's sort_key, and transition_task does the same, so the
-- numbering no longer depends on tasks.transition_count; the column is
-- still set, to the new count, whenever the row is written.
--
-- tasks.updated_at and tasks.state_entered_at are therefore as of the row's
-- last write. The current values are those of the most recent transition
-- (its created_at is when the task entered its current state, the last
-- change of a task), which the engine's reads take (internal/store,
-- taskColumns).
--
-- Both functions keep their settings (00012, 00013, 00032), restated since
-- CREATE OR REPLACE resets what it does not restate; apply_task_moves also
-- plans without nested loops and bitmap scans, as the protocol's
-- compare-and-swaps do (00034).

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.apply_task_moves(
    p_ids uuid[], p_first text[], p_final text[], p_n integer[], p_wake timestamptz[], p_terminal boolean[],
    p_tr_task uuid[], p_tr_from text[], p_tr_to text[], p_tr_seq integer[], p_tr_meta jsonb[]
) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
-- Its joins are of two arrays' worth of rows each: without these, the
-- generic plan joined them by nested loops, quadratic in the batch (2,450
-- comparisons per join for 50 tasks), and read the tasks by a bitmap scan.
SET enable_nestloop = off
SET enable_bitmapscan = off
SET plan_cache_mode = force_generic_plan
SET jit = off AS $$
DECLARE
    v_count integer;
BEGIN
    -- flipped: the most recent transition row of every task that moves and
    -- is in the state its moves start from (the compare-and-swap), with
    -- the sort_key its new rows count from. changed: the task rows whose
    -- stored columns change. The count returned is the tasks in their
    -- expected state: those flipped, and those whose only operation is a
    -- new wake time.
    WITH a AS (
        SELECT * FROM unnest(p_ids, p_first, p_final, p_n, p_wake, p_terminal) AS a(id, f, t, n, w, term)
    ), flipped AS (
        UPDATE tasker.task_transitions tr
           SET most_recent = false
          FROM a
         WHERE tr.task_uuid = ANY (p_tr_task) AND tr.most_recent
           AND tr.task_uuid = a.id AND a.n > 0 AND tr.to_state = a.f
        RETURNING tr.task_uuid, tr.sort_key, a.n
    ), changed AS (
        UPDATE tasker.tasks tk
           SET state = CASE WHEN a.n > 0 THEN a.t ELSE tk.state END,
               transition_count = coalesce(f.sort_key + a.n, tk.transition_count),
               wake_at = a.w,
               updated_at = CASE WHEN a.n > 0 THEN now() ELSE tk.updated_at END,
               state_entered_at = CASE WHEN a.n > 0 THEN now() ELSE tk.state_entered_at END,
               completed_at = CASE WHEN a.n = 0 THEN tk.completed_at
                                   WHEN a.t IN ('complete', 'error', 'cancelled', 'resolved_manually') THEN now() END,
               root_span_emitted = tk.root_span_emitted OR coalesce(a.term, false)
          FROM a LEFT JOIN flipped f ON f.task_uuid = a.id
         WHERE tk.task_uuid = ANY (p_ids) AND tk.task_uuid = a.id
           AND ((a.n = 0) OR (f.task_uuid IS NOT NULL AND tk.state = a.f
                AND (a.t <> a.f OR coalesce(a.term, false) OR tk.wake_at IS DISTINCT FROM a.w)))
        RETURNING tk.task_uuid, a.n
    ), logged AS (
        INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, metadata)
        SELECT tr.t, tr.f, tr.tt, f.sort_key + tr.seq, tr.seq = f.n, coalesce(tr.m, '{}'::jsonb)
          FROM unnest(p_tr_task, p_tr_from, p_tr_to, p_tr_seq, p_tr_meta) AS tr(t, f, tt, seq, m)
          JOIN flipped f ON f.task_uuid = tr.t
    )
    SELECT (SELECT count(*) FROM flipped) + (SELECT count(*) FROM changed WHERE n = 0) INTO v_count;
    RETURN v_count;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.transition_task(p_task uuid, p_from text, p_to text, p_wake_at timestamptz, p_meta jsonb)
RETURNS TABLE (moved boolean, first_finish boolean)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
SET jit = off AS $$
#variable_conflict use_column
DECLARE
    v_sort     integer;
    v_emitted  boolean;
    v_terminal boolean := p_to IN ('complete', 'error', 'cancelled', 'resolved_manually');
BEGIN
    SELECT t.root_span_emitted INTO v_emitted FROM tasker.tasks t WHERE t.task_uuid = p_task;
    -- The new row's sort_key follows the most recent row's (see the header:
    -- transition_count may lag it).
    UPDATE tasker.tasks t
       SET state = p_to,
           transition_count = coalesce((SELECT tr.sort_key FROM tasker.task_transitions tr
                                         WHERE tr.task_uuid = p_task AND tr.most_recent), t.transition_count) + 1,
           wake_at = p_wake_at,
           updated_at = now(), state_entered_at = now(),
           completed_at = CASE WHEN v_terminal THEN now() END,
           root_span_emitted = t.root_span_emitted OR v_terminal
     WHERE t.task_uuid = p_task AND t.state = p_from
    RETURNING t.transition_count INTO v_sort;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, false;
        RETURN;
    END IF;
    UPDATE tasker.task_transitions SET most_recent = false WHERE task_uuid = p_task AND most_recent;
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, metadata)
    VALUES (p_task, p_from, p_to, v_sort, true, coalesce(p_meta, '{}'::jsonb));
    RETURN QUERY SELECT true, v_terminal AND NOT coalesce(v_emitted, false);
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.apply_task_moves(
    p_ids uuid[], p_first text[], p_final text[], p_n integer[], p_wake timestamptz[], p_terminal boolean[],
    p_tr_task uuid[], p_tr_from text[], p_tr_to text[], p_tr_seq integer[], p_tr_meta jsonb[]
) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
SET jit = off AS $$
DECLARE
    v_ids uuid[]; v_base integer[]; v_n integer[]; v_count integer; v_moved uuid[];
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
    SELECT array_agg(DISTINCT m.t) INTO v_moved
      FROM unnest(v_ids) AS m(t) JOIN unnest(p_tr_task) AS tr(t) ON tr.t = m.t;
    UPDATE tasker.task_transitions
       SET most_recent = false
     WHERE task_uuid = ANY (v_moved) AND most_recent;
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, metadata)
    SELECT tr.t, tr.f, tr.tt, b.base + tr.seq, tr.seq = b.n, coalesce(tr.m, '{}'::jsonb)
      FROM unnest(p_tr_task, p_tr_from, p_tr_to, p_tr_seq, p_tr_meta) AS tr(t, f, tt, seq, m)
      JOIN unnest(v_ids, v_base, v_n) AS b(t, base, n) ON b.t = tr.t;
    RETURN v_count;
END;
$$;
-- +goose StatementEnd

-- transition_task as in 00003, before the tasks' rows could lag their
-- transitions. Rows written by Up's apply_task_moves may have lagged: their
-- counts are brought up to date first.
UPDATE tasker.tasks t
   SET transition_count = tr.sort_key
  FROM tasker.task_transitions tr
 WHERE tr.task_uuid = t.task_uuid AND tr.most_recent AND t.transition_count <> tr.sort_key;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.transition_task(p_task uuid, p_from text, p_to text, p_wake_at timestamptz, p_meta jsonb)
RETURNS TABLE (moved boolean, first_finish boolean)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
SET jit = off AS $$
#variable_conflict use_column
DECLARE
    v_sort     integer;
    v_emitted  boolean;
    v_terminal boolean := p_to IN ('complete', 'error', 'cancelled', 'resolved_manually');
BEGIN
    SELECT t.root_span_emitted INTO v_emitted FROM tasker.tasks t WHERE t.task_uuid = p_task;
    UPDATE tasker.tasks t
       SET state = p_to, transition_count = t.transition_count + 1, wake_at = p_wake_at,
           updated_at = now(), state_entered_at = now(),
           completed_at = CASE WHEN v_terminal THEN now() END,
           root_span_emitted = t.root_span_emitted OR v_terminal
     WHERE t.task_uuid = p_task AND t.state = p_from
    RETURNING t.transition_count INTO v_sort;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, false;
        RETURN;
    END IF;
    UPDATE tasker.task_transitions SET most_recent = false WHERE task_uuid = p_task AND most_recent;
    INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent, metadata)
    VALUES (p_task, p_from, p_to, v_sort, true, coalesce(p_meta, '{}'::jsonb));
    RETURN QUERY SELECT true, v_terminal AND NOT coalesce(v_emitted, false);
END;
$$;
-- +goose StatementEnd
