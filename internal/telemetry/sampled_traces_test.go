package telemetry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/traceparent"
	"github.com/tasker/tasker/worker"
)

const sampledTemplate = `
namespace: sampling
name: pair
version: 1.0.0
steps:
  - name: a
    handler: sampling.ok
  - name: b
    handler: sampling.ok
    depends_on: [a]
`

// runSampled runs n two-step tasks through a real orchestrator and a worker
// tracing with the harness's provider, and returns the tasks with their
// trace ids.
func runSampled(t *testing.T, ratio float64, n int) (*enginetest.Harness, *worker.Worker, map[uuid.UUID]string) {
	t.Helper()
	h := enginetest.New(t, enginetest.Options{TraceSampleRatio: &ratio})
	h.Register(sampledTemplate)
	obs, err := worker.NewOTelObserver(h.Provider.TracerProvider(), h.Provider.MeterProvider())
	if err != nil {
		t.Fatal(err)
	}
	w := h.Worker(worker.Config{Namespaces: []string{"sampling"}, Observer: obs, Concurrency: 8},
		map[string]worker.Handler{"sampling.ok": func(context.Context, *worker.Step) (any, error) { return map[string]bool{"ok": true}, nil }})
	tasks := map[uuid.UUID]string{}
	for i := range n {
		task := h.Submit(orchestration.TaskRequest{Namespace: "sampling", Name: "pair", Context: json.RawMessage(fmt.Sprintf(`{"i": %d}`, i))})
		sc, ok := traceparent.SpanContext(task.TraceParent)
		if !ok {
			t.Fatalf("task %s has traceparent %q", task.UUID, task.TraceParent)
		}
		tasks[task.UUID] = sc.TraceID().String()
	}
	for id := range tasks {
		h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
	}
	return h, w, tasks
}

// TestSampledTasksAreTracedWhole: with a sample ratio, a task's trace is
// recorded whole (root, orchestrator and worker spans) or not at all, and
// the metrics count every task.
func TestSampledTasksAreTracedWhole(t *testing.T) {
	t.Parallel()
	const n = 40
	h, _, tasks := runSampled(t, 0.5, n)
	want := map[string]bool{"task_orchestration": true, "task_state_transition": true, "step_state_transition": true,
		"step_execution": true, "handler_execution": true, "result_submission": true}
	traced := map[string]map[string]bool{} // trace id -> span names
	// The worker's spans end after its submission commits; wait for the
	// root spans of the traced tasks and their workers' spans.
	enginetest.Eventually(t, 10*time.Second, "traced tasks' spans exported", func() bool {
		traced = map[string]map[string]bool{}
		for _, s := range h.Spans.GetSpans() {
			id := s.SpanContext.TraceID().String()
			if traced[id] == nil {
				traced[id] = map[string]bool{}
			}
			traced[id][s.Name] = true
		}
		// Every wanted span, not as many span names: a trace has more
		// kinds than those (step_discovery, result_evaluation …) well
		// before its root span, emitted after the task's last commit.
		for _, names := range traced {
			for name := range want {
				if !names[name] {
					return false
				}
			}
		}
		return true
	})
	byTrace := map[string]uuid.UUID{}
	for id, tr := range tasks {
		byTrace[tr] = id
	}
	for tr, names := range traced {
		if _, ok := byTrace[tr]; !ok {
			t.Errorf("spans of trace %s, which no task has", tr)
		}
		for name := range want {
			if !names[name] {
				t.Errorf("trace %s of a sampled task lacks %s spans (has %v)", tr, name, names)
			}
		}
	}
	if len(traced) == 0 || len(traced) == n {
		t.Errorf("%d of %d tasks traced at ratio 0.5", len(traced), n)
	}
	t.Logf("%d of %d tasks traced", len(traced), n)
	if got := completions(t, h); got != n {
		t.Errorf("tasker_task_completion_duration_seconds counts %d tasks, want all %d", got, n)
	}
}

// TestRatioZeroTracesNothing: at ratio 0 no span is exported, by the
// orchestrator or the worker, and the tasks still run and are counted.
func TestRatioZeroTracesNothing(t *testing.T) {
	t.Parallel()
	h, w, tasks := runSampled(t, 0, 5)
	// A worker's spans end just after its submission; Stop returns when
	// every step it ran has finished.
	w.Stop()
	if spans := h.Spans.GetSpans(); len(spans) != 0 {
		t.Errorf("%d spans exported at ratio 0 (first: %s)", len(spans), spans[0].Name)
	}
	if got := completions(t, h); got != len(tasks) {
		t.Errorf("completions counted %d, want %d", got, len(tasks))
	}
	// The worker's own measurements count every step it ran, with no span
	// recorded: its submissions (transition and event) and handler runs.
	steps := 2 * len(tasks)
	for _, c := range []struct {
		name   string
		labels map[string]string
	}{
		{"tasker_step_state_transitions_total", map[string]string{"from_state": "in_progress", "to_state": "enqueued_for_orchestration"}},
		{"tasker_step_state_transitions_total", map[string]string{"from_state": "enqueued", "to_state": "in_progress"}},
		{"tasker_events_total", map[string]string{"event": string(lifecycle.EventStepResultSubmitted)}},
		{"tasker_events_total", map[string]string{"event": string(lifecycle.EventStepHandle)}},
		{"tasker_step_attempts_total", map[string]string{"outcome": "success"}},
	} {
		if got := counted(t, h, c.name, c.labels); got != steps {
			t.Errorf("%s %v = %d, want %d (one per step run)", c.name, c.labels, got, steps)
		}
	}
}

// counted sums the series of counter name whose labels include labels.
func counted(t *testing.T, h *enginetest.Harness, name string, labels map[string]string) int {
	t.Helper()
	mfs, err := h.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			n += int(m.GetCounter().GetValue())
		}
	}
	return n
}

func completions(t *testing.T, h *enginetest.Harness) int {
	t.Helper()
	mfs, err := h.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tasker_task_completion_duration_seconds" {
			n := 0
			for _, m := range mf.GetMetric() {
				n += int(m.GetHistogram().GetSampleCount())
			}
			return n
		}
	}
	return 0
}
