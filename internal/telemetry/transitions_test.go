package telemetry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/traceparent"
	"github.com/tasker/tasker/worker"
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

// TestRevivedTaskTraceAndCompletion pins what docs/events.md ("A task an
// operator revives") says: a task that fails, is retried by an operator and
// completes has one root span, emitted at its first end with outcome=error;
// its final workflow.task_completed is on a result_evaluation span under
// that root; and the completion histogram observed both ends, each from
// the task's creation.
func TestRevivedTaskTraceAndCompletion(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(`
namespace: revived
name: once
version: 1.0.0
steps:
  - name: only
    handler: revived.second_time
`)
	h.Worker(worker.Config{Namespaces: []string{"revived"}}, map[string]worker.Handler{
		"revived.second_time": func(_ context.Context, s *worker.Step) (any, error) {
			if s.Attempt == 1 {
				return nil, worker.Permanent(errors.New("declined"))
			}
			return map[string]int{"attempt": s.Attempt}, nil
		},
	})
	task := h.Submit(orchestration.TaskRequest{Namespace: "revived", Name: "once"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskError)
	if _, err := h.Engine.RetryTask(context.Background(), task.UUID, "try again"); err != nil {
		t.Fatal(err)
	}
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)

	sc, ok := traceparent.SpanContext(task.TraceParent)
	if !ok {
		t.Fatalf("task has traceparent %q", task.TraceParent)
	}
	// on lists the spans of the task carrying event ev.
	on := func(spans tracetest.SpanStubs, ev lifecycle.EventName) []tracetest.SpanStub {
		var out []tracetest.SpanStub
		for _, s := range spans {
			if attrMap(s.Attributes)["task_uuid"] != task.UUID.String() {
				continue
			}
			for _, e := range s.Events {
				if e.Name == string(ev) {
					out = append(out, s)
					break
				}
			}
		}
		return out
	}
	// The last transaction's telemetry is published just after its commit.
	enginetest.Eventually(t, 5*time.Second, "workflow.task_completed exported", func() bool {
		return len(on(h.Spans.GetSpans(), lifecycle.EventWorkflowTaskCompleted)) > 0
	})
	spans := h.Spans.GetSpans()
	var roots []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == "task_orchestration" && attrMap(s.Attributes)["task_uuid"] == task.UUID.String() {
			roots = append(roots, s)
		}
	}
	if len(roots) != 1 || roots[0].SpanContext.SpanID() != sc.SpanID() || attrMap(roots[0].Attributes)["outcome"] != "error" {
		t.Fatalf("root spans %d (want 1, the stored id, outcome=error)", len(roots))
	}
	if got := on(spans, lifecycle.EventWorkflowTaskFailed); len(got) != 1 || got[0].Name != "task_orchestration" {
		t.Errorf("workflow.task_failed is on %d spans, want the root alone", len(got))
	}
	completed := on(spans, lifecycle.EventWorkflowTaskCompleted)
	if len(completed) != 1 || completed[0].Name != "result_evaluation" || completed[0].Parent.SpanID() != sc.SpanID() {
		t.Errorf("workflow.task_completed is on %d spans (first: %v), want one result_evaluation under the root", len(completed), completed)
	}
	final := on(spans, lifecycle.EventTaskCompleted)
	if len(final) != 1 || final[0].Name != "task_state_transition" || final[0].StartTime.Before(roots[0].EndTime) {
		t.Errorf("task.completed is on %d spans, want one task_state_transition after the root's end", len(final))
	}

	// completion returns the histogram's observations and their sum for an
	// outcome.
	completion := func(outcome string) (uint64, float64) {
		mfs, err := h.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "tasker_task_completion_duration_seconds" {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["namespace"] == "revived" && labels["outcome"] == outcome {
					return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
				}
			}
		}
		return 0, 0
	}
	enginetest.Eventually(t, 5*time.Second, "completion observed at the final end", func() bool {
		n, _ := completion("complete")
		return n > 0
	})
	nErr, sumErr := completion("error")
	nDone, sumDone := completion("complete")
	if nErr != 1 || nDone != 1 || sumDone <= sumErr {
		t.Errorf("completion observations: error %d (%.3fs), complete %d (%.3fs); want one each, the later from creation too",
			nErr, sumErr, nDone, sumDone)
	}
}
