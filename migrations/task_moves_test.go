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
