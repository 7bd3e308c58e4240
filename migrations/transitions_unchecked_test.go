package migrations_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
)

// TestTransitionRowsAreNotCheckedButDieWithTheirRows (00018): writing a
// transition row reads neither its step nor its task (no foreign-key
// check), and deleting a step or a task still deletes its transitions, as
// the foreign keys' ON DELETE CASCADE did.
func TestTransitionRowsAreNotCheckedButDieWithTheirRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(cpTemplate)
	req := orchestration.TaskRequest{Namespace: "cp_grow", Name: "pair"}
	doomed := h.Submit(req).UUID
	req.Context = json.RawMessage(`{"other": true}`)
	kept := h.Submit(req).UUID

	count := func(sql string, args ...any) int { t.Helper(); return countOf(t, h.Pool, sql, args...) }
	stepOf := func(task uuid.UUID, name string) uuid.UUID { t.Helper(); return stepNamed(t, h.Pool, task, name) }
	a, b := stepOf(doomed, "a"), stepOf(doomed, "b")

	// Inserting transitions probes no primary key of the parent tables.
	tx, err := h.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	scans := func() (steps, tasks int64) {
		return sessionStat(t, tx, "numscans", "tasker.workflow_steps_pkey"), sessionStat(t, tx, "numscans", "tasker.tasks_pkey")
	}
	steps0, tasks0 := scans()
	if _, err := tx.Exec(ctx, `
		INSERT INTO tasker.workflow_step_transitions (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent)
		VALUES ($1, $3, 'pending', 'pending', 1000, false), ($2, $3, 'pending', 'pending', 1000, false)`, a, b, doomed); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO tasker.task_transitions (task_uuid, from_state, to_state, sort_key, most_recent)
		VALUES ($1, 'pending', 'pending', 1000, false)`, doomed); err != nil {
		t.Fatal(err)
	}
	steps1, tasks1 := scans()
	if steps1 != steps0 || tasks1 != tasks0 {
		t.Errorf("writing 2 step and 1 task transition rows scanned workflow_steps_pkey %d and tasks_pkey %d times; want 0 (no foreign-key checks)",
			steps1-steps0, tasks1-tasks0)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	const stepRows = `SELECT count(*) FROM tasker.workflow_step_transitions WHERE step_uuid = $1`
	const taskRows = `SELECT count(*) FROM tasker.task_transitions WHERE task_uuid = $1`
	keptSteps := count(`SELECT count(*) FROM tasker.workflow_step_transitions st
	                      JOIN tasker.workflow_steps s USING (step_uuid) WHERE s.task_uuid = $1`, kept)
	keptTask := count(taskRows, kept)
	if count(stepRows, a) < 2 || count(stepRows, b) < 2 || count(taskRows, doomed) < 2 || keptSteps < 2 || keptTask < 1 {
		t.Fatalf("fixture: too few transition rows (a %d, b %d, task %d, other task's steps %d, other task %d)",
			count(stepRows, a), count(stepRows, b), count(taskRows, doomed), keptSteps, keptTask)
	}

	// A step deleted on its own takes its transitions along.
	if _, err := h.Pool.Exec(ctx, `DELETE FROM tasker.workflow_steps WHERE step_uuid = $1`, b); err != nil {
		t.Fatal(err)
	}
	if n := count(stepRows, b); n != 0 {
		t.Errorf("deleted step b still has %d transition rows", n)
	}
	if n := count(stepRows, a); n < 2 {
		t.Errorf("step a lost transition rows with b's delete: %d left", n)
	}

	// A task deleted takes its steps (their foreign key) and every
	// transition of both along; another task's rows stay.
	if _, err := h.Pool.Exec(ctx, `DELETE FROM tasker.tasks WHERE task_uuid = $1`, doomed); err != nil {
		t.Fatal(err)
	}
	if n, m := count(stepRows, a), count(taskRows, doomed); n != 0 || m != 0 {
		t.Errorf("after the task's delete: %d transition rows of its step a, %d of the task; want none", n, m)
	}
	var orphans int
	if err := h.Pool.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM tasker.workflow_step_transitions st
		         WHERE NOT EXISTS (SELECT FROM tasker.workflow_steps s WHERE s.step_uuid = st.step_uuid))
		     + (SELECT count(*) FROM tasker.task_transitions tt
		         WHERE NOT EXISTS (SELECT FROM tasker.tasks k WHERE k.task_uuid = tt.task_uuid))`).Scan(&orphans); err != nil {
		t.Fatal(err)
	}
	if orphans != 0 {
		t.Errorf("%d transition rows name no step or task", orphans)
	}
	gotSteps := count(`SELECT count(*) FROM tasker.workflow_step_transitions st
	                     JOIN tasker.workflow_steps s USING (step_uuid) WHERE s.task_uuid = $1`, kept)
	if gotSteps != keptSteps || count(taskRows, kept) != keptTask {
		t.Errorf("the other task's transitions changed: steps %d -> %d, task %d -> %d",
			keptSteps, gotSteps, keptTask, count(taskRows, kept))
	}
}
