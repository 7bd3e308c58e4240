package migrations_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
)

// TestTaskMovesFlipWithOneProbePerTask (00022): apply_task_moves flips the
// previous most_recent transition row of each task that moved with one
// index probe per task (00007's flip probed the product of two arrays), and
// still leaves alone the row of a task whose wake time alone changed.
func TestTaskMovesFlipWithOneProbePerTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(cpTemplate)
	const n = 20
	var ids []uuid.UUID
	for range n + 1 {
		ids = append(ids, h.Submit(orchestration.TaskRequest{Namespace: "cp_grow", Name: "pair",
			Context: []byte(`{"k":"` + uuid.NewString() + `"}`)}).UUID)
	}
	state := scalar[string](t, h.Pool, `SELECT state FROM tasker.tasks WHERE task_uuid = $1`, ids[0])
	moving, waking := ids[:n], ids[n]

	tx, err := h.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	probes := func() int64 { return sessionStat(t, tx, "numscans", "tasker.task_transitions_most_recent_idx") }

	// n tasks move once each (to evaluating_results), one only wakes later.
	all := append(append([]uuid.UUID{}, moving...), waking)
	first, final, count := make([]string, n+1), make([]string, n+1), make([]int32, n+1)
	wake, terminal := make([]*time.Time, n+1), make([]bool, n+1)
	later := time.Now().Add(time.Hour)
	for i := range all {
		first[i], final[i], count[i] = state, "evaluating_results", 1
	}
	count[n], wake[n] = 0, &later
	trFrom, trTo, trSeq := make([]string, n), make([]string, n), make([]int32, n)
	trMeta := make([]*string, n)
	for i := range moving {
		trFrom[i], trTo[i], trSeq[i] = state, "evaluating_results", 1
	}
	p0 := probes()
	var applied int
	if err := tx.QueryRow(ctx, `SELECT tasker.apply_task_moves($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb[])`,
		all, first, final, count, wake, terminal, moving, trFrom, trTo, trSeq, trMeta).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied != n+1 {
		t.Fatalf("apply_task_moves applied %d, want %d", applied, n+1)
	}
	if got := probes() - p0; got > n {
		t.Errorf("flipping %d tasks' transitions took %d probes of the most_recent index, want at most %d", n, got, n)
	}

	var wrong int
	if err := tx.QueryRow(ctx, `
		SELECT count(*) FROM tasker.tasks tk
		  JOIN tasker.task_transitions tr ON tr.task_uuid = tk.task_uuid AND tr.most_recent
		 WHERE tk.task_uuid = ANY ($1)
		   AND (tr.sort_key <> tk.transition_count OR tr.to_state <> tk.state)`, all).Scan(&wrong); err != nil {
		t.Fatal(err)
	}
	var current int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM tasker.task_transitions WHERE task_uuid = ANY ($1) AND most_recent`, all).Scan(&current); err != nil {
		t.Fatal(err)
	}
	if wrong != 0 || current != n+1 {
		t.Errorf("%d tasks whose most_recent row is not their state, %d most_recent rows for %d tasks", wrong, current, n+1)
	}
	var waked string
	if err := tx.QueryRow(ctx, `SELECT tr.to_state FROM tasker.task_transitions tr WHERE tr.task_uuid = $1 AND tr.most_recent`, waking).Scan(&waked); err != nil || waked != state {
		t.Errorf("the task that only woke later: current transition %q (%v), want still %q", waked, err, state)
	}
}

// TestTaskMovesLeaveUnchangedRowsAlone (00038): a task whose moves end in
// the state they started from, with its wake time unchanged, gets its
// transition rows but no rewrite of its row; its compare-and-swap is
// checked on its most recent transition. Rows whose state or wake time
// changes are written as before. Transitions are numbered from the most
// recent row, by apply_task_moves and by transition_task after it, and the
// store's reads give the task's current state_entered_at and updated_at.
func TestTaskMovesLeaveUnchangedRowsAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(cpTemplate)
	var ids []uuid.UUID
	for range 4 {
		ids = append(ids, h.Submit(orchestration.TaskRequest{Namespace: "cp_grow", Name: "pair",
			Context: []byte(`{"k":"` + uuid.NewString() + `"}`)}).UUID)
	}
	// round trips and keeps its wake time; woken round trips to a new wake
	// time; moved ends in another state; stale's moves start from a state
	// it is not in.
	round, woken, moved, stale := ids[0], ids[1], ids[2], ids[3]
	state := scalar[string](t, h.Pool, `SELECT state FROM tasker.tasks WHERE task_uuid = $1`, round)
	type before struct {
		xmin string
		sort int
	}
	was := map[uuid.UUID]before{}
	for _, id := range ids {
		var b before
		if err := h.Pool.QueryRow(ctx, `
			SELECT tk.xmin::text, tr.sort_key FROM tasker.tasks tk
			  JOIN tasker.task_transitions tr ON tr.task_uuid = tk.task_uuid AND tr.most_recent
			 WHERE tk.task_uuid = $1`, id).Scan(&b.xmin, &b.sort); err != nil {
			t.Fatal(err)
		}
		was[id] = b
	}
	later := time.Now().Add(time.Hour)
	first := []string{state, state, state, "evaluating_results"}
	final := []string{state, state, "evaluating_results", "evaluating_results"}
	count := []int32{2, 2, 1, 1}
	wake := []*time.Time{nil, &later, nil, nil}
	terminal := make([]bool, 4)
	trTask := []uuid.UUID{round, round, woken, woken, moved, stale}
	trFrom := []string{state, "evaluating_results", state, "evaluating_results", state, "evaluating_results"}
	trTo := []string{"evaluating_results", state, "evaluating_results", state, "evaluating_results", "evaluating_results"}
	trSeq := []int32{1, 2, 1, 2, 1, 1}
	trMeta := make([]*string, len(trTask))

	tx, err := h.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var applied int
	if err := tx.QueryRow(ctx, `SELECT tasker.apply_task_moves($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb[])`,
		ids, first, final, count, wake, terminal, trTask, trFrom, trTo, trSeq, trMeta).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied != 3 {
		t.Fatalf("apply_task_moves counted %d tasks in their expected state, want 3 (all but the one whose moves start elsewhere)", applied)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		id        uuid.UUID
		name      string
		rewritten bool
		added     int
		state     string
	}{
		{round, "the round trip", false, 2, state},
		{woken, "the round trip to a new wake time", true, 2, state},
		{moved, "the move to another state", true, 1, "evaluating_results"},
		{stale, "the moves from a state the task is not in", false, 0, state},
	} {
		var xmin, cur string
		var sortKey, rows, count int
		if err := h.Pool.QueryRow(ctx, `
			SELECT tk.xmin::text, tk.state, tr.sort_key, tk.transition_count,
			       (SELECT count(*) FROM tasker.task_transitions a WHERE a.task_uuid = tk.task_uuid)
			  FROM tasker.tasks tk
			  JOIN tasker.task_transitions tr ON tr.task_uuid = tk.task_uuid AND tr.most_recent
			 WHERE tk.task_uuid = $1`, c.id).Scan(&xmin, &cur, &sortKey, &count, &rows); err != nil {
			t.Fatal(err)
		}
		if got := xmin != was[c.id].xmin; got != c.rewritten {
			t.Errorf("%s: task row rewritten %v, want %v", c.name, got, c.rewritten)
		}
		if sortKey != was[c.id].sort+c.added || rows != sortKey || cur != c.state {
			t.Errorf("%s: most recent transition %d of %d rows (state %s), want %d of %d (%s)",
				c.name, sortKey, rows, cur, was[c.id].sort+c.added, was[c.id].sort+c.added, c.state)
		}
		if c.rewritten && count != sortKey {
			t.Errorf("%s: a rewritten row's transition_count %d, want its most recent sort_key %d", c.name, count, sortKey)
		}
	}

	// The store reads the round-tripped task's current times from its most
	// recent transition, not from its row.
	var at time.Time
	if err := h.Pool.QueryRow(ctx, `SELECT created_at FROM tasker.task_transitions WHERE task_uuid = $1 AND most_recent`, round).Scan(&at); err != nil {
		t.Fatal(err)
	}
	got, err := h.Store.TaskGet(ctx, round)
	if err != nil {
		t.Fatal(err)
	}
	if !got.StateEnteredAt.Equal(at) || got.UpdatedAt.Before(at) {
		t.Errorf("the round trip read back: state_entered_at %s, updated_at %s; want %s and no earlier", got.StateEnteredAt, got.UpdatedAt, at)
	}

	// transition_task numbers its row after the most recent one, though the
	// round trip left transition_count behind.
	var ok bool
	if err := h.Pool.QueryRow(ctx, `SELECT moved FROM tasker.transition_task($1, $2, 'evaluating_results', NULL, '{}')`, round, state).Scan(&ok); err != nil || !ok {
		t.Fatalf("transition_task after the round trip: moved %v, %v", ok, err)
	}
	if k := scalar[int](t, h.Pool, `SELECT sort_key FROM tasker.task_transitions WHERE task_uuid = $1 AND most_recent`, round); k != was[round].sort+3 {
		t.Errorf("transition_task's row: sort_key %d, want %d", k, was[round].sort+3)
	}
}
