-- apply_task_moves flips the previous most_recent transition rows with one
-- array, not two.
--
-- Its flip was `WHERE task_uuid = ANY (v_ids) AND most_recent AND
-- task_uuid = ANY (p_tr_task)`: both arrays became index conditions on
-- task_transitions_most_recent_idx, and PostgreSQL 15's B-tree then runs
-- one descent for every pair of elements, the product of the arrays: 900
-- descents to flip 30 rows, 409,000 index scans in a linear4 run of 8,000
-- steps, 51 per step (pg_stat_user_indexes; docs/performance.md, row 35).
-- The tasks to flip, those in both arrays, are now worked out in memory
-- first. Everything else is as in 00007, with the settings of 00012 and
-- 00013 restated (CREATE OR REPLACE resets what it does not restate).

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.apply_task_moves(
    p_ids uuid[], p_first text[], p_final text[], p_n integer[], p_wake timestamptz[], p_terminal boolean[],
    p_tr_task uuid[], p_tr_from text[], p_tr_to text[], p_tr_seq integer[], p_tr_meta jsonb[]
) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan AS $$
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
    -- The tasks that moved and have transition rows (not those whose wake
    -- time alone changed), as one array: see the header.
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

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker.apply_task_moves(
    p_ids uuid[], p_first text[], p_final text[], p_n integer[], p_wake timestamptz[], p_terminal boolean[],
    p_tr_task uuid[], p_tr_from text[], p_tr_to text[], p_tr_seq integer[], p_tr_meta jsonb[]
) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan AS $$
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
