package telemetry_test

import (
	"testing"

	"github.com/tasker/tasker/internal/enginetest"
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
