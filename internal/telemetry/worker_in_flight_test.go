package telemetry_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/worker"
)

const blockingTemplate = `
namespace: inflight
name: held
version: 1.0.0
steps:
  - name: hold
    handler: inflight.hold
`

// TestWorkerCountsReachEveryCollection: the Go SDK's observer sums its
// counters between collections and adds them when the meter collects; a
// gather made while handlers run, and one made right after the tasks end,
// must each see every event, transition and attempt made before it, and
// tasker_worker_steps_in_flight the steps claimed and not yet finished.
func TestWorkerCountsReachEveryCollection(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(blockingTemplate)
	obs, err := worker.NewOTelObserver(h.Provider.TracerProvider(), h.Provider.MeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	const n = 3
	entered := make(chan struct{}, n)
	release := make(chan struct{})
	h.Worker(worker.Config{Namespaces: []string{"inflight"}, Concurrency: 8, Observer: obs}, map[string]worker.Handler{
		"inflight.hold": func(ctx context.Context, s *worker.Step) (any, error) {
			entered <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return map[string]bool{"ok": true}, nil
		},
	})
	var tasks []uuid.UUID
	for range n {
		tasks = append(tasks, h.Submit(orchestration.TaskRequest{Namespace: "inflight", Name: "held"}).UUID)
	}
	for range n {
		select {
		case <-entered:
		case <-time.After(30 * time.Second):
			t.Fatal("the handlers did not all start")
		}
	}
	ns := map[string]string{"namespace": "inflight"}
	event := func(ev lifecycle.EventName) map[string]string {
		return map[string]string{"namespace": "inflight", "event": string(ev)}
	}
	// Every handler is running: each has been claimed and has entered its
	// handler, and nothing has been submitted.
	if got := h.Gauge("tasker_worker_steps_in_flight", ns); got != n {
		t.Errorf("tasker_worker_steps_in_flight = %v while %d handlers run, want %d", got, n, n)
	}
	for _, ev := range []lifecycle.EventName{lifecycle.EventStepExecutionRequested, lifecycle.EventStepBeforeHandle, lifecycle.EventStepHandle} {
		if got := h.Counter("tasker_events_total", event(ev)); got != n {
			t.Errorf("tasker_events_total{event=%q} = %v while the handlers run, want %d", ev, got, n)
		}
	}
	if got := h.Counter("tasker_events_total", event(lifecycle.EventStepResultSubmitted)); got != 0 {
		t.Errorf("tasker_events_total{event=%q} = %v before any submission, want 0", lifecycle.EventStepResultSubmitted, got)
	}
	if got := h.Counter("tasker_step_state_transitions_total", map[string]string{"namespace": "inflight",
		"from_state": "enqueued", "to_state": "in_progress"}); got != n {
		t.Errorf("claims counted = %v, want %d", got, n)
	}

	close(release)
	for _, id := range tasks {
		h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
	}
	// The steps end (their spans, their counts) once their submission has
	// returned, which may be just after the orchestrator finished the task.
	enginetest.Eventually(t, 10*time.Second, "every step ended in the worker", func() bool {
		return h.Counter("tasker_step_attempts_total", map[string]string{"namespace": "inflight", "outcome": "success"}) == n
	})
	if got := h.Gauge("tasker_worker_steps_in_flight", ns); got != 0 {
		t.Errorf("tasker_worker_steps_in_flight = %v after every step ended, want 0", got)
	}
	for _, ev := range []lifecycle.EventName{lifecycle.EventStepExecutionRequested, lifecycle.EventStepBeforeHandle,
		lifecycle.EventStepHandle, lifecycle.EventStepResultSubmitted} {
		if got := h.Counter("tasker_events_total", event(ev)); got != n {
			t.Errorf("tasker_events_total{event=%q} = %v, want %d (one per step, counted once)", ev, got, n)
		}
	}
	if got := h.Counter("tasker_step_state_transitions_total", map[string]string{"namespace": "inflight",
		"from_state": "in_progress", "to_state": "enqueued_for_orchestration"}); got != n {
		t.Errorf("submissions counted = %v, want %d", got, n)
	}
}
