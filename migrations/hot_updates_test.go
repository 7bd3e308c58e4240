package migrations_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
)

// TestMovesThatKeepTheKeysAreHOT (00017): a task rewrite that keeps its
// state and wake_at (what apply_task_moves writes when a step finished and
// the next one was dispatched) and a step's dispatch (what apply_step_moves
// writes for pending -> enqueued) change no indexed column, so Postgres
// can keep them on their page without index entries; a claim, which sets
// the lease, cannot.
func TestMovesThatKeepTheKeysAreHOT(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(cpTemplate)
	task := h.Submit(orchestration.TaskRequest{Namespace: "cp_grow", Name: "pair"}).UUID

	tx, err := h.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	hot := func(table string) int64 { return sessionStat(t, tx, "tuples_hot_updated", table) }
	exec := func(sql string, args ...any) {
		t.Helper()
		tag, err := tx.Exec(ctx, sql, args...)
		if err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("%s: %v rows, %v", sql, tag.RowsAffected(), err)
		}
	}
	// Differences inside one transaction (sessionStat).
	tasks0, steps0 := hot("tasker.tasks"), hot("tasker.workflow_steps")

	exec(`UPDATE tasker.tasks
	         SET transition_count = transition_count + 3, wake_at = NULL, updated_at = now(),
	             state_entered_at = now(), completed_at = NULL, root_span_emitted = root_span_emitted
	       WHERE task_uuid = $1 AND state = 'steps_in_process'`, task)
	if got := hot("tasker.tasks") - tasks0; got != 1 {
		t.Errorf("a task rewrite keeping state and wake_at: %d HOT updates, want 1", got)
	}

	step := func(name string) pgx.NamedArgs { return pgx.NamedArgs{"task": task, "name": name} }
	exec(`UPDATE tasker.workflow_steps
	         SET state = 'enqueued', transition_count = transition_count + 1, next_attempt_at = NULL,
	             lease_expires_at = NULL, updated_at = now(), state_entered_at = now(), completed_at = NULL
	       WHERE task_uuid = @task AND name = @name AND state = 'pending'`, step("b"))
	if got := hot("tasker.workflow_steps") - steps0; got != 1 {
		t.Errorf("a step's dispatch: %d HOT updates, want 1", got)
	}
	exec(`UPDATE tasker.workflow_steps
	         SET state = 'in_progress', attempts = attempts + 1, claimed_by = 'w',
	             lease_expires_at = clock_timestamp() + interval '30 seconds', updated_at = now()
	       WHERE task_uuid = @task AND name = @name AND state = 'enqueued'`, step("a"))
	if got := hot("tasker.workflow_steps") - steps0; got != 1 {
		t.Errorf("after a claim: %d HOT updates, want still 1 (a lease is an index key)", got)
	}
}
