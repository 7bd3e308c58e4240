package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/worker"
)

// TestSeveralMessagesOfAStepInOneBatch: a step named by several messages of
// one read batch runs once, promptly, through its real message, and the
// other messages leave the queue. A forged (or corrupt) message naming the
// step with a later attempt than the real one used to get the real one
// deleted as a duplicate, then was refused itself: the step waited,
// enqueued without a message, until the stale-task timeout gave its task
// up (an hour by default).
func TestSeveralMessagesOfAStepInOneBatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		ns    string
		real  int   // the attempt the step is enqueued for
		extra []int // the attempts of the other messages naming it
	}{
		{"a forged message for a later attempt", "dup_forged", 1, []int{7}},
		{"a stale message of an earlier attempt", "dup_stale", 2, []int{1}},
		{"stale, real and forged", "dup_mixed", 2, []int{1, 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, tc.ns, 30, 3)
			task := h.Submit(orchestration.TaskRequest{Namespace: tc.ns, Name: "one"})
			step := onlyStep(t, h, task.UUID)
			q := h.QueueStepDuplicates(tc.ns, step, tc.real, tc.extra)

			ran := make(chan int, 10)
			// A lease (and so a visibility timeout) far longer than the
			// waits below: a message left in the queue for it to come back
			// does not pass.
			h.Worker(worker.Config{Namespaces: []string{tc.ns}, LeaseDuration: 2 * time.Minute}, map[string]worker.Handler{
				"t.only": func(ctx context.Context, s *worker.Step) (any, error) { ran <- s.Attempt; return "ok", nil },
			})
			h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskComplete)
			if got := <-ran; got != tc.real || len(ran) != 0 {
				t.Errorf("the handler ran for attempt %d and %d more times, want once for attempt %d", got, len(ran), tc.real)
			}
			ctx := context.Background()
			var claims, results int
			if err := h.Pool.QueryRow(ctx, `
				SELECT count(*) FILTER (WHERE to_state = 'in_progress'),
				       count(*) FILTER (WHERE from_state = 'in_progress')
				  FROM tasker.workflow_step_transitions WHERE step_uuid = $1`, step).Scan(&claims, &results); err != nil {
				t.Fatal(err)
			}
			if claims != tc.real || results != tc.real {
				t.Errorf("step claimed %d times with %d results, want %d of each (one per attempt)", claims, results, tc.real)
			}
			enginetest.Eventually(t, 10*time.Second, "every message of the step gone from the queue", func() bool {
				m, err := queue.QueueMetrics(ctx, h.Pool, q)
				return err == nil && m.Length == 0
			})
			if a := archived(t, h, q); len(a) != 0 {
				t.Errorf("messages archived: %v, want none (a refused message is deleted)", a)
			}
		})
	}
}
