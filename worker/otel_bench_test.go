package worker_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/tasker/tasker/internal/cputime"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/worker"
)

// BenchmarkObserverStep: what the OTel observer costs the worker per step
// (claim, handler, submission, end), with its metrics recorded, when the
// step's trace is not recorded (tracing off, or a trace the sampler left
// out) and when it is.
func BenchmarkObserverStep(b *testing.B) {
	step := &worker.Step{TaskUUID: uuid.Must(uuid.NewV7()), StepUUID: uuid.Must(uuid.NewV7()), CorrelationID: uuid.Must(uuid.NewV7()),
		Namespace: "bench", Name: "only", Handler: "bench.noop", Attempt: 1,
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}
	sampled := *step
	sampled.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	// flush, when set, waits for what is left to export (the exporter
	// encodes and sends in goroutines of its own), so that cpu-ns/op, the
	// process's CPU per step, counts it.
	run := func(b *testing.B, obs *worker.OTelObserver, s *worker.Step, flush func() error) {
		b.ReportAllocs()
		cpu0 := cputime.Self()
		for range b.N {
			ctx, span := obs.StepClaimed(context.Background(), s)
			span.BeforeHandle(ctx)
			span.BeforeSubmit(ctx)
			_ = span.TraceParent()
			span.End("success", time.Millisecond, nil)
		}
		if flush != nil {
			if err := flush(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(cputime.Self()-cpu0)/float64(b.N), "cpu-ns/op")
	}
	meters := sdkmetric.NewMeterProvider()
	b.Cleanup(func() { _ = meters.Shutdown(context.Background()) })
	b.Run("tracing=off", func(b *testing.B) {
		obs, err := worker.NewOTelObserver(tracenoop.NewTracerProvider(), meters)
		if err != nil {
			b.Fatal(err)
		}
		run(b, obs, step, nil)
	})
	b.Run("trace=unsampled", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider()
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		obs, err := worker.NewOTelObserver(tp, meters)
		if err != nil {
			b.Fatal(err)
		}
		run(b, obs, step, nil)
	})
	b.Run("trace=sampled,exported", func(b *testing.B) {
		// As cmd/example-worker traces: the telemetry provider exporting
		// over OTLP (here to a local receiver that discards it).
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
		}))
		defer srv.Close()
		tel, err := telemetry.NewProvider(context.Background(), telemetry.Options{TracingEnabled: true, OTLPEndpoint: srv.URL, OTLPProtocol: "http/protobuf"})
		if err != nil {
			b.Fatal(err)
		}
		obs, err := worker.NewOTelObserver(tel.TracerProvider(), metricnoop.NewMeterProvider())
		if err != nil {
			b.Fatal(err)
		}
		run(b, obs, &sampled, func() error { return tel.Shutdown(context.Background()) })
	})
	b.Run("trace=sampled", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider() // no exporter: spans are recorded, then dropped
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		obs, err := worker.NewOTelObserver(tp, metricnoop.NewMeterProvider())
		if err != nil {
			b.Fatal(err)
		}
		run(b, obs, &sampled, nil)
	})
}
