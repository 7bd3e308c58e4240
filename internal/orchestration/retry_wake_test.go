package orchestration_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/worker"
)

// Two templates whose step `flaky` fails once and is retried while a sibling
// is in flight. In `pair` the sibling `slow` runs until flaky completes, so
// the task waits in waiting_for_dependencies when flaky's backoff elapses.
// In `gated` the sibling `gate` finishes during flaky's backoff and its
// child `slow` is dispatched, so the task rests in steps_in_process then.
// With jitter pinned, flaky's backoffs are 300 ms (pair) and 2 s (gated,
// long enough for gate's result to be processed first).
const (
	pairWakeTemplate = `
namespace: wake
name: pair
version: 1.0.0
steps:
  - name: flaky
    handler: wake.flaky
    retry: {max_attempts: 2, backoff: {base_ms: 600, cap_ms: 600}}
  - name: slow
    handler: wake.slow
`
	gatedWakeTemplate = `
namespace: wake
name: gated
version: 1.0.0
steps:
  - name: flaky
    handler: wake.flaky
    retry: {max_attempts: 2, backoff: {base_ms: 4000, cap_ms: 4000}}
  - name: gate
    handler: wake.gate
  - name: slow
    handler: wake.slow
    depends_on: [gate]
`
)

// TestRetryBackoffWakeUpIsNotAResultOrADependency: the timer wakes a task
// whose step's retry backoff elapsed with the backoff_expired trigger from
// whatever state it rests in, and the wake-up publishes neither
// task.step_results_received nor task.dependencies_satisfied (the events
// counted match the transitions' triggers; its transition span carries the
// trigger, and only the timer's command and task.before_transition). The
// task never enters waiting_for_retry (a sibling is in flight, which DESIGN
// §3 puts first); the retry shows in the step metrics and
// step.retry_requested.
func TestRetryBackoffWakeUpIsNotAResultOrADependency(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{EngineOptions: []orchestration.EngineOption{orchestration.WithJitter(func() float64 { return 0 })}})
	h.Register(pairWakeTemplate)
	h.Register(gatedWakeTemplate)
	stepState := func(ctx context.Context, task uuid.UUID, name string) string {
		var state string
		_ = h.Pool.QueryRow(ctx, `SELECT state FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = $2`, task, name).Scan(&state)
		return state
	}
	// waitFor blocks the handler until the task's step `name` is in state.
	waitFor := func(ctx context.Context, s *worker.Step, name, state string) error {
		for stepState(ctx, s.TaskUUID, name) != state {
			select {
			case <-ctx.Done():
				return worker.Permanent(ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
		return nil
	}
	h.Worker(worker.Config{Namespaces: []string{"wake"}, Concurrency: 4}, map[string]worker.Handler{
		"wake.flaky": func(ctx context.Context, s *worker.Step) (any, error) {
			if s.Attempt == 1 {
				return nil, worker.Retryable(errors.New("first attempt fails"))
			}
			return map[string]int{"attempt": s.Attempt}, nil
		},
		"wake.gate": func(ctx context.Context, s *worker.Step) (any, error) {
			if err := waitFor(ctx, s, "flaky", "waiting_for_retry"); err != nil {
				return nil, err
			}
			return map[string]bool{"ok": true}, nil
		},
		"wake.slow": func(ctx context.Context, s *worker.Step) (any, error) {
			if err := waitFor(ctx, s, "flaky", "complete"); err != nil {
				return nil, err
			}
			return map[string]bool{"ok": true}, nil
		},
	})
	wokeFrom := map[uuid.UUID]lifecycle.TaskState{
		h.Submit(orchestration.TaskRequest{Namespace: "wake", Name: "pair"}).UUID:  lifecycle.TaskWaitingForDependencies,
		h.Submit(orchestration.TaskRequest{Namespace: "wake", Name: "gated"}).UUID: lifecycle.TaskStepsInProcess,
	}
	ctx := context.Background()
	for id, from := range wokeFrom {
		h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
		rows, err := h.Pool.Query(ctx, `
			SELECT coalesce(from_state, ''), to_state, metadata->>'trigger'
			  FROM tasker.task_transitions
			 WHERE task_uuid = $1 AND metadata->>'reason' = 'retry backoff elapsed'`, id)
		if err != nil {
			t.Fatal(err)
		}
		var wakes []string
		for rows.Next() {
			var f, to, trig string
			if err := rows.Scan(&f, &to, &trig); err != nil {
				t.Fatal(err)
			}
			wakes = append(wakes, f+" -"+trig+"-> "+to)
		}
		rows.Close()
		want := string(from) + " -backoff_expired-> evaluating_results"
		if len(wakes) != 1 || wakes[0] != want {
			t.Errorf("task %s: backoff wake-ups %v, want [%s]", id, wakes, want)
		}
		// The trace shows the wake-up's trigger and no result or
		// dependency event on its transition span.
		var spans []string
		for _, sp := range h.Spans.GetSpans() {
			attrs := map[string]string{}
			for _, kv := range sp.Attributes {
				attrs[string(kv.Key)] = kv.Value.Emit()
			}
			if sp.Name != "task_state_transition" || attrs["task_uuid"] != id.String() || attrs["trigger"] != string(lifecycle.TaskBackoffExpired) {
				continue
			}
			var evs []string
			for _, ev := range sp.Events {
				evs = append(evs, ev.Name)
			}
			spans = append(spans, fmt.Sprintf("%s→%s %v", attrs["from_state"], attrs["to_state"], evs))
		}
		if want := fmt.Sprintf("%s→evaluating_results [workflow.orchestration_requested task.before_transition]", from); len(spans) != 1 || spans[0] != want {
			t.Errorf("task %s: backoff_expired transition spans %v, want [%s]", id, spans, want)
		}
		var retryStates int
		if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM tasker.task_transitions WHERE task_uuid = $1 AND to_state = 'waiting_for_retry'`,
			id).Scan(&retryStates); err != nil {
			t.Fatal(err)
		}
		if retryStates != 0 {
			t.Errorf("task %s entered waiting_for_retry with a sibling in flight", id)
		}
	}

	triggered := func(trig lifecycle.TaskTrigger) float64 {
		var n int
		if err := h.Pool.QueryRow(ctx, `
			SELECT count(*) FROM tasker.task_transitions tr JOIN tasker.tasks t USING (task_uuid)
			 WHERE t.namespace = 'wake' AND tr.metadata->>'trigger' = $1`, string(trig)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return float64(n)
	}
	events := func(ev lifecycle.EventName) float64 {
		return h.Counter("tasker_events_total", map[string]string{"event": string(ev), "namespace": "wake"})
	}
	// The last transaction's telemetry is published just after its commit.
	enginetest.Eventually(t, 5*time.Second, "task.completed counted for both tasks", func() bool {
		return events(lifecycle.EventTaskCompleted) == 2
	})
	for _, c := range []struct {
		event lifecycle.EventName
		trig  lifecycle.TaskTrigger
	}{
		{lifecycle.EventTaskStepResultsReceived, lifecycle.TaskStepResultReceived},
		{lifecycle.EventTaskDependenciesSatisfied, lifecycle.TaskDependenciesSatisfied},
	} {
		if got, want := events(c.event), triggered(c.trig); got != want {
			t.Errorf("%s published %v times; %v transitions were triggered by %s", c.event, got, want, c.trig)
		}
	}
	if got := events(lifecycle.EventTaskRetryBackoffStarted); got != 0 {
		t.Errorf("task.retry_backoff_started published %v times; no task waited for a retry alone", got)
	}
	if got := events(lifecycle.EventStepRetryRequested); got != 2 {
		t.Errorf("step.retry_requested published %v times, want 2", got)
	}
	if got := h.Counter("tasker_step_state_transitions_total", map[string]string{"to_state": "waiting_for_retry", "namespace": "wake"}); got != 2 {
		t.Errorf("tasker_step_state_transitions_total{to_state=waiting_for_retry} = %v, want 2", got)
	}
}
