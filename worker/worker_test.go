package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/worker"
)

const oneStep = `
namespace: %s
name: one
version: 1.0.0
steps:
  - name: only
    handler: t.only
    timeout_seconds: %d
    retry: {max_attempts: %d, backoff: {base_ms: 50, cap_ms: 100}}
`

func setup(t *testing.T, ns string, timeout, attempts int) *enginetest.Harness {
	t.Helper()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(fmt.Sprintf(oneStep, ns, timeout, attempts))
	return h
}

func lastError(t *testing.T, h *enginetest.Harness, task orchestration.TaskRequest, id [16]byte) map[string]any {
	t.Helper()
	steps, err := h.Store.TaskSteps(context.Background(), id)
	if err != nil || len(steps) != 1 {
		t.Fatalf("steps: %v", err)
	}
	var e map[string]any
	_ = json.Unmarshal(steps[0].LastError, &e)
	return e
}

func TestPanicBecomesRetryableError(t *testing.T) {
	t.Parallel()
	h := setup(t, "panics", 30, 2)
	var calls atomic.Int32
	h.Worker(worker.Config{Namespaces: []string{"panics"}}, map[string]worker.Handler{
		"t.only": func(ctx context.Context, s *worker.Step) (any, error) {
			if calls.Add(1) == 1 {
				panic("nil map write")
			}
			return "ok", nil
		},
	})
	task := h.Submit(orchestration.TaskRequest{Namespace: "panics", Name: "one"})
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskComplete)
	if calls.Load() != 2 {
		t.Errorf("handler ran %d times, want 2 (panic, then success)", calls.Load())
	}
}

func TestTimeoutFailsTheAttempt(t *testing.T) {
	t.Parallel()
	h := setup(t, "timeouts", 1, 1)
	h.Worker(worker.Config{Namespaces: []string{"timeouts"}}, map[string]worker.Handler{
		"t.only": func(ctx context.Context, s *worker.Step) (any, error) {
			<-ctx.Done() // a handler that honours cancellation
			return nil, ctx.Err()
		},
	})
	task := h.Submit(orchestration.TaskRequest{Namespace: "timeouts", Name: "one"})
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskError)
	e := lastError(t, h, orchestration.TaskRequest{}, task.UUID)
	if msg, _ := e["message"].(string); msg == "" || e["kind"] != "timeout" {
		t.Errorf("last_error = %v, want a timeout", e)
	}
}

func TestPermanentErrorIsNotRetried(t *testing.T) {
	t.Parallel()
	h := setup(t, "perm", 30, 5)
	var calls atomic.Int32
	h.Worker(worker.Config{Namespaces: []string{"perm"}}, map[string]worker.Handler{
		"t.only": func(ctx context.Context, s *worker.Step) (any, error) {
			calls.Add(1)
			return nil, worker.Permanent(errors.New("invalid account number"))
		},
	})
	task := h.Submit(orchestration.TaskRequest{Namespace: "perm", Name: "one"})
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskError)
	if calls.Load() != 1 {
		t.Errorf("a permanent error was retried: %d calls", calls.Load())
	}
	if e := lastError(t, h, orchestration.TaskRequest{}, task.UUID); e["retryable"] != false {
		t.Errorf("last_error = %v", e)
	}
}

func TestUnserializableResultFailsPermanently(t *testing.T) {
	t.Parallel()
	h := setup(t, "unjson", 30, 3)
	h.Worker(worker.Config{Namespaces: []string{"unjson"}}, map[string]worker.Handler{
		"t.only": func(ctx context.Context, s *worker.Step) (any, error) { return make(chan int), nil },
	})
	task := h.Submit(orchestration.TaskRequest{Namespace: "unjson", Name: "one"})
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskError)
}

// TestGracefulStopFinishesInFlightSteps: Stop waits for running handlers
// and submits their results.
func TestGracefulStopFinishesInFlightSteps(t *testing.T) {
	t.Parallel()
	h := setup(t, "gracefulstop", 30, 1)
	started := make(chan struct{}, 1)
	w := h.Worker(worker.Config{Namespaces: []string{"gracefulstop"}, ShutdownTimeout: 10 * time.Second}, map[string]worker.Handler{
		"t.only": func(ctx context.Context, s *worker.Step) (any, error) {
			started <- struct{}{}
			time.Sleep(500 * time.Millisecond) // simulated work the handler does not interrupt
			return "done", nil
		},
	})
	task := h.Submit(orchestration.TaskRequest{Namespace: "gracefulstop", Name: "one"})
	<-started
	w.Stop()
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskComplete)
}

// TestHardStopReleasesSteps: a handler that outlives the shutdown timeout is
// cancelled and its step released, so the next worker runs it at once
// (without waiting for the lease).
func TestHardStopReleasesSteps(t *testing.T) {
	t.Parallel()
	h := setup(t, "hardstop", 300, 3)
	started := make(chan struct{}, 1)
	w := h.Worker(worker.Config{Namespaces: []string{"hardstop"}, ShutdownTimeout: 200 * time.Millisecond, LeaseDuration: 60 * time.Second},
		map[string]worker.Handler{
			"t.only": func(ctx context.Context, s *worker.Step) (any, error) {
				started <- struct{}{}
				<-ctx.Done()
				return nil, ctx.Err()
			},
		})
	task := h.Submit(orchestration.TaskRequest{Namespace: "hardstop", Name: "one"})
	<-started
	stopStart := time.Now()
	w.Stop()
	if d := time.Since(stopStart); d > 5*time.Second {
		t.Errorf("Stop took %s with a 200ms shutdown timeout", d)
	}
	h.Worker(worker.Config{Namespaces: []string{"hardstop"}}, map[string]worker.Handler{
		"t.only": func(ctx context.Context, s *worker.Step) (any, error) { return s.Attempt, nil },
	})
	// The lease was 60 s: completing well before that proves the release.
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskComplete)
}

// TestDuplicateDeliveryRunsOnce: the same step message is delivered twice
// (a copy is inserted into the queue); the step still runs once.
func TestDuplicateDeliveryRunsOnce(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(fmt.Sprintf(oneStep, "dupes", 30, 1))
	task := h.Submit(orchestration.TaskRequest{Namespace: "dupes", Name: "one"})
	q, _ := queue.WorkerQueue("dupes")
	msgs, err := queue.Read(context.Background(), h.Pool, q, time.Second, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("read: %v %d", err, len(msgs))
	}
	if _, err := queue.SetVT(context.Background(), h.Pool, q, msgs[0].ID, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := queue.Send(context.Background(), h.Pool, q, msgs[0].Body, msgs[0].Headers, 0); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	h.Worker(worker.Config{Namespaces: []string{"dupes"}, Concurrency: 4}, map[string]worker.Handler{
		"t.only": func(ctx context.Context, s *worker.Step) (any, error) {
			calls.Add(1)
			time.Sleep(100 * time.Millisecond)
			return "ok", nil
		},
	})
	enginetest.Eventually(t, 20*time.Second, "both messages consumed", func() bool {
		m, err := queue.QueueMetrics(context.Background(), h.Pool, q)
		return err == nil && m.Length == 0
	})
	if calls.Load() != 1 {
		t.Errorf("a duplicated message ran the handler %d times", calls.Load())
	}
	steps, _ := h.Store.TaskSteps(context.Background(), task.UUID)
	if steps[0].State != lifecycle.StepEnqueuedForOrchestration || steps[0].Attempts != 1 {
		t.Errorf("step is %s after %d attempts", steps[0].State, steps[0].Attempts)
	}
}

// TestPoisonAndForeignMessages: garbage in a worker queue is archived; a
// message for a handler this worker lacks is left for another worker.
func TestPoisonAndForeignMessages(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(fmt.Sprintf(oneStep, "poisoned", 30, 1))
	q, _ := queue.WorkerQueue("poisoned")
	for _, body := range []string{`{"hello":"world"}`, `[1,2,3]`, `{"step_uuid":"not-a-uuid","attempt":1}`} {
		if _, err := queue.Send(context.Background(), h.Pool, q, json.RawMessage(body), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	task := h.Submit(orchestration.TaskRequest{Namespace: "poisoned", Name: "one"})
	h.Worker(worker.Config{Namespaces: []string{"poisoned"}}, map[string]worker.Handler{
		"t.other": func(ctx context.Context, s *worker.Step) (any, error) { return nil, nil },
	})
	enginetest.Eventually(t, 20*time.Second, "poison archived", func() bool {
		var n int
		_ = h.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pgmq.a_worker_poisoned_queue`).Scan(&n)
		return n == 3
	})
	steps, _ := h.Store.TaskSteps(context.Background(), task.UUID)
	if steps[0].State != lifecycle.StepEnqueued {
		t.Errorf("a step for an unregistered handler was touched: %s", steps[0].State)
	}
	var visible int
	_ = h.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pgmq.q_worker_poisoned_queue`).Scan(&visible)
	if visible != 1 {
		t.Errorf("%d messages left in the queue, want the one for another worker", visible)
	}
}

// TestHandleNilRemovesTheHandler: a nil Handler is never registered (the
// worker would call it), it removes the name.
func TestHandleNilRemovesTheHandler(t *testing.T) {
	t.Parallel()
	w, err := worker.New(nil, worker.Config{Namespaces: []string{"ok"}})
	if err != nil {
		t.Fatal(err)
	}
	w.Handle("t.only", func(ctx context.Context, s *worker.Step) (any, error) { return nil, nil })
	w.Handle("t.only", nil)
	w.Handle("t.never", nil)
	for _, name := range []string{"t.only", "t.never"} {
		if worker.HasHandler(w, name) {
			t.Errorf("handler %s is registered after Handle(%q, nil)", name, name)
		}
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	if _, err := worker.New(nil, worker.Config{}); err == nil {
		t.Error("no namespaces accepted")
	}
	if _, err := worker.New(nil, worker.Config{Namespaces: []string{"Bad-NS"}}); err == nil {
		t.Error("invalid namespace accepted")
	}
	if _, err := worker.New(nil, worker.Config{Namespaces: []string{"ok"}, LeaseDuration: time.Second}); err == nil {
		t.Error("a 1s lease accepted")
	}
}
