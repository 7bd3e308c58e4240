package migrations_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/queue"
)

// Tests of 00015: the submissions insert their notice without pgmq.send
// and find their rows through the primary key.

// TestSubmissionsWakeTheOrchestrator: the notice inserted by
// step_submit_result and step_submit_results still wakes a listener of the
// orchestration queue (the insert trigger fires for the static insert as it
// did for pgmq.send), once per call.
func TestSubmissionsWakeTheOrchestrator(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := sbHarness(t, "ss_wake")
	steps := claimSteps(t, h, "ss_wake", "w1", "a", "b", "c")

	lc, err := pgx.Connect(ctx, h.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lc.Close(context.Background()) })
	if _, err := lc.Exec(ctx, "LISTEN "+pgx.Identifier{queue.NotifyChannel("orchestration_step_results")}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	wakeUps := func() int {
		n := 0
		for {
			wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			_, err := lc.WaitForNotification(wctx)
			cancel()
			if err != nil {
				return n
			}
			n++
		}
	}

	if got := submitEach(t, h, "w1", []element{{step: steps[0], attempt: 1, success: true, result: ptr(`{}`)}}); !got[0] {
		t.Fatal("step_submit_result refused the result")
	}
	if n := wakeUps(); n != 1 {
		t.Errorf("step_submit_result: %d wake-ups, want 1", n)
	}
	got, err := submitBatch(ctx, h.Pool, "w1", []element{
		{step: steps[1], attempt: 1, success: true, result: ptr(`{}`)},
		{step: steps[2], attempt: 1, success: true, result: ptr(`{}`)},
	})
	if err != nil || !got[0] || !got[1] {
		t.Fatalf("step_submit_results = %v, %v", got, err)
	}
	if n := wakeUps(); n != 1 {
		t.Errorf("step_submit_results: %d wake-ups, want 1 for the batch", n)
	}

	var notices, left int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_orchestration_step_results`).Scan(&notices); err != nil {
		t.Fatal(err)
	}
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_worker_ss_wake_queue`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if notices != 3 || left != 0 {
		t.Errorf("%d notices and %d step messages left, want 3 and 0", notices, left)
	}
}

// TestSubmitResultsReadsOnlyItsSteps: a batch's cost does not grow with the
// number of steps its worker has in progress. With 60 steps claimed, a batch
// of 3 reads a handful of index entries of workflow_steps (the plan before
// 00015 walked every in_progress step of the worker).
func TestSubmitResultsReadsOnlyItsSteps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := sbHarness(t, "ss_probe")
	labels := make([]string, 60)
	for i := range labels {
		labels[i] = fmt.Sprint("s", i)
	}
	steps := claimSteps(t, h, "ss_probe", "w1", labels...)
	if _, err := h.Pool.Exec(ctx, `ANALYZE tasker.workflow_steps`); err != nil {
		t.Fatal(err)
	}

	tx, err := h.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// Index entries returned so far, per index of the table: the counters
	// are the session's not yet reported to the statistics system, which
	// may include earlier transactions, so the test takes a difference.
	indexReads := func() map[string]int64 {
		rows, err := tx.Query(ctx, `
			SELECT c.relname, pg_stat_get_xact_tuples_returned(c.oid)
			  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
			 WHERE i.indrelid = 'tasker.workflow_steps'::regclass`)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for rows.Next() {
			var name string
			var n int64
			if err := rows.Scan(&name, &n); err != nil {
				t.Fatal(err)
			}
			out[name] = n
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := indexReads()
	var els []element
	for _, s := range steps[:3] {
		els = append(els, element{step: s, attempt: 1, success: true, result: ptr(`{}`)})
	}
	got, err := submitBatch(ctx, tx, "w1", els)
	if err != nil || !got[0] || !got[1] || !got[2] {
		t.Fatalf("step_submit_results = %v, %v", got, err)
	}
	perIndex := map[string]int64{}
	var total int64
	for name, n := range indexReads() {
		perIndex[name] = n - before[name]
		total += n - before[name]
	}
	// Each step is probed a few times by primary key (lock, update, the
	// namespace of its message, the foreign key of its transition row).
	if total > 30 {
		t.Errorf("a batch of 3 results read %d index entries of workflow_steps with 60 steps in progress (%v); want a few per step", total, perIndex)
	}
	t.Logf("index entries read: %v", perIndex)
}
