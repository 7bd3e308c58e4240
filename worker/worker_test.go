package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

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

// oneStepNotRetryable is oneStep for a step that must not run again once
// its handler has started, with three attempts.
const oneStepNotRetryable = `
namespace: %s
name: one
version: 1.0.0
steps:
  - name: only
    handler: t.only
    retry: {max_attempts: 3, retryable: false, backoff: {base_ms: 50, cap_ms: 100}}
`

// received waits (bounded) for a value on ch.
func received[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: not within 20s", what)
	}
	var zero T
	return zero
}

// TestHardStopFailsAStepThatIsNotRetryable: a handler that outlives the
// shutdown timeout is cancelled and its step released, as in
// TestHardStopReleasesSteps; the step is not retryable and its handler ran
// (it may have had side effects), so the orchestrator fails it instead of
// running it again, promptly, and the failing transition says why.
func TestHardStopFailsAStepThatIsNotRetryable(t *testing.T) {
	t.Parallel()
	const ns = "hardstop_once"
	h := enginetest.New(t, enginetest.Options{})
	h.Register(fmt.Sprintf(oneStepNotRetryable, ns))
	started := make(chan struct{}, 10)
	w := h.Worker(worker.Config{Namespaces: []string{ns}, ShutdownTimeout: 200 * time.Millisecond, LeaseDuration: 60 * time.Second},
		map[string]worker.Handler{
			"t.only": func(ctx context.Context, s *worker.Step) (any, error) {
				started <- struct{}{}
				<-ctx.Done()
				return nil, ctx.Err()
			},
		})
	task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "one"})
	received(t, started, "the handler started")
	w.Stop()
	// The lease was 60 s: failing well before that proves the release.
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskError)
	var trigger, why string
	if err := h.Pool.QueryRow(context.Background(), `
		SELECT metadata->>'trigger', metadata->>'why_final' FROM tasker.workflow_step_transitions
		 WHERE task_uuid = $1 AND to_state = 'error'`, task.UUID).Scan(&trigger, &why); err != nil {
		t.Fatal(err)
	}
	if trigger != string(lifecycle.StepLeaseExpiredFail) || why != "released by its worker while its handler ran, and the step is not retryable" {
		t.Errorf("the step failed on %s because %q; want lease_expired_fail saying it was released while its handler ran", trigger, why)
	}
	if len(started) != 0 {
		t.Errorf("the handler ran %d more times", len(started))
	}
}

// heldObserver holds each claimed step before its handler until the worker
// hard-stops: the worker passes StepClaimed its hard-stop context.
type heldObserver struct {
	*outcomeObserver
	claimed chan uuid.UUID
}

func (o heldObserver) StepClaimed(ctx context.Context, s *worker.Step) (context.Context, worker.StepSpan) {
	o.claimed <- s.StepUUID
	select {
	case <-ctx.Done():
	case <-time.After(30 * time.Second): // the test fails on the handler's run
	}
	return o.outcomeObserver.StepClaimed(ctx, s)
}

// TestHardStopBeforeTheHandlerReleasesTheStepUnrun: a step the hard stop
// catches between its claim and its handler is given back without starting
// the handler (the worker called it with a cancelled context), and, since
// nothing of it ran, the orchestrator retries it at once although it is not
// retryable, with the attempt the release gave back.
func TestHardStopBeforeTheHandlerReleasesTheStepUnrun(t *testing.T) {
	t.Parallel()
	const ns = "hardstop_unrun"
	h := enginetest.New(t, enginetest.Options{})
	h.Register(fmt.Sprintf(oneStepNotRetryable, ns))
	held := heldObserver{outcomeObserver: newOutcomeObserver(), claimed: make(chan uuid.UUID, 10)}
	logs := &logLines{}
	var calls atomic.Int32
	w := h.Worker(worker.Config{Namespaces: []string{ns}, ShutdownTimeout: 200 * time.Millisecond, LeaseDuration: 60 * time.Second,
		Observer: held, Logger: logs.logger()},
		map[string]worker.Handler{
			"t.only": func(ctx context.Context, s *worker.Step) (any, error) { calls.Add(1); return "stopped worker", nil },
		})
	task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "one"})
	step := received(t, held.claimed, "the step claimed")
	w.Stop()
	if n := calls.Load(); n != 0 {
		t.Fatalf("the handler was started %d times after the hard stop", n)
	}
	if lines := logs.atLeast(t, 1, "step released unrun at shutdown; it will be retried"); len(lines) != 1 || lines[0]["step_uuid"] != step.String() {
		t.Errorf("release log lines %v, want one for step %s", lines, step)
	}
	held.mu.Lock()
	outcomes := held.outcomes[step]
	held.mu.Unlock()
	if len(outcomes) != 1 || outcomes[0] != "released" {
		t.Errorf("outcomes reported %v, want [released]", outcomes)
	}

	h.Worker(worker.Config{Namespaces: []string{ns}}, map[string]worker.Handler{
		"t.only": func(ctx context.Context, s *worker.Step) (any, error) { return "next worker", nil },
	})
	// The lease was 60 s: completing well before that proves the release.
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskComplete)
	steps, err := h.Store.TaskSteps(context.Background(), task.UUID)
	if err != nil || len(steps) != 1 {
		t.Fatalf("steps: %d, %v", len(steps), err)
	}
	if s := steps[0]; s.Attempts != 2 || s.MaxAttempts != 4 || string(s.Results) != `"next worker"` {
		t.Errorf("step took %d of %d attempts with result %s; want 2 of 4 (one given back) and the next worker's result",
			s.Attempts, s.MaxAttempts, s.Results)
	}
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
