package orchestration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/worker"
)

// submittedFirstSteps creates n linear tasks in ns with no orchestrator
// running, lets a worker run their first steps, and returns the tasks once
// every first step waits for the orchestrator (its notice in the queue).
func submittedFirstSteps(t *testing.T, h *enginetest.Harness, ns string, n int) []uuid.UUID {
	t.Helper()
	h.Worker(workerConfig(ns), map[string]worker.Handler{"t.echo": echo(newLedger())})
	var ids []uuid.UUID
	for i := range n {
		task, _, err := h.Engine.CreateTask(context.Background(), orchestration.TaskRequest{
			Namespace: ns, Name: "linear", Context: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.UUID)
	}
	for _, id := range ids {
		enginetest.Eventually(t, 30*time.Second, "first step submitted", func() bool {
			return firstStepState(t, h, id) == lifecycle.StepEnqueuedForOrchestration
		})
	}
	return ids
}

func firstStepState(t *testing.T, h *enginetest.Harness, task uuid.UUID) lifecycle.StepState {
	t.Helper()
	steps, err := h.Store.TaskSteps(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if s.Name == "first" {
			return s.State
		}
	}
	t.Fatalf("task %s has no step first", task)
	return ""
}

// holdTaskLock locks a task's row in a transaction of its own, as an
// operator's long transaction would; rolling it back releases the lock
// (the test's cleanup does, if the test does not).
func holdTaskLock(t *testing.T, h *enginetest.Harness, task uuid.UUID) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	lock, err := h.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lock.Rollback(ctx) })
	if _, err := lock.Exec(ctx, `SELECT 1 FROM tasker.tasks WHERE task_uuid = $1 FOR UPDATE`, task); err != nil {
		t.Fatal(err)
	}
	return lock
}

func noticesOf(t *testing.T, h *enginetest.Harness, table string, task uuid.UUID) int {
	t.Helper()
	var n int
	if err := h.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pgmq.`+table+` WHERE message->>'task_uuid' = $1`, task.String()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLockedTaskDoesNotStallOtherResults: a session holding one task's row
// lock (an operator's long transaction) held up the results of every task
// read in the same batch until the statement timeout, then the notices
// came back to be read again until they were archived as poison. Now the
// batch gives up on the locked task after a few seconds, processes the
// others, and leaves the locked task's notice for its next delivery.
func TestLockedTaskDoesNotStallOtherResults(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(linearTemplate("locked"))
	ids := submittedFirstSteps(t, h, "locked", 2)
	held, free := ids[0], ids[1]

	lock := holdTaskLock(t, h, held)
	orch := orchestration.NewOrchestrator(h.Engine, orchestration.ServiceConfig{VisibilityTimeout: time.Second}, nil, nil, h.Logger)
	// Without a bound on the lock wait this blocks until the lock is
	// released, which happens only after it returns: the deadline fails it.
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := orch.ResultsOnce(rctx); err != nil {
		t.Fatalf("results with one task locked elsewhere: %v", err)
	}
	if s := firstStepState(t, h, free); s == lifecycle.StepEnqueuedForOrchestration {
		t.Errorf("the unlocked task's result was not processed (step %s)", s)
	}
	if s := firstStepState(t, h, held); s != lifecycle.StepEnqueuedForOrchestration {
		t.Errorf("the locked task's step moved to %s under another session's lock", s)
	}
	if n, a := noticesOf(t, h, "q_orchestration_step_results", held), noticesOf(t, h, "a_orchestration_step_results", held); n != 1 || a != 0 {
		t.Errorf("the locked task's notice: %d in the queue, %d archived; want it left in the queue", n, a)
	}

	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	enginetest.Eventually(t, 30*time.Second, "the held result is processed on its next delivery", func() bool {
		if _, err := orch.ResultsOnce(ctx); err != nil {
			t.Fatal(err)
		}
		return firstStepState(t, h, held) != lifecycle.StepEnqueuedForOrchestration
	})
}

// TestStrandedResultIsAppliedWithoutItsNotice: a result whose notice is
// gone (archived as poison, deleted by hand) used to leave its step waiting
// for the orchestrator until stale detection failed the task. The timers
// apply it once it has waited long enough, exactly once, and leave young
// ones to their notices.
func TestStrandedResultIsAppliedWithoutItsNotice(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(linearTemplate("stranded"))
	ids := submittedFirstSteps(t, h, "stranded", 2)
	old, young := ids[0], ids[1]
	if _, err := h.Pool.Exec(ctx, `DELETE FROM pgmq.q_orchestration_step_results`); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Pool.Exec(ctx, `UPDATE tasker.workflow_steps SET state_entered_at = now() - interval '10 minutes'
	                                 WHERE task_uuid = $1 AND name = 'first'`, old); err != nil {
		t.Fatal(err)
	}
	n, err := h.Engine.RedriveStrandedResults(ctx, 2*time.Minute, 50)
	if err != nil || n != 1 {
		t.Fatalf("re-drive: %d applied, %v; want the old one", n, err)
	}
	if s := firstStepState(t, h, old); s != lifecycle.StepComplete {
		t.Errorf("the stranded step is %s, want complete", s)
	}
	if s := firstStepState(t, h, young); s != lifecycle.StepEnqueuedForOrchestration {
		t.Errorf("a result younger than the threshold was applied (step %s)", s)
	}
	var completions int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM tasker.workflow_step_transitions st
	                                  JOIN tasker.workflow_steps ws USING (step_uuid)
	                                 WHERE ws.task_uuid = $1 AND ws.name = 'first' AND st.to_state = 'complete'`, old).Scan(&completions); err != nil {
		t.Fatal(err)
	}
	if completions != 1 {
		t.Errorf("the stranded step completed %d times", completions)
	}
	// The task went on: its next step was dispatched in the same transaction.
	task, err := h.Store.TaskGet(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if task.State != lifecycle.TaskStepsInProcess {
		t.Errorf("task is %s after the re-driven result, want steps_in_process", task.State)
	}
	if n, err := h.Engine.RedriveStrandedResults(ctx, 2*time.Minute, 50); err != nil || n != 0 {
		t.Errorf("second re-drive: %d applied, %v; want nothing", n, err)
	}
}

// TestLockedTaskDoesNotStallTheReaper: the lease reaper waited for a task
// another session held and then gave up its whole pass; it now leaves that
// task for its next pass and reaps the others.
func TestLockedTaskDoesNotStallTheReaper(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(linearTemplate("reaping"))
	var ids []uuid.UUID
	for i := range 2 {
		task, _, err := h.Engine.CreateTask(ctx, orchestration.TaskRequest{
			Namespace: "reaping", Name: "linear", Context: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.UUID)
	}
	// A worker that claimed both first steps and died.
	if _, err := h.Pool.Exec(ctx, `
		SELECT tasker.step_claim_batch(array_agg(step_uuid), array_agg(1), 'dead-worker', 60)
		  FROM tasker.workflow_steps WHERE task_uuid = ANY ($1) AND name = 'first'`, ids); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Pool.Exec(ctx, `UPDATE tasker.workflow_steps SET lease_expires_at = now() - interval '1 minute'
	                                 WHERE task_uuid = ANY ($1) AND name = 'first'`, ids); err != nil {
		t.Fatal(err)
	}
	held, free := ids[0], ids[1]
	lock := holdTaskLock(t, h, held)
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	n, err := h.Engine.ReapExpiredLeases(rctx, 50)
	if err != nil || n != 1 {
		t.Fatalf("reaper with one task locked elsewhere: reaped %d, %v; want the other task's lease", n, err)
	}
	if s := firstStepState(t, h, free); s == lifecycle.StepInProgress {
		t.Errorf("the unlocked task's expired lease was not reaped")
	}
	if s := firstStepState(t, h, held); s != lifecycle.StepInProgress {
		t.Errorf("the locked task's step moved to %s under another session's lock", s)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := h.Engine.ReapExpiredLeases(ctx, 50); err != nil || n != 1 {
		t.Errorf("next pass: reaped %d, %v; want the held task's lease", n, err)
	}
}

// TestResultNoticePoison: notices that can never be applied are archived
// and counted by reason; a notice for a real step that is not waiting (a
// duplicate or a stale attempt) is consumed quietly. A notice naming a
// step its task does not have used to be deleted at DEBUG.
func TestResultNoticePoison(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(linearTemplate("notices"))
	task, _, err := h.Engine.CreateTask(ctx, orchestration.TaskRequest{Namespace: "notices", Name: "linear"})
	if err != nil {
		t.Fatal(err)
	}
	steps, err := h.Store.TaskSteps(ctx, task.UUID)
	if err != nil {
		t.Fatal(err)
	}
	notice := func(taskID, stepID uuid.UUID, attempt int) string {
		return fmt.Sprintf(`{"task_uuid":%q,"step_uuid":%q,"attempt":%d,"success":true}`, taskID, stepID, attempt)
	}
	for _, body := range []string{
		`"not an object"`,
		`{"attempt":1,"success":true}`,
		notice(task.UUID, steps[0].UUID, 0),
		notice(uuid.Must(uuid.NewV7()), steps[0].UUID, 1),
		notice(task.UUID, uuid.Must(uuid.NewV7()), 1),
		notice(task.UUID, steps[0].UUID, 1), // its step is enqueued, not waiting: stale
	} {
		if _, err := h.Pool.Exec(ctx, `SELECT pgmq.send('orchestration_step_results', $1::jsonb)`, body); err != nil {
			t.Fatal(err)
		}
	}
	orch := orchestration.NewOrchestrator(h.Engine, orchestration.ServiceConfig{}, nil, h.Provider, h.Logger)
	if _, err := orch.ResultsOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var queued, archived int
	_ = h.Pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_orchestration_step_results`).Scan(&queued)
	_ = h.Pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.a_orchestration_step_results`).Scan(&archived)
	if queued != 0 || archived != 5 {
		t.Errorf("%d notices left, %d archived; want none left and the 5 that can never apply archived", queued, archived)
	}
	for reason, n := range map[string]float64{"malformed": 3, "unknown_task": 1, "unknown_step": 1} {
		if got := counterValue(t, h, "tasker_poison_messages_total", "reason", reason); got != n {
			t.Errorf("tasker_poison_messages_total{reason=%q} = %v, want %v", reason, got, n)
		}
	}
	if s := firstStepState(t, h, task.UUID); s != lifecycle.StepEnqueued {
		t.Errorf("the first step moved to %s", s)
	}
}
