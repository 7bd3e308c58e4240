package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tasker/tasker/internal/cputime"
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

// BenchmarkPublishMetricsBatch publishes, with metrics only, the journal
// of a result batch: the rounds of 50 linear4 tasks, each as in
// BenchmarkPublishMetrics; reported per round.
func BenchmarkPublishMetricsBatch(b *testing.B) {
	benchmarkPublishRounds(b, telemetry.Options{MetricsEnabled: true}, 50)
}

// linear4Round journals one round of the result loop for a linear4 task:
// step done completes, the task is evaluated, step next is dispatched
// (five transitions and their events).
func linear4Round(j *telemetry.Journal, task telemetry.TaskRef, done, next telemetry.StepRef, at time.Time) {
	j.StepTransition(task, done, lifecycle.StepEnqueuedForOrchestration, lifecycle.StepComplete, at)
	j.TaskTransition(task, lifecycle.TaskStepsInProcess, lifecycle.TaskEvaluatingResults, lifecycle.TaskStepResultReceived, at)
	j.Event(lifecycle.EventWorkflowStepCompleted, task, &done)
	j.TaskTransition(task, lifecycle.TaskEvaluatingResults, lifecycle.TaskEnqueuingSteps, lifecycle.TaskReadyStepsFound, at)
	j.StepTransition(task, next, lifecycle.StepPending, lifecycle.StepEnqueued, at)
	j.TaskTransition(task, lifecycle.TaskEnqueuingSteps, lifecycle.TaskStepsInProcess, lifecycle.TaskStepsEnqueued, at)
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

// BenchmarkPublishTracedExported publishes the same round with every
// trace recorded and exported over OTLP/HTTP to a local receiver that
// discards it, as a deployment exporting to a collector does: building,
// encoding and sending the spans (the sending in the exporter's goroutine).
func BenchmarkPublishTracedExported(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()
	benchmarkPublishRounds(b, telemetry.Options{MetricsEnabled: true, TracingEnabled: true, OTLPEndpoint: srv.URL, OTLPProtocol: "http/protobuf"}, 50)
}

// benchmarkPublishRound publishes one linear4 round per iteration through a
// provider built with opts. The task is sampled, so that with a span
// exporter every span is recorded.
func benchmarkPublishRound(b *testing.B, opts telemetry.Options) {
	benchmarkPublishRounds(b, opts, 1)
}

// benchmarkPublishRounds publishes the rounds of tasks linear4 tasks in one
// journal per iteration; ns/op is per round.
func benchmarkPublishRounds(b *testing.B, opts telemetry.Options, tasks int) {
	ctx := context.Background()
	p, err := telemetry.NewProvider(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Shutdown(ctx) })
	pub := p.Publisher()
	type round struct {
		task       telemetry.TaskRef
		done, next telemetry.StepRef
	}
	rounds := make([]round, tasks)
	for i := range rounds {
		rounds[i] = round{
			task: telemetry.TaskRef{UUID: uuid.New(), CorrelationID: uuid.New(), Namespace: "bench", Name: "linear4", CreatedAt: time.Now(),
				TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
			done: telemetry.StepRef{UUID: uuid.New(), Name: "a", Handler: "bench.noop", Attempt: 1},
			next: telemetry.StepRef{UUID: uuid.New(), Name: "b", Handler: "bench.noop", Attempt: 1},
		}
	}
	j := telemetry.NewJournal(nil)
	b.ReportAllocs()
	cpu0 := cputime.Self()
	for b.Loop() {
		j.Reset()
		at := j.Now()
		for i := range rounds {
			linear4Round(j, rounds[i].task, rounds[i].done, rounds[i].next, at)
		}
		pub.Publish(ctx, j)
	}
	// The process's CPU, with what is left to export flushed: exporters
	// encode and send in goroutines of their own.
	if err := p.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tasks), "ns/round")
	b.ReportMetric(float64(cputime.Self()-cpu0)/float64(b.N*tasks), "cpu-ns/round")
}
