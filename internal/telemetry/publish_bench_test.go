package telemetry_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/telemetry"
)

// BenchmarkPublishMetrics publishes, with tracing off and metrics on, the
// journal of one step's round in a linear4 task as the result loop writes
// it: the step's completion, the task's evaluation and the next step's
// dispatch (five transitions, their events).
func BenchmarkPublishMetrics(b *testing.B) {
	benchmarkPublishRound(b, telemetry.Options{MetricsEnabled: true})
}

// discard is a span exporter that keeps nothing.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkPublishTraced publishes the same round with every trace
// recorded (the spans and span events DESIGN §4 asks for), exported to
// nowhere: what building them costs.
func BenchmarkPublishTraced(b *testing.B) {
	benchmarkPublishRound(b, telemetry.Options{MetricsEnabled: true, SpanExporter: discard{}})
}

// benchmarkPublishRound publishes one linear4 round per iteration through a
// provider built with opts. The task is sampled, so that with a span
// exporter every span is recorded.
func benchmarkPublishRound(b *testing.B, opts telemetry.Options) {
	ctx := context.Background()
	p, err := telemetry.NewProvider(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Shutdown(ctx) })
	pub := p.Publisher()
	task := telemetry.TaskRef{UUID: uuid.New(), CorrelationID: uuid.New(), Namespace: "bench", Name: "linear4", CreatedAt: time.Now(),
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	done := telemetry.StepRef{UUID: uuid.New(), Name: "a", Handler: "bench.noop", Attempt: 1}
	next := telemetry.StepRef{UUID: uuid.New(), Name: "b", Handler: "bench.noop", Attempt: 1}
	j := telemetry.NewJournal(nil)
	b.ReportAllocs()
	for b.Loop() {
		j.Reset()
		at := j.Now()
		j.StepTransition(task, done, lifecycle.StepEnqueuedForOrchestration, lifecycle.StepComplete, at)
		j.TaskTransition(task, lifecycle.TaskStepsInProcess, lifecycle.TaskEvaluatingResults, lifecycle.TaskStepResultReceived, at)
		j.Event(lifecycle.EventWorkflowStepCompleted, task, &done)
		j.TaskTransition(task, lifecycle.TaskEvaluatingResults, lifecycle.TaskEnqueuingSteps, lifecycle.TaskReadyStepsFound, at)
		j.StepTransition(task, next, lifecycle.StepPending, lifecycle.StepEnqueued, at)
		j.TaskTransition(task, lifecycle.TaskEnqueuingSteps, lifecycle.TaskStepsInProcess, lifecycle.TaskStepsEnqueued, at)
		pub.Publish(ctx, j)
	}
}
