package orchestration_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
)

// claimFirst claims the task's first enqueued step by hand, as a worker in
// any language would, and returns it.
func claimFirst(t *testing.T, h *enginetest.Harness, ns, worker string, task uuid.UUID) (uuid.UUID, int64) {
	t.Helper()
	q, _ := queue.WorkerQueue(ns)
	msgs, err := queue.Read(context.Background(), h.Pool, q, 30*time.Second, 10)
	if err != nil {
		t.Fatalf("read step messages: %v", err)
	}
	for _, msg := range msgs {
		var m struct {
			TaskUUID uuid.UUID `json:"task_uuid"`
			StepUUID uuid.UUID `json:"step_uuid"`
			Attempt  int       `json:"attempt"`
		}
		if err := json.Unmarshal(msg.Body, &m); err != nil {
			t.Fatal(err)
		}
		if m.TaskUUID != task {
			continue
		}
		var claimed bool
		if err := h.Pool.QueryRow(context.Background(), `SELECT claimed FROM tasker.step_claim($1, $2, $3, 30)`, m.StepUUID, m.Attempt, worker).Scan(&claimed); err != nil || !claimed {
			t.Fatalf("claim: %v %v", err, claimed)
		}
		return m.StepUUID, msg.ID
	}
	t.Fatalf("no step message for task %s", task)
	return uuid.Nil, 0
}

func submit(t *testing.T, h *enginetest.Harness, step uuid.UUID, worker string, msgID int64) bool {
	t.Helper()
	var ok bool
	if err := h.Pool.QueryRow(context.Background(), `SELECT tasker.step_submit_result($1, 1, $2, true, '{"n":1}'::jsonb, NULL, $3)`,
		step, worker, msgID).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestDuplicateAndLateResultsChangeNothing: the same result submitted twice,
// the same notice processed twice, and a result for a task cancelled while
// its step ran — none is applied twice or at all.
func TestDuplicateAndLateResultsChangeNothing(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(linearTemplate("dups"))
	ctx := context.Background()

	task := h.Submit(orchestration.TaskRequest{Namespace: "dups", Name: "linear"})
	step, msgID := claimFirst(t, h, "dups", "w1", task.UUID)
	if !submit(t, h, step, "w1", msgID) {
		t.Fatal("first submission refused")
	}
	if submit(t, h, step, "w1", msgID) {
		t.Error("a duplicate submission was accepted")
	}
	if submit(t, h, step, "someone-else", msgID) {
		t.Error("a submission by a worker that never claimed the step was accepted")
	}
	// Deliver the one notice twice: a copy is sent before processing.
	msgs, err := queue.Read(ctx, h.Pool, queue.StepResultsQueue, 30*time.Second, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("notices: %v %d (duplicate submissions must not send notices)", err, len(msgs))
	}
	if _, err := queue.Send(ctx, h.Pool, queue.StepResultsQueue, msgs[0].Body, msgs[0].Headers, 0); err != nil {
		t.Fatal(err)
	}
	copies, _ := queue.Read(ctx, h.Pool, queue.StepResultsQueue, 30*time.Second, 10)
	if _, err := h.Engine.ProcessResults(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Engine.ProcessResults(ctx, copies); err != nil {
		t.Fatal(err)
	}
	var completes int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM tasker.workflow_step_transitions WHERE step_uuid = $1 AND to_state = 'complete'`, step).Scan(&completes); err != nil {
		t.Fatal(err)
	}
	if completes != 1 {
		t.Errorf("step completed %d times", completes)
	}
	var enqueued int
	_ = h.Pool.QueryRow(ctx, `SELECT count(*) FROM tasker.workflow_steps WHERE task_uuid = $1 AND state = 'enqueued'`, task.UUID).Scan(&enqueued)
	if enqueued != 1 {
		t.Errorf("%d steps enqueued after one result (the second step, once)", enqueued)
	}

	// A result for a task cancelled while its step ran.
	task2 := h.Submit(orchestration.TaskRequest{Namespace: "dups", Name: "linear"})
	step2, msg2 := claimFirst(t, h, "dups", "w2", task2.UUID)
	if _, err := h.Engine.CancelTask(ctx, task2.UUID, "test"); err != nil {
		t.Fatal(err)
	}
	if submit(t, h, step2, "w2", msg2) {
		t.Error("a result for a cancelled task was accepted")
	}
	got, _ := h.Store.TaskGet(ctx, task2.UUID)
	if got.State != lifecycle.TaskCancelled {
		t.Errorf("task is %s", got.State)
	}
}
