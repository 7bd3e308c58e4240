package telemetry_test

import (
	"testing"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
)

const creationTemplate = `
namespace: created
name: pair
version: 1.0.0
steps:
  - name: a
    handler: created.a
  - name: b
    handler: created.b
    depends_on: [a]
`

// TestTaskCreationIsCountedFromNone: docs/metrics.md says a task's creation
// is a tasker_task_state_transitions_total series from "none" to the state
// it is created in; a repeated submission that returns the existing task is
// no creation.
func TestTaskCreationIsCountedFromNone(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(creationTemplate)
	h.Submit(orchestration.TaskRequest{Namespace: "created", Name: "pair"})
	h.Submit(orchestration.TaskRequest{Namespace: "created", Name: "pair", IdempotencyKey: "once"})
	h.Submit(orchestration.TaskRequest{Namespace: "created", Name: "pair", IdempotencyKey: "once"})
	// Telemetry is published when CreateTask's transaction has committed,
	// before it returns.
	created := map[string]string{"from_state": "none", "to_state": "pending", "namespace": "created"}
	if got := h.Counter("tasker_task_state_transitions_total", created); got != 2 {
		t.Errorf("tasker_task_state_transitions_total%v = %v, want 2 (two tasks created)", created, got)
	}
	if got := h.Counter("tasker_task_state_transitions_total", map[string]string{"from_state": "none", "namespace": "created"}); got != 2 {
		t.Errorf("%v task transitions from none; a task is created once, in pending", got)
	}
	// Steps were counted so already.
	steps := map[string]string{"from_state": "none", "to_state": "pending", "namespace": "created"}
	if got := h.Counter("tasker_step_state_transitions_total", steps); got != 4 {
		t.Errorf("tasker_step_state_transitions_total%v = %v, want 4", steps, got)
	}
}

// TestTaskStartedIsOnTheStartTransition: workflow.task_started is on the
// pending → initializing task_state_transition span, next to
// task.initialize_requested, as docs/events.md says, and on no other span.
func TestTaskStartedIsOnTheStartTransition(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(creationTemplate)
	task := h.Submit(orchestration.TaskRequest{Namespace: "created", Name: "pair"})
	var on []string
	for _, s := range h.Spans.GetSpans() {
		attrs := attrMap(s.Attributes)
		if attrs["task_uuid"] != task.UUID.String() {
			continue
		}
		names := map[string]bool{}
		for _, ev := range s.Events {
			names[ev.Name] = true
		}
		if !names[string(lifecycle.EventWorkflowTaskStarted)] {
			continue
		}
		on = append(on, s.Name+" "+attrs["from_state"]+"→"+attrs["to_state"])
		if !names[string(lifecycle.EventTaskInitializeRequested)] {
			t.Errorf("workflow.task_started is on %s %s→%s, which lacks task.initialize_requested", s.Name, attrs["from_state"], attrs["to_state"])
		}
	}
	if want := "task_state_transition pending→initializing"; len(on) != 1 || on[0] != want {
		t.Errorf("workflow.task_started is on %v, want [%s]", on, want)
	}
}
