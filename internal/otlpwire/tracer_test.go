package otlpwire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/tasker/tasker/internal/lockedbuf"
	"github.com/tasker/tasker/internal/wait"
)

// seqIDs hands out ids from a counter, so that two tracers given the same
// calls make the same ids.
type seqIDs struct {
	mu sync.Mutex
	n  uint64
}

func (g *seqIDs) next() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n++
	return g.n
}

func (g *seqIDs) NewIDs(context.Context) (trace.TraceID, trace.SpanID) {
	n := g.next()
	return trace.TraceID{0: 0xaa, 15: byte(n)}, trace.SpanID{0: 0xbb, 7: byte(n)}
}

func (g *seqIDs) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	return trace.SpanID{0: 0xcc, 7: byte(g.next())}
}

// nameSampler drops spans named "dropped", records without sampling those
// named "record only", adds a trace state entry to every other, and an
// attribute to those named "sampler attributes".
type nameSampler struct{}

func (nameSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	ts, _ := trace.SpanContextFromContext(p.ParentContext).TraceState().Insert("tk", "v1")
	switch p.Name {
	case "dropped":
		return sdktrace.SamplingResult{Decision: sdktrace.Drop, Tracestate: ts}
	case "record only":
		return sdktrace.SamplingResult{Decision: sdktrace.RecordOnly, Tracestate: ts}
	case "sampler attributes":
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: ts,
			Attributes: []attribute.KeyValue{attribute.String("sampled.by", "name"), attribute.String("a", "from sampler")}}
	}
	return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: ts}
}

func (nameSampler) Description() string { return "nameSampler" }

type customError struct{}

func (customError) Error() string { return "custom failure" }

// timed is what a Tracer's spans offer beside the API (StartAt's).
type timed interface {
	AddEventAt(name string, at time.Time, attrs []attribute.KeyValue)
	EndAt(at time.Time)
}

// spanScript uses every part of the span API a tracer offers, with
// explicit times, so that two tracers given it export the same spans.
// With fast, spans with only a time and attributes are started, given
// their events and ended through a Tracer's StartAt, AddEventAt and EndAt.
func spanScript(t *testing.T, tr trace.Tracer, at time.Time, fast bool) {
	ms := func(n int) time.Time { return at.Add(time.Duration(n) * time.Millisecond) }
	startAt := func(ctx context.Context, name string, at time.Time, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
		if d, ok := tr.(*Tracer); ok && fast {
			return d.StartAt(ctx, name, at, attrs)
		}
		return tr.Start(ctx, name, trace.WithTimestamp(at), trace.WithAttributes(attrs...))
	}
	eventAt := func(s trace.Span, name string, at time.Time, attrs ...attribute.KeyValue) {
		if d, ok := s.(timed); ok && fast {
			d.AddEventAt(name, at, attrs)
			return
		}
		s.AddEvent(name, trace.WithTimestamp(at), trace.WithAttributes(attrs...))
	}
	endAt := func(s trace.Span, at time.Time) {
		if d, ok := s.(timed); ok && fast {
			d.EndAt(at)
			return
		}
		s.End(trace.WithTimestamp(at))
	}
	remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1: 1}, SpanID: trace.SpanID{1: 2}, TraceFlags: trace.FlagsSampled, Remote: true})
	link := func(i int) trace.Link {
		return trace.Link{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{2: byte(i)}, SpanID: trace.SpanID{2: byte(i)}}),
			Attributes: []attribute.KeyValue{attribute.Int("link", i), attribute.Bool("extra", true)}}
	}
	ctx := context.Background()
	rctx, root := tr.Start(ctx, "root", trace.WithTimestamp(at), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("a", "1"), attribute.String("a", "2"), attribute.Int("n", 3), attribute.String("", "invalid")),
		trace.WithLinks(link(1)))
	root.SetAttributes(attribute.StringSlice("ss", []string{"p", "q"}), attribute.Float64("f", 1.5), attribute.Int64Slice("is", []int64{1, 2}),
		attribute.String("a", "3"), attribute.String("over", "the limit"), attribute.Bool("b", true))
	for i := range 5 {
		eventAt(root, fmt.Sprintf("event %d", i), ms(i), attribute.Int("i", i), attribute.Int("j", i), attribute.Int("k", i))
	}
	root.AddLink(link(2))
	root.AddLink(link(3))
	root.AddLink(trace.Link{}) // nothing to link: ignored
	root.SetStatus(codes.Error, "boom")
	root.SetStatus(codes.Unset, "ignored")

	cctx, child := startAt(rctx, "child", ms(1), attribute.String("x", "y"))
	child.RecordError(customError{}, trace.WithTimestamp(ms(2)))
	child.RecordError(errors.New("plain"), trace.WithTimestamp(ms(3)), trace.WithAttributes(attribute.String("more", "context")))
	child.RecordError(nil)
	child.SetStatus(codes.Ok, "an ok status has no description")
	child.SetStatus(codes.Error, "does not override ok")
	child.SetName("child renamed")

	dctx, dropped := tr.Start(cctx, "dropped", trace.WithTimestamp(ms(2)))
	dropped.AddEvent("not recorded", trace.WithTimestamp(ms(2)))
	_, underDropped := tr.Start(dctx, "under a dropped span", trace.WithTimestamp(ms(3)))
	underDropped.End(trace.WithTimestamp(ms(4)))
	dropped.End(trace.WithTimestamp(ms(4)))
	_, recordOnly := tr.Start(cctx, "record only", trace.WithTimestamp(ms(2)))
	recordOnly.SetAttributes(attribute.String("kept", "but not exported"))
	recordOnly.End(trace.WithTimestamp(ms(3)))

	_, nr := tr.Start(cctx, "new root", trace.WithNewRoot(), trace.WithTimestamp(ms(3)), trace.WithSpanKind(trace.SpanKindProducer))
	nr.End(trace.WithTimestamp(ms(4)))
	_, sa := tr.Start(rctx, "sampler attributes", trace.WithTimestamp(ms(3)), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("a", "from options")))
	sa.End(trace.WithTimestamp(ms(5)))
	_, rc := tr.Start(trace.ContextWithRemoteSpanContext(ctx, remote), "remote parent", trace.WithTimestamp(ms(4)), trace.WithSpanKind(trace.SpanKindConsumer))
	rc.End(trace.WithTimestamp(ms(6)))

	// Attributes given to StartAt are kept, not copied: the span must
	// copy them before it writes over one (a key set again beyond the
	// limit, a repeated key).
	shared := []attribute.KeyValue{attribute.String("a", "1"), attribute.String("b", "2"), attribute.String("c", "3"), attribute.String("d", "4")}
	kept := slices.Clone(shared)
	_, sh := startAt(rctx, "shared attributes", ms(4), shared...)
	eventAt(sh, "with the same attributes", ms(4), shared...)
	sh.SetAttributes(attribute.String("a", "new"), attribute.String("e", "5"), attribute.String("f", "6"))
	endAt(sh, ms(5))
	repeated := []attribute.KeyValue{attribute.String("k", "1"), attribute.String("other", "x"), attribute.String("k", "2")}
	keptRepeated := slices.Clone(repeated)
	_, rp := startAt(rctx, "repeated key", ms(4), repeated...)
	endAt(rp, ms(5))
	if !slices.Equal(shared, kept) || !slices.Equal(repeated, keptRepeated) {
		t.Errorf("the span wrote over its caller's attributes: %v, %v", shared, repeated)
	}

	endAt(child, ms(5))
	eventAt(child, "after its end", ms(6))
	child.SetAttributes(attribute.String("after", "end"))
	child.End(trace.WithTimestamp(ms(9)))
	endAt(root, ms(10))
}

// capture is an OTLP/HTTP receiver keeping each request's spans.
type capture struct {
	mu   sync.Mutex
	reqs []*coltracepb.ExportTraceServiceRequest
}

func startCapture(t *testing.T) (*capture, *Exporter) {
	t.Helper()
	c := &capture{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			t.Errorf("request does not decode: %v", err)
		}
		c.mu.Lock()
		c.reqs = append(c.reqs, &req)
		c.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	x, err := New(Config{Protocol: ProtocolHTTP, Endpoint: srv.URL + "/v1/traces"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.Shutdown(context.Background()) })
	return c, x
}

// merged is every request's spans in one request (they share their
// resource and scope), and how many spans each request had.
func (c *capture) merged(t *testing.T) (*coltracepb.ExportTraceServiceRequest, []int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.reqs) == 0 {
		return &coltracepb.ExportTraceServiceRequest{}, nil
	}
	all := proto.Clone(c.reqs[0]).(*coltracepb.ExportTraceServiceRequest)
	var sizes []int
	for i, r := range c.reqs {
		if len(r.ResourceSpans) != 1 || len(r.ResourceSpans[0].ScopeSpans) != 1 {
			t.Fatalf("request %d: %d resource groups, want one of one scope", i, len(r.ResourceSpans))
		}
		spans := r.ResourceSpans[0].ScopeSpans[0].Spans
		sizes = append(sizes, len(spans))
		if i > 0 {
			all.ResourceSpans[0].ScopeSpans[0].Spans = append(all.ResourceSpans[0].ScopeSpans[0].Spans, spans...)
		}
	}
	return all, sizes
}

func TestTracerExportsWhatTheSDKExports(t *testing.T) {
	res := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0", attribute.String("service.name", "tasker-orchestrator"))
	scope := instrumentation.Scope{Name: "github.com/tasker/tasker", Version: "1.0.0"}
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		limits sdktrace.SpanLimits
		batch  int
	}{
		{"limits reached", sdktrace.SpanLimits{AttributeValueLengthLimit: -1, AttributeCountLimit: 5, EventCountLimit: 3, LinkCountLimit: 2,
			AttributePerEventCountLimit: 2, AttributePerLinkCountLimit: 1}, 2},
		{"no limits", sdktrace.SpanLimits{AttributeValueLengthLimit: -1, AttributeCountLimit: -1, EventCountLimit: -1, LinkCountLimit: -1,
			AttributePerEventCountLimit: -1, AttributePerLinkCountLimit: -1}, 100},
		{"nothing allowed", sdktrace.SpanLimits{AttributeValueLengthLimit: -1}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(rec), sdktrace.WithResource(res), sdktrace.WithRawSpanLimits(tc.limits),
				sdktrace.WithIDGenerator(&seqIDs{}), sdktrace.WithSampler(nameSampler{}))
			defer tp.Shutdown(context.Background())
			spanScript(t, tp.Tracer(scope.Name, trace.WithInstrumentationVersion(scope.Version)), at, false)
			want := sdkRequest(t, rec.spans)
			if n := len(rec.spans); n != 8 {
				t.Fatalf("the SDK exported %d spans, want 8 (the script's sampled ones)", n)
			}

			for _, fast := range []bool{false, true} {
				c, x := startCapture(t)
				tr, err := NewTracer(x, TracerConfig{Resource: res, Scope: scope, Sampler: nameSampler{}, IDs: &seqIDs{}, Limits: &tc.limits,
					BatchSize: tc.batch, Delay: time.Hour})
				if err != nil {
					t.Fatal(err)
				}
				spanScript(t, tr, at, fast)
				if err := tr.Shutdown(context.Background()); err != nil {
					t.Fatal(err)
				}
				got, sizes := c.merged(t)
				if !proto.Equal(want, got) {
					t.Fatalf("spans (StartAt: %v) differ from the SDK's:\n got %v\nwant %v", fast, summary(got), summary(want))
				}
				for _, n := range sizes {
					if n > tc.batch {
						t.Fatalf("requests of %v spans, want at most %d each", sizes, tc.batch)
					}
				}
			}
		})
	}
}

func TestTracerRefusesAValueLengthLimit(t *testing.T) {
	_, x := startCapture(t)
	_, err := NewTracer(x, TracerConfig{IDs: &seqIDs{}, Limits: &sdktrace.SpanLimits{AttributeValueLengthLimit: 10}})
	if err == nil {
		t.Fatal("a value length limit was accepted")
	}
}

func TestTracerExportsOnItsDelayAndOnFlush(t *testing.T) {
	c, x := startCapture(t)
	tr, err := NewTracer(x, TracerConfig{IDs: &seqIDs{}, Delay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	_, s := tr.Start(context.Background(), "one")
	s.End()
	if err := wait.Poll(time.Now().Add(10*time.Second), 5*time.Millisecond, func() (bool, error) {
		_, sizes := c.merged(t)
		return len(sizes) == 1 && sizes[0] == 1, nil
	}); err != nil {
		t.Fatal("a span waiting for a batch was not exported after the delay")
	}

	tr2, err := NewTracer(x, TracerConfig{IDs: &seqIDs{}, Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, s := tr2.Start(context.Background(), "flushed")
		s.End()
	}
	if err := tr2.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, sizes := c.merged(t); len(sizes) != 2 || sizes[1] != 3 {
		t.Fatalf("requests of %v spans after the flush, want [1 3]", sizes)
	}
	if err := tr2.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, late := tr2.Start(context.Background(), "after shutdown")
	late.End()
	if err := tr2.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, sizes := c.merged(t); len(sizes) != 2 {
		t.Fatalf("requests of %v spans: a span ended after shutdown was sent", sizes)
	}
}

// A full queue drops spans rather than blocking the caller, and says so.
func TestTracerDropsWhatTheQueueCannotHold(t *testing.T) {
	release := make(chan struct{})
	var got sync.WaitGroup
	got.Add(1)
	var once sync.Once
	var mu sync.Mutex
	spans := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		_ = proto.Unmarshal(body, &req)
		mu.Lock()
		spans += len(req.ResourceSpans[0].ScopeSpans[0].Spans)
		mu.Unlock()
		once.Do(got.Done)
		<-release // the collector stalls
	}))
	defer srv.Close()
	x, err := New(Config{Protocol: ProtocolHTTP, Endpoint: srv.URL + "/v1/traces"})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Shutdown(context.Background())
	logs := &logBuffer{}
	tr, err := NewTracer(x, TracerConfig{IDs: &seqIDs{}, QueueSize: 8, BatchSize: 4, Delay: time.Hour, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	end := func(n int) {
		for range n {
			_, s := tr.Start(context.Background(), "s")
			s.End()
		}
	}
	end(4) // one batch, now stalled in its export
	got.Wait()
	end(20) // 8 fit in the queue (4 of them the stalled batch's), 16 are dropped
	close(release)
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if spans != 8 {
		t.Fatalf("%d spans exported, want the 8 the queue held", spans)
	}
	if !logs.contains(`msg="spans dropped: the export queue was full" spans=16`) {
		t.Fatalf("no warning about the 16 dropped spans; log:\n%s", logs.String())
	}
}

// logBuffer collects what a logger writes.
type logBuffer struct{ lockedbuf.Buffer }

func (l *logBuffer) contains(s string) bool { return strings.Contains(l.String(), s) }

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// Spans ended by many goroutines at once, while batches are handed over
// and exported, are each exported exactly once.
func TestTracerExportsEverySpanOnceUnderConcurrency(t *testing.T) {
	c, x := startCapture(t)
	tr, err := NewTracer(x, TracerConfig{IDs: &uniqueIDs{}, QueueSize: 1 << 16, BatchSize: 7, Delay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 8, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				ctx, parent := tr.Start(context.Background(), "parent", trace.WithAttributes(attribute.Int("g", g)))
				_, child := tr.Start(ctx, "child")
				child.AddEvent("event", trace.WithAttributes(attribute.Int("i", i)))
				child.End()
				parent.SetAttributes(attribute.Int("i", i))
				parent.End()
			}
		})
	}
	wg.Wait()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, sizes := c.merged(t)
	seen := map[string]bool{}
	for _, s := range got.ResourceSpans[0].ScopeSpans[0].Spans {
		id := string(s.SpanId)
		if seen[id] {
			t.Fatalf("span %x exported twice", s.SpanId)
		}
		seen[id] = true
	}
	if want := goroutines * each * 2; len(seen) != want {
		t.Fatalf("%d spans exported in %d requests, want %d", len(seen), len(sizes), want)
	}
}

// uniqueIDs are span ids from a 64-bit counter, unique across 2^63 spans.
type uniqueIDs struct{ seqIDs }

func (g *uniqueIDs) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	tid, _ := g.seqIDs.NewIDs(ctx)
	return tid, g.NewSpanID(ctx, tid)
}

func (g *uniqueIDs) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	var sid trace.SpanID
	n := g.next()
	for i := range 8 {
		sid[i] = byte(n >> (8 * i))
	}
	sid[7] |= 0x80 // never all zero
	return sid
}

// countingFollower is sdktrace.ParentBased(sdktrace.AlwaysSample()),
// saying through FollowsParent that it follows parents (when follows is
// set), and counting its ShouldSample calls.
type countingFollower struct {
	follows bool
	calls   atomic.Int64
	inner   sdktrace.Sampler
}

func (c *countingFollower) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	c.calls.Add(1)
	return c.inner.ShouldSample(p)
}

func (c *countingFollower) Description() string { return c.inner.Description() }
func (c *countingFollower) FollowsParent() bool { return c.follows }

// A sampler that follows parents is not asked about spans with one: the
// tracer decides them as the parent-based sampler would, tracestate
// included, and exports what the SDK with that sampler exports.
func TestParentFollowerDecidesSpansWithAParent(t *testing.T) {
	res := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0", attribute.String("service.name", "tasker-orchestrator"))
	scope := instrumentation.Scope{Name: "github.com/tasker/tasker"}
	at := time.Date(2026, 11, 29, 4, 0, 0, 0, time.UTC)
	ts, err := trace.ParseTraceState("vendor=v1")
	if err != nil {
		t.Fatal(err)
	}
	remote := func(sampled bool) context.Context {
		cfg := trace.SpanContextConfig{TraceID: trace.TraceID{0: 0x4b, 15: 1}, SpanID: trace.SpanID{0: 0x0f, 7: 1},
			TraceState: ts, Remote: true}
		if sampled {
			cfg.TraceFlags = trace.FlagsSampled
		}
		return trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(cfg))
	}
	// script starts a root, a child of it, and a child each of a sampled
	// and an unsampled remote parent (with a tracestate), and reports
	// which spans were sampled and the tracestates they carry.
	script := func(tr trace.Tracer) (sampled []bool, states []string) {
		start := func(ctx context.Context, name string) (context.Context, trace.Span) {
			if d, ok := tr.(*Tracer); ok {
				return d.StartAt(ctx, name, at, []attribute.KeyValue{attribute.String("k", name)})
			}
			return tr.Start(ctx, name, trace.WithTimestamp(at), trace.WithAttributes(attribute.String("k", name)))
		}
		rctx, root := start(context.Background(), "root")
		_, child := start(rctx, "child of root")
		_, yes := start(remote(true), "child of a sampled remote parent")
		_, no := start(remote(false), "child of an unsampled remote parent")
		for _, s := range []trace.Span{root, child, yes, no} {
			sampled = append(sampled, s.SpanContext().IsSampled())
			states = append(states, s.SpanContext().TraceState().String())
			s.End(trace.WithTimestamp(at.Add(time.Millisecond)))
		}
		return sampled, states
	}
	rec := &recorder{}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(rec), sdktrace.WithResource(res), sdktrace.WithIDGenerator(&seqIDs{}),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	defer tp.Shutdown(context.Background())
	wantSampled, wantStates := script(tp.Tracer(scope.Name))
	want := sdkRequest(t, rec.spans)
	if n := len(rec.spans); n != 3 {
		t.Fatalf("the SDK exported %d spans, want 3 (all but the unsampled remote parent's child)", n)
	}
	for _, follows := range []bool{true, false} {
		c, x := startCapture(t)
		smp := &countingFollower{follows: follows, inner: sdktrace.ParentBased(sdktrace.AlwaysSample())}
		tr, err := NewTracer(x, TracerConfig{Resource: res, Scope: scope, Sampler: smp, IDs: &seqIDs{}, Delay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		sampled, states := script(tr)
		if err := tr.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(sampled, wantSampled) || !slices.Equal(states, wantStates) {
			t.Fatalf("follows %v: sampled %v with tracestates %q, want %v with %q", follows, sampled, states, wantSampled, wantStates)
		}
		if got, _ := c.merged(t); !proto.Equal(want, got) {
			t.Fatalf("follows %v: spans differ from the SDK's:\n got %v\nwant %v", follows, summary(got), summary(want))
		}
		wantCalls := int64(4)
		if follows {
			wantCalls = 1 // the root only
		}
		if n := smp.calls.Load(); n != wantCalls {
			t.Fatalf("follows %v: the sampler was asked %d times, want %d", follows, n, wantCalls)
		}
	}
}
