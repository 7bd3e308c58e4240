package otlpwire

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// recorder keeps the spans a provider ends.
type recorder struct {
	mu    sync.Mutex
	spans []sdktrace.ReadOnlySpan
}

func (r *recorder) ExportSpans(_ context.Context, s []sdktrace.ReadOnlySpan) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans = append(r.spans, s...)
	return nil
}
func (r *recorder) Shutdown(context.Context) error { return nil }

// sampleSpans makes spans with everything an OTLP span can carry: every
// attribute type, events, links, error status, trace state, a remote
// parent, dropped counts, two resources and two scopes, and values long
// enough for two- and three-byte lengths.
func sampleSpans(t testing.TB) []sdktrace.ReadOnlySpan {
	t.Helper()
	rec := &recorder{}
	mk := func(res *resource.Resource) *sdktrace.TracerProvider {
		return sdktrace.NewTracerProvider(sdktrace.WithSyncer(rec), sdktrace.WithResource(res),
			sdktrace.WithRawSpanLimits(sdktrace.SpanLimits{
				AttributeValueLengthLimit: -1, AttributeCountLimit: 18, EventCountLimit: 3, LinkCountLimit: 2,
				AttributePerEventCountLimit: 4, AttributePerLinkCountLimit: 2,
			}))
	}
	res1 := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0",
		attribute.String("service.name", "tasker-orchestrator"), attribute.Int("pid", 42))
	res2 := resource.NewSchemaless(attribute.String("service.name", "tasker-worker"))
	tp1, tp2 := mk(res1), mk(res2)
	defer tp1.Shutdown(context.Background())
	defer tp2.Shutdown(context.Background())

	tr1 := tp1.Tracer("github.com/tasker/tasker", trace.WithInstrumentationVersion("1.2.3"),
		trace.WithSchemaURL("https://opentelemetry.io/schemas/1.26.0"),
		trace.WithInstrumentationAttributes(attribute.String("scope.attr", "x")))
	tr1b := tp1.Tracer("another-scope")
	tr2 := tp2.Tracer("github.com/tasker/tasker/worker")

	ts, _ := trace.ParseTraceState("vendor=abc,other=1")
	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled,
		TraceState: ts, Remote: true,
	})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), remote)
	at := time.Unix(1_700_000_000, 123456789)
	long := strings.Repeat("é", 10000) // 20,000 bytes: three-byte lengths up the tree

	ctx, root := tr1.Start(ctx, "task", trace.WithTimestamp(at), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("s", "v"), attribute.String("empty", ""), attribute.Bool("t", true), attribute.Bool("f", false),
			attribute.Int64("zero", 0), attribute.Int64("neg", -7), attribute.Int64("big", 1<<62), attribute.Float64("pi", 3.14159),
			attribute.Float64("fzero", 0), attribute.BoolSlice("bs", []bool{true, false}), attribute.Int64Slice("is", []int64{1, -2, 0}),
			attribute.Float64Slice("fs", []float64{0.5, -1}), attribute.StringSlice("ss", []string{"a", "", "c"}),
			attribute.String("long", long), attribute.ByteSlice("bytes", []byte{0, 1, 2}),
			attribute.Slice("mixed", attribute.IntValue(1), attribute.StringValue("two"), attribute.SliceValue(attribute.BoolValue(false))),
			attribute.Map("map", attribute.String("k", "v"), attribute.Map("inner", attribute.Int("n", 0))),
		),
		trace.WithLinks(trace.Link{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{9}, SpanID: trace.SpanID{8}, TraceFlags: trace.FlagsSampled}),
			Attributes: []attribute.KeyValue{attribute.String("link", "a"), attribute.Int("n", 1), attribute.Int("over", 2)}}))
	root.SetAttributes(attribute.Int("a1", 1), attribute.Int("a2", 2)) // the second is beyond the count limit: dropped
	for i := range 5 {                                                 // beyond the event limit: dropped
		root.AddEvent("event", trace.WithTimestamp(at.Add(time.Duration(i)*time.Millisecond)),
			trace.WithAttributes(attribute.Int("i", i), attribute.String("k1", "v"), attribute.String("k2", "v"),
				attribute.String("k3", "v"), attribute.String("k4", "v")))
	}
	root.AddEvent("no attributes", trace.WithTimestamp(at))
	for i := range 3 { // beyond the link limit
		root.AddLink(trace.Link{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{byte(i + 20)}, SpanID: trace.SpanID{byte(i + 1)}})})
	}
	root.SetStatus(codes.Error, "it broke")

	_, child := tr1.Start(ctx, "step", trace.WithTimestamp(at))
	child.SetStatus(codes.Ok, "")
	child.End(trace.WithTimestamp(at.Add(time.Second)))
	_, other := tr1b.Start(ctx, "other scope", trace.WithSpanKind(trace.SpanKindClient))
	other.End()
	_, w := tr2.Start(ctx, "worker", trace.WithSpanKind(trace.SpanKindConsumer))
	w.End()
	_, p := tr1.Start(context.Background(), "new root", trace.WithSpanKind(trace.SpanKindProducer))
	p.End()
	root.End(trace.WithTimestamp(at.Add(2 * time.Second)))
	_, noScope := tp1.Tracer("").Start(ctx, "empty scope") // instrumentation.Scope{}: no scope field
	noScope.End()
	return rec.spans
}

// sdkRequest is what the SDK's OTLP/HTTP exporter sends for spans.
func sdkRequest(t testing.TB, spans []sdktrace.ReadOnlySpan) *coltracepb.ExportTraceServiceRequest {
	t.Helper()
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
	}))
	defer srv.Close()
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(srv.URL+"/v1/traces"),
		otlptracehttp.WithCompression(otlptracehttp.NoCompression))
	if err != nil {
		t.Fatal(err)
	}
	defer exp.Shutdown(context.Background())
	if err := exp.ExportSpans(context.Background(), spans); err != nil {
		t.Fatal(err)
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	return &req
}

// normalize sorts the resource and scope groups, whose order OTLP leaves
// open (the SDK takes them from a map).
func normalize(r *coltracepb.ExportTraceServiceRequest) {
	name := func(rs *tracepb.ResourceSpans) string {
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				return kv.GetValue().GetStringValue()
			}
		}
		return ""
	}
	slices.SortFunc(r.ResourceSpans, func(a, b *tracepb.ResourceSpans) int { return strings.Compare(name(a), name(b)) })
	for _, rs := range r.ResourceSpans {
		slices.SortFunc(rs.ScopeSpans, func(a, b *tracepb.ScopeSpans) int {
			return strings.Compare(a.GetScope().GetName(), b.GetScope().GetName())
		})
	}
}

func TestEncodingDecodesToTheSDKExportersRequest(t *testing.T) {
	spans := sampleSpans(t)
	want := sdkRequest(t, spans)

	b, _ := appendRequest(nil, spans, nil)
	var got coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatalf("our request does not decode: %v", err)
	}
	// The one intended difference: a link's trace state, which the SDK's
	// exporters leave out. The sample's links have none, so it does not show.
	normalize(want)
	normalize(&got)
	if !proto.Equal(want, &got) {
		t.Fatalf("request differs from the SDK exporter's:\n got %v\nwant %v", summary(&got), summary(want))
	}
	if n := len(got.ResourceSpans); n != 2 {
		t.Fatalf("%d resource groups, want 2", n)
	}
	var scopes, count int
	for _, rs := range got.ResourceSpans {
		scopes += len(rs.ScopeSpans)
		for _, ss := range rs.ScopeSpans {
			count += len(ss.Spans)
		}
	}
	if scopes != 4 || count != len(spans) {
		t.Fatalf("%d scopes and %d spans, want 4 and %d", scopes, count, len(spans))
	}

	// Deterministic: the same spans again, through reused scratch space,
	// give the same bytes.
	b1, g := appendRequest(nil, spans, nil)
	b2, _ := appendRequest(make([]byte, 0, 10), spans, g)
	if string(b1) != string(b2) {
		t.Fatal("encoding the same spans twice gave different bytes")
	}
}

func TestLinkTraceStateIsSent(t *testing.T) {
	rec := &recorder{}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(rec))
	ts, _ := trace.ParseTraceState("k=v")
	_, s := tp.Tracer("t").Start(context.Background(), "s", trace.WithLinks(trace.Link{SpanContext: trace.NewSpanContext(
		trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceState: ts, Remote: true})}))
	s.End()
	b, _ := appendRequest(nil, rec.spans, nil)
	var got coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	l := got.ResourceSpans[0].ScopeSpans[0].Spans[0].Links[0]
	if l.TraceState != "k=v" || l.Flags != flagHasIsRemote|flagIsRemote {
		t.Fatalf("link trace state %q flags %#x, want k=v and %#x", l.TraceState, l.Flags, flagHasIsRemote|flagIsRemote)
	}
}

func TestEmptyBatchesSendNothing(t *testing.T) {
	b, _ := appendRequest(nil, nil, nil)
	if len(b) != 0 {
		t.Fatalf("empty batch encoded to %d bytes", len(b))
	}
	b, _ = appendRequest(nil, []sdktrace.ReadOnlySpan{nil}, nil)
	if len(b) != 0 {
		t.Fatalf("batch of a nil span encoded to %d bytes", len(b))
	}
	x, err := New(Config{Protocol: ProtocolHTTP, Endpoint: "http://127.0.0.1:1/v1/traces"})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.ExportSpans(context.Background(), nil); err != nil {
		t.Fatalf("exporting nothing: %v", err)
	}
	if err := x.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := x.ExportSpans(context.Background(), sampleSpans(t)); err == nil || !strings.Contains(err.Error(), "shut down") {
		t.Fatalf("export after shutdown: %v", err)
	}
}

func summary(r *coltracepb.ExportTraceServiceRequest) string {
	var b strings.Builder
	for _, rs := range r.ResourceSpans {
		b.WriteString("resource ")
		b.WriteString(rs.GetResource().String())
		for _, ss := range rs.ScopeSpans {
			b.WriteString("\n scope " + ss.GetScope().String())
			for _, sp := range ss.Spans {
				b.WriteString("\n  " + sp.String())
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
