package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/worker"
)

// publishSample journals what the result loop and a worker run publish for
// three linear4 tasks (rounds, a phase, a failed run reported by the
// orchestrator, the end of one task) on a fixed clock, and publishes it.
func publishSample(t *testing.T, p *telemetry.Provider) {
	t.Helper()
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { at = at.Add(time.Millisecond); return at }
	j := telemetry.NewJournal(clock)
	for i := range 3 {
		task := telemetry.TaskRef{UUID: uuid.UUID{15: byte(i)}, CorrelationID: uuid.UUID{14: byte(i)}, Namespace: "bench", Name: "linear4",
			CreatedAt: at, TraceParent: fmt.Sprintf("00-0af7651916cd43dd8448eb211c8031%02x-b7ad6b7169203331-01", i)}
		done := telemetry.StepRef{UUID: uuid.UUID{13: byte(i)}, Name: "a", Handler: "bench.noop", Attempt: 1}
		next := telemetry.StepRef{UUID: uuid.UUID{12: byte(i)}, Name: "b", Handler: "bench.noop", Attempt: 1}
		start := j.Now()
		linear4Round(j, task, done, next, start)
		j.Phase(telemetry.PhaseResultEvaluation, task, start)
		j.WorkerRun(task, next, j.Now(), j.Now(), lifecycle.StepEnqueuedForOrchestration, "failure", "worker-1", "no such host")
		if i == 2 {
			j.TaskFinished(task, lifecycle.TaskComplete, true)
		}
	}
	j.Committed(j.Now())
	p.Publisher().Publish(context.Background(), j)
}

// spanKey describes a span by what it says, not by its random ids: its
// name, its parent's name, attributes, events and status.
func spanKey(name, parent string, attrs []string, events []string, status string) string {
	sort.Strings(attrs)
	return fmt.Sprintf("%s <- %s %v %v %s", name, parent, attrs, events, status)
}

// sdkKeys describes the spans the SDK recorded (spanKey), with their start
// and end when withTimes.
func sdkKeys(stubs tracetest.SpanStubs, withTimes bool) []string {
	names := map[string]string{}
	for _, s := range stubs {
		names[s.SpanContext.SpanID().String()] = s.Name
	}
	var keys []string
	for _, s := range stubs {
		var attrs, events []string
		for _, kv := range s.Attributes {
			attrs = append(attrs, string(kv.Key)+"="+kv.Value.Emit())
		}
		for _, e := range s.Events {
			ea := make([]string, 0, len(e.Attributes))
			for _, kv := range e.Attributes {
				ea = append(ea, string(kv.Key)+"="+kv.Value.Emit())
			}
			at := ""
			if withTimes {
				at = fmt.Sprintf("@%d", e.Time.UnixNano())
			}
			events = append(events, fmt.Sprintf("%s%s%v", e.Name, at, ea))
		}
		k := spanKey(s.Name, names[s.Parent.SpanID().String()], attrs, events, s.Status.Code.String()+":"+s.Status.Description)
		if withTimes {
			k += fmt.Sprintf(" %d-%d", s.StartTime.UnixNano(), s.EndTime.UnixNano())
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// otlpKeys describes spans received over OTLP as sdkKeys describes the
// SDK's.
func otlpKeys(spans []*tracepb.Span, withTimes bool) []string {
	names := map[string]string{}
	for _, s := range spans {
		names[string(s.SpanId)] = s.Name
	}
	value := func(v *commonpb.AnyValue) string {
		switch x := v.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			return attribute.StringValue(x.StringValue).Emit()
		case *commonpb.AnyValue_IntValue:
			return attribute.Int64Value(x.IntValue).Emit()
		case *commonpb.AnyValue_BoolValue:
			return attribute.BoolValue(x.BoolValue).Emit()
		case *commonpb.AnyValue_DoubleValue:
			return attribute.Float64Value(x.DoubleValue).Emit()
		}
		return fmt.Sprintf("%v", v)
	}
	status := map[tracepb.Status_StatusCode]string{tracepb.Status_STATUS_CODE_UNSET: "Unset", tracepb.Status_STATUS_CODE_ERROR: "Error", tracepb.Status_STATUS_CODE_OK: "Ok"}
	var keys []string
	for _, s := range spans {
		var attrs, events []string
		for _, kv := range s.Attributes {
			attrs = append(attrs, kv.Key+"="+value(kv.Value))
		}
		for _, e := range s.Events {
			ea := make([]string, 0, len(e.Attributes))
			for _, kv := range e.Attributes {
				ea = append(ea, kv.Key+"="+value(kv.Value))
			}
			at := ""
			if withTimes {
				at = fmt.Sprintf("@%d", e.TimeUnixNano)
			}
			events = append(events, fmt.Sprintf("%s%s%v", e.Name, at, ea))
		}
		k := spanKey(s.Name, names[string(s.ParentSpanId)], attrs, events, status[s.Status.GetCode()]+":"+s.Status.GetMessage())
		if withTimes {
			k += fmt.Sprintf(" %d-%d", s.StartTimeUnixNano, s.EndTimeUnixNano)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// otlpReceiver is an OTLP/HTTP receiver keeping the spans it gets (of
// scope, when not empty); spans returns them.
func otlpReceiver(t *testing.T, scope string) (url string, spans func() []*tracepb.Span) {
	t.Helper()
	var mu sync.Mutex
	var got []*tracepb.Span
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			t.Errorf("request does not decode: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				if scope != "" && ss.GetScope().GetName() != scope {
					t.Errorf("scope %q, want %q", ss.GetScope().GetName(), scope)
				}
				got = append(got, ss.Spans...)
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() []*tracepb.Span {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// otlpProvider is a provider exporting over OTLP/HTTP to an otlpReceiver;
// spans returns what it got, after the provider's Shutdown.
func otlpProvider(t *testing.T, scope string) (p *telemetry.Provider, spans func() []*tracepb.Span) {
	t.Helper()
	url, spans := otlpReceiver(t, scope)
	p, err := telemetry.NewProvider(context.Background(), telemetry.Options{TracingEnabled: true, OTLPEndpoint: url, OTLPProtocol: "http/protobuf"})
	if err != nil {
		t.Fatal(err)
	}
	if !telemetry.DirectTracing(p) {
		t.Fatal("spans go through the SDK with the otlpwire exporter")
	}
	return p, spans
}

// The orchestrator's spans reach an OTLP collector as the SDK records them.
func TestOTLPExportSendsThePublishersSpans(t *testing.T) {
	mem := tracetest.NewInMemoryExporter()
	sdkP, err := telemetry.NewProvider(context.Background(), telemetry.Options{SpanExporter: mem, SyncExport: true})
	if err != nil {
		t.Fatal(err)
	}
	publishSample(t, sdkP)
	want := sdkKeys(mem.GetSpans(), true) // before Shutdown, which empties mem
	if err := sdkP.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	p, spans := otlpProvider(t, "github.com/tasker/tasker")
	publishSample(t, p)
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	have := otlpKeys(spans(), true)
	if len(want) < 30 {
		t.Fatalf("the sample made %d spans; it should make dozens", len(want))
	}
	if !slices.Equal(want, have) {
		t.Fatalf("the collector got other spans than the SDK records:\n got %s\nwant %s", strings.Join(have, "\n    "), strings.Join(want, "\n    "))
	}
}

// A Go SDK worker tracing with the provider (as cmd/example-worker does)
// sends a collector the spans the SDK records for it: times aside, which
// are the clock's.
func TestOTLPExportSendsTheWorkersSpans(t *testing.T) {
	run := func(tp trace.TracerProvider) {
		obs, err := worker.NewOTelObserver(tp, metricnoop.NewMeterProvider())
		if err != nil {
			t.Fatal(err)
		}
		for i, fail := range []bool{false, true} {
			step := &worker.Step{TaskUUID: uuid.UUID{15: byte(i)}, StepUUID: uuid.UUID{14: byte(i)}, CorrelationID: uuid.UUID{13: byte(i)},
				Namespace: "bench", Name: "only", Handler: "bench.noop", Attempt: 1,
				TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
			ctx, span := obs.StepClaimed(context.Background(), step)
			span.BeforeHandle(ctx)
			span.BeforeSubmit(ctx)
			if fail {
				span.End("failure", time.Millisecond, errors.New("handler failed"))
			} else {
				span.End("success", time.Millisecond, nil)
			}
		}
	}
	mem := tracetest.NewInMemoryExporter()
	sdkP, err := telemetry.NewProvider(context.Background(), telemetry.Options{SpanExporter: mem, SyncExport: true})
	if err != nil {
		t.Fatal(err)
	}
	run(sdkP.TracerProvider())
	want := sdkKeys(mem.GetSpans(), false)
	if err := sdkP.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	p, spans := otlpProvider(t, "github.com/tasker/tasker/worker")
	run(p.TracerProvider())
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	have := otlpKeys(spans(), false)
	if len(want) != 10 {
		t.Fatalf("the SDK recorded %d spans for two steps, want 10", len(want))
	}
	if !slices.Equal(want, have) {
		t.Fatalf("the collector got other spans than the SDK records:\n got %s\nwant %s", strings.Join(have, "\n    "), strings.Join(want, "\n    "))
	}
}

// With an attribute value length limit, which otlpwire.Tracer does not
// apply, the SDK builds the spans (and cuts the values), and otlpwire
// still exports them.
func TestAValueLengthLimitKeepsTheSDKsSpans(t *testing.T) {
	t.Setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "8")
	url, spans := otlpReceiver(t, "")
	p, err := telemetry.NewProvider(context.Background(), telemetry.Options{TracingEnabled: true, OTLPEndpoint: url, OTLPProtocol: "http/protobuf"})
	if err != nil {
		t.Fatal(err)
	}
	if telemetry.DirectTracing(p) {
		t.Fatal("otlpwire.Tracer builds the spans despite a value length limit")
	}
	publishSample(t, p)
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := spans()
	if len(got) < 30 {
		t.Fatalf("%d spans exported, want dozens", len(got))
	}
	for _, s := range got {
		for _, kv := range s.Attributes {
			if v := kv.GetValue().GetStringValue(); len(v) > 8 {
				t.Fatalf("span %s: %s = %q, longer than the limit", s.Name, kv.Key, v)
			}
		}
	}
}
