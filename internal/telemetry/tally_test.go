package telemetry_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/telemetry"
)

// A result batch's journal adds its counter increments summed per
// instrument and attribute set, a small journal as they come: either way
// every transition and event is counted once, in its own series.
func TestPublishCountsLargeAndSmallJournalsAlike(t *testing.T) {
	ctx := context.Background()
	p, err := telemetry.NewProvider(ctx, telemetry.Options{MetricsEnabled: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(ctx) })
	pub := p.Publisher()
	round := func(j *telemetry.Journal, ns string) {
		task := telemetry.TaskRef{UUID: uuid.New(), CorrelationID: uuid.New(), Namespace: ns, Name: "t", CreatedAt: time.Now()}
		done := telemetry.StepRef{UUID: uuid.New(), Name: "a", Handler: "h.a", Attempt: 1}
		next := telemetry.StepRef{UUID: uuid.New(), Name: "b", Handler: "h.b", Attempt: 1}
		linear4Round(j, task, done, next, j.Now())
	}
	// One large journal (40 rounds over two namespaces, 240 records) and
	// three small ones (one round each).
	large := telemetry.NewJournal(nil)
	for i := range 40 {
		round(large, []string{"ns_a", "ns_b"}[i%2])
	}
	pub.Publish(ctx, large)
	for range 3 {
		small := telemetry.NewJournal(nil)
		round(small, "ns_a")
		pub.Publish(ctx, small)
	}

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"tasker_events_total", map[string]string{"event": string(lifecycle.EventWorkflowStepCompleted), "namespace": "ns_a"}, 23},
		{"tasker_events_total", map[string]string{"event": string(lifecycle.EventWorkflowStepCompleted), "namespace": "ns_b"}, 20},
		{"tasker_events_total", map[string]string{"event": string(lifecycle.EventTaskBeforeTransition), "namespace": "ns_a"}, 3 * 23},
		{"tasker_step_state_transitions_total", map[string]string{"from_state": "pending", "to_state": "enqueued", "namespace": "ns_b"}, 20},
		{"tasker_step_state_transitions_total", map[string]string{"to_state": "complete", "namespace": "ns_a"}, 23},
		{"tasker_task_state_transitions_total", map[string]string{"from_state": "enqueuing_steps", "to_state": "steps_in_process", "namespace": "ns_a"}, 23},
		{"tasker_task_state_transitions_total", map[string]string{"namespace": "ns_b"}, 3 * 20},
	} {
		if got := enginetest.Counter(t, p.Registry(), c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
