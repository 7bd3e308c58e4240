package otlpwire

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // the server side of gzip
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// spanCount decodes a request and counts its spans.
func spanCount(t testing.TB, body []byte) int {
	t.Helper()
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		t.Fatalf("request does not decode: %v", err)
	}
	n := 0
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			n += len(ss.Spans)
		}
	}
	return n
}

func TestHTTPExportRetriesWhatOTLPAllowsAndSendsHeadersAndGzip(t *testing.T) {
	spans := sampleSpans(t)
	var calls atomic.Int32
	var mu sync.Mutex
	var got []byte
	var hdr http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		case 2:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(zr)
		mu.Lock()
		got, hdr = b, r.Header.Clone()
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()

	x, err := New(Config{Protocol: ProtocolHTTP, Endpoint: srv.URL + "/v1/traces", Gzip: true,
		Headers: map[string]string{"Authorization": "Bearer t0ken"}})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Shutdown(context.Background())
	start := time.Now()
	if err := x.ExportSpans(context.Background(), spans); err != nil {
		t.Fatalf("export: %v", err)
	}
	if calls.Load() != 3 {
		t.Fatalf("%d requests, want 3 (two retried)", calls.Load())
	}
	if time.Since(start) < time.Second {
		t.Fatalf("the 429's Retry-After of 1 s was not honoured (%v)", time.Since(start))
	}
	mu.Lock()
	defer mu.Unlock()
	if n := spanCount(t, got); n != len(spans) {
		t.Fatalf("collector got %d spans, want %d", n, len(spans))
	}
	if hdr.Get("Authorization") != "Bearer t0ken" || hdr.Get("Content-Type") != "application/x-protobuf" ||
		hdr.Get("Content-Encoding") != "gzip" || !strings.HasPrefix(hdr.Get("User-Agent"), "tasker-otlpwire/") {
		t.Fatalf("headers %v", hdr)
	}
}

func TestHTTPExportReportsRejectionsAndGivesUp(t *testing.T) {
	spans := sampleSpans(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/down") {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		http.Error(w, "bad span data", http.StatusBadRequest)
	}))
	defer srv.Close()

	x, err := New(Config{Protocol: ProtocolHTTP, Endpoint: srv.URL + "/v1/traces"})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Shutdown(context.Background())
	err = x.ExportSpans(context.Background(), spans)
	if err == nil || !strings.Contains(err.Error(), "400 Bad Request") || !strings.Contains(err.Error(), "bad span data") {
		t.Fatalf("400 should fail at once, naming the status and the body: %v", err)
	}

	y, err := New(Config{Protocol: ProtocolHTTP, Endpoint: srv.URL + "/down"})
	if err != nil {
		t.Fatal(err)
	}
	defer y.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	err = y.ExportSpans(ctx, spans)
	if err == nil || !strings.Contains(err.Error(), "502") || !strings.Contains(err.Error(), "gave up") {
		t.Fatalf("502 until the deadline should end in an error saying so: %v", err)
	}
}

// An export whose deadline ends while an attempt hangs names what the
// attempt before it got, not only the deadline.
func TestHTTPExportGivesUpNamingTheLastAnswer(t *testing.T) {
	spans := sampleSpans(t)
	var calls atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		select { // hang until the client gives up
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	x, err := New(Config{Protocol: ProtocolHTTP, Endpoint: srv.URL + "/v1/traces"})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = x.ExportSpans(ctx, spans)
	if err == nil || !strings.Contains(err.Error(), "502") || !strings.Contains(err.Error(), "gave up: context deadline exceeded") {
		t.Fatalf("a 502, then an attempt cut short by the deadline: %v; want the 502 named and the deadline", err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d attempts, want 2 (the 502 and the one that hung)", n)
	}
}

// collector is an OTLP/gRPC trace receiver.
type collector struct {
	coltracepb.UnimplementedTraceServiceServer
	mu       sync.Mutex
	spans    int
	md       metadata.MD
	failures int // answer Unavailable this many times first
	calls    int
}

func (c *collector) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.failures > 0 {
		c.failures--
		return nil, status.Error(codes.Unavailable, "starting up")
	}
	c.md, _ = metadata.FromIncomingContext(ctx)
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans += len(ss.Spans)
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func startCollector(t *testing.T, c *collector) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(s, c)
	go s.Serve(ln) // ends when the test's cleanup stops the server
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

func TestGRPCExportReachesACollector(t *testing.T) {
	spans := sampleSpans(t)
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			c := &collector{failures: 1}
			addr := startCollector(t, c)
			x, err := New(Config{Protocol: ProtocolGRPC, Endpoint: addr, Insecure: true, Gzip: gz,
				Headers: map[string]string{"x-tenant": "acme"}})
			if err != nil {
				t.Fatal(err)
			}
			defer x.Shutdown(context.Background())
			if err := x.ExportSpans(context.Background(), spans); err != nil {
				t.Fatalf("export: %v", err)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.spans != len(spans) || c.calls != 2 {
				t.Fatalf("collector got %d spans in %d calls, want %d in 2 (one Unavailable retried)", c.spans, c.calls, len(spans))
			}
			if v := c.md.Get("x-tenant"); len(v) != 1 || v[0] != "acme" {
				t.Fatalf("metadata %v", c.md)
			}
		})
	}
}

func TestGRPCExportFailsOnWhatCannotBeRetried(t *testing.T) {
	// A gRPC server without the trace service answers Unimplemented.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	go s.Serve(ln) // ends at s.Stop below
	defer s.Stop()
	x, err := New(Config{Protocol: ProtocolGRPC, Endpoint: ln.Addr().String(), Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Shutdown(context.Background())
	err = x.ExportSpans(context.Background(), sampleSpans(t))
	if err == nil || status.Code(errorsUnwrapAll(err)) != codes.Unimplemented {
		t.Fatalf("want Unimplemented at once, got %v", err)
	}
}

func errorsUnwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok || u.Unwrap() == nil {
			return err
		}
		err = u.Unwrap()
	}
}

func TestResolveReadsTheStandardVariables(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	cases := []struct {
		name, protocol, endpoint string
		env                      map[string]string
		want                     Config
		unsupported, err         string
	}{
		{name: "grpc default", want: Config{Protocol: ProtocolGRPC, Endpoint: "localhost:4317"}},
		{name: "grpc config endpoint on this machine", endpoint: "localhost:4317",
			want: Config{Protocol: ProtocolGRPC, Endpoint: "localhost:4317", Insecure: true}},
		{name: "grpc env URL", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317"},
			want: Config{Protocol: ProtocolGRPC, Endpoint: "jaeger:4317", Insecure: true}},
		{name: "grpc traces env wins, https", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b:2"},
			want: Config{Protocol: ProtocolGRPC, Endpoint: "b:2"}},
		{name: "grpc host:port with insecure", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "c:3",
			"OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_EXPORTER_OTLP_HEADERS": "a=1, b=x%20y",
			"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_TIMEOUT": "2500"},
			want: Config{Protocol: ProtocolGRPC, Endpoint: "c:3", Insecure: true,
				Headers: map[string]string{"a": "1", "b": "x y"}, Gzip: true, Timeout: 2500 * time.Millisecond}},
		{name: "http config endpoint", protocol: "http/protobuf", endpoint: "http://h:4318/",
			want: Config{Protocol: ProtocolHTTP, Endpoint: "http://h:4318/v1/traces"}},
		{name: "http general env gets the path", protocol: "http/protobuf",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://h:4318"},
			want: Config{Protocol: ProtocolHTTP, Endpoint: "https://h:4318/v1/traces"}},
		{name: "http traces env as is", protocol: "http/protobuf",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:1/custom"},
			want: Config{Protocol: ProtocolHTTP, Endpoint: "http://h:1/custom"}},
		{name: "http default", protocol: "http/protobuf", want: Config{Protocol: ProtocolHTTP, Endpoint: "http://localhost:4318/v1/traces"}},
		{name: "certificates go to the SDK", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": "/ca.pem"},
			unsupported: "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE is set"},
		{name: "bad compression", env: map[string]string{"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"},
			err: "OTEL_EXPORTER_OTLP_COMPRESSION: want gzip or none"},
		{name: "bad timeout", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "10s"},
			err: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: want a positive number of milliseconds"},
		{name: "bad headers", env: map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "novalue"},
			err: "OTEL_EXPORTER_OTLP_HEADERS: want key=value"},
		{name: "http endpoint without scheme", protocol: "http/protobuf", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "h:4318"},
			err: "want an http:// or https:// URL"},
		{name: "unknown protocol", protocol: "thrift", err: `unknown OTLP protocol "thrift"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, unsupported, err := Resolve(c.protocol, c.endpoint, env(c.env))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if unsupported != c.unsupported {
				t.Fatalf("unsupported %q, want %q", unsupported, c.unsupported)
			}
			if c.unsupported != "" {
				return
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

// benchSpans are spans shaped like the engine's: a step span with DESIGN
// §4's attributes and two events carrying them.
func benchSpans(b *testing.B, n int) []sdktrace.ReadOnlySpan {
	rec := &recorder{}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(rec))
	tr := tp.Tracer("github.com/tasker/tasker")
	attrs := []attribute.KeyValue{
		attribute.String("task_uuid", "0192f0c4-5d1e-7a3b-9c2d-1e2f3a4b5c6d"), attribute.String("step_uuid", "0192f0c4-5d1e-7a3b-9c2d-1e2f3a4b5c6e"),
		attribute.String("namespace", "bench"), attribute.String("step_name", "s2"), attribute.String("correlation_id", "0192f0c4-5d1e-7a3b-9c2d-1e2f3a4b5c6f"),
		attribute.String("task_name", "linear4"), attribute.Int("attempt", 1),
	}
	ctx, root := tr.Start(context.Background(), "task")
	for range n {
		_, s := tr.Start(ctx, "step_state_transition", trace.WithAttributes(attrs...))
		s.AddEvent("step.before_transition", trace.WithAttributes(append(attrs, attribute.String("from_state", "in_progress"), attribute.String("to_state", "enqueued_for_orchestration"))...))
		s.AddEvent("step.completed", trace.WithAttributes(attrs...))
		s.End()
	}
	root.End()
	return rec.spans[:n]
}

// BenchmarkExport compares the SDK's OTLP/HTTP exporter with this one on
// the same spans and the same local receiver (a batch of 4,096 spans, the
// daemon's export batch size).
func BenchmarkExport(b *testing.B) {
	spans := benchSpans(b, 4096)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()
	b.Run("sdk", func(b *testing.B) {
		exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(srv.URL+"/v1/traces"))
		if err != nil {
			b.Fatal(err)
		}
		benchmarkExporter(b, exp, spans)
	})
	b.Run("otlpwire", func(b *testing.B) {
		x, err := New(Config{Protocol: ProtocolHTTP, Endpoint: srv.URL + "/v1/traces"})
		if err != nil {
			b.Fatal(err)
		}
		benchmarkExporter(b, x, spans)
	})
	b.Run("encode-only", func(b *testing.B) {
		var buf []byte
		var g []group
		b.ReportAllocs()
		for b.Loop() {
			buf, g = appendRequest(buf[:0], spans, g)
		}
		b.ReportMetric(float64(len(buf)), "bytes/request")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
	})
}

// benchmarkExporter exports spans once per iteration and reports the time
// per span; the exporter is shut down at the end.
func benchmarkExporter(b *testing.B, exp sdktrace.SpanExporter, spans []sdktrace.ReadOnlySpan) {
	defer exp.Shutdown(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		if err := exp.ExportSpans(context.Background(), spans); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
}
