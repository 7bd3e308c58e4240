package otlpwire

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Exporter is an sdktrace.SpanExporter sending OTLP over gRPC or
// HTTP/protobuf.
type Exporter struct {
	cfg  Config
	send func(ctx context.Context, body []byte) error
	stop func() error

	mu      sync.Mutex // the encoding buffers; exports are serialised
	buf     []byte
	zbuf    bytes.Buffer
	zw      *gzip.Writer
	groups  []group
	stopped bool
}

// New builds an exporter for cfg. A gRPC connection is made lazily, on the
// first export, as the SDK's exporter does.
func New(cfg Config) (*Exporter, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	x := &Exporter{cfg: cfg}
	switch cfg.Protocol {
	case ProtocolHTTP:
		client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		x.send = func(ctx context.Context, body []byte) error { return x.sendHTTP(ctx, client, body) }
		x.stop = func() error { client.CloseIdleConnections(); return nil }
	case ProtocolGRPC:
		creds := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
		if cfg.Insecure {
			creds = insecure.NewCredentials()
		}
		conn, err := grpc.NewClient(cfg.Endpoint, grpc.WithTransportCredentials(creds), grpc.WithUserAgent(userAgent))
		if err != nil {
			return nil, fmt.Errorf("otlp grpc endpoint %q: %w", cfg.Endpoint, err)
		}
		x.send = func(ctx context.Context, body []byte) error { return x.sendGRPC(ctx, conn, body) }
		x.stop = conn.Close
	default:
		return nil, fmt.Errorf("unknown OTLP protocol %q (want %s or %s)", cfg.Protocol, ProtocolGRPC, ProtocolHTTP)
	}
	return x, nil
}

// ExportSpans encodes spans into one request and sends it, retrying what
// OTLP says may be retried until ctx ends (the batch span processor gives
// each export 30 s).
func (x *Exporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	return x.export(ctx, len(spans), func(b []byte) []byte {
		b, x.groups = appendRequest(b, spans, x.groups)
		return b
	})
}

// exportEncoded sends spans encoded by encoder.spanFields, all of resource
// res and scope scope, as one request, as ExportSpans does.
func (x *Exporter) exportEncoded(ctx context.Context, res *resource.Resource, scope instrumentation.Scope, spans []byte) error {
	return x.export(ctx, len(spans), func(b []byte) []byte { return appendEncodedRequest(b, res, scope, spans) })
}

// export writes a request of n spans with encode (into x.buf, under x.mu)
// and sends it.
func (x *Exporter) export(ctx context.Context, n int, encode func([]byte) []byte) error {
	if n == 0 {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.stopped {
		return errors.New("otlp exporter is shut down")
	}
	x.buf = encode(x.buf[:0])
	return x.sendBuffered(ctx)
}

// sendBuffered compresses (when configured) and sends the request in x.buf,
// with OTLP's retries. x.mu is held.
func (x *Exporter) sendBuffered(ctx context.Context) error {
	body := x.buf
	if x.cfg.Gzip && x.cfg.Protocol == ProtocolHTTP { // gRPC compresses its messages itself
		x.zbuf.Reset()
		if x.zw == nil {
			x.zw = gzip.NewWriter(&x.zbuf)
		} else {
			x.zw.Reset(&x.zbuf)
		}
		if _, err := x.zw.Write(body); err != nil {
			return fmt.Errorf("otlp gzip: %w", err)
		}
		if err := x.zw.Close(); err != nil {
			return fmt.Errorf("otlp gzip: %w", err)
		}
		body = x.zbuf.Bytes()
	}
	// A batch of spans 50 times the usual size must not pin its buffer.
	defer func() {
		if cap(x.buf) > 64<<20 {
			x.buf = nil
		}
	}()
	if _, ok := ctx.Deadline(); !ok {
		// The batch span processor gives each export a deadline; a caller
		// that does not (a simple span processor) must not wait for ever
		// on a collector that is down.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, MaxRetryTime)
		defer cancel()
	}
	return retry(ctx, func(ctx context.Context) (time.Duration, error) {
		actx, cancel := context.WithTimeout(ctx, x.cfg.Timeout)
		defer cancel()
		return 0, x.send(actx, body)
	})
}

// Shutdown stops the exporter; later exports fail.
func (x *Exporter) Shutdown(ctx context.Context) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.stopped {
		return nil
	}
	x.stopped = true
	return x.stop()
}

// MaxRetryTime bounds an export's retries when its context has no deadline.
const MaxRetryTime = 30 * time.Second

// userAgent names the exporter to collectors.
const userAgent = "tasker-otlpwire/1"

// retryableError is a failure OTLP allows to retry, after wait when the
// server said how long.
type retryableError struct {
	err  error
	wait time.Duration
}

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// retry runs attempt until it succeeds, fails for good, or ctx ends, with
// jittered exponential backoff from 250 ms to 5 s.
//
// When ctx ends during an attempt, the error names what the attempt before
// it got (a 502, a refused connection), not only the deadline that cut the
// last one short.
func retry(ctx context.Context, attempt func(context.Context) (time.Duration, error)) error {
	backoff := 250 * time.Millisecond
	var last error // the previous attempt's failure
	for {
		_, err := attempt(ctx)
		var re *retryableError
		if err == nil || !errors.As(err, &re) {
			return err
		}
		if ctx.Err() != nil && last != nil {
			return fmt.Errorf("%w (gave up: %w)", last, ctx.Err())
		}
		last = re.err
		wait := re.wait
		if wait <= 0 {
			wait = backoff/2 + rand.N(backoff/2+1)
			backoff = min(2*backoff, 5*time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up: %w)", re.err, ctx.Err())
		case <-t.C:
		}
	}
}

func (x *Exporter) sendHTTP(ctx context.Context, client *http.Client, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, x.cfg.Endpoint, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("otlp http export: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", userAgent)
	if x.cfg.Gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	for k, v := range x.cfg.Headers {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return &retryableError{err: fmt.Errorf("otlp http export to %s: %w", x.cfg.Endpoint, err)}
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		reportPartialSuccess(rb)
		return nil
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusBadGateway,
		resp.StatusCode == http.StatusServiceUnavailable, resp.StatusCode == http.StatusGatewayTimeout:
		var wait time.Duration
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
		return &retryableError{err: fmt.Errorf("otlp http export to %s: %s", x.cfg.Endpoint, resp.Status), wait: wait}
	}
	return fmt.Errorf("otlp http export to %s: %s: %s", x.cfg.Endpoint, resp.Status, bodySnippet(rb))
}

const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

func (x *Exporter) sendGRPC(ctx context.Context, conn *grpc.ClientConn, body []byte) error {
	if len(x.cfg.Headers) > 0 {
		md := metadata.New(x.cfg.Headers)
		ctx = metadata.NewOutgoingContext(ctx, md)
	}
	opts := []grpc.CallOption{grpc.ForceCodecV2(rawCodec{})}
	if x.cfg.Gzip {
		opts = append(opts, grpc.UseCompressor(grpcgzip.Name))
	}
	req := rawMessage(body)
	var resp rawMessage
	err := conn.Invoke(ctx, exportMethod, &req, &resp, opts...)
	if err == nil {
		reportPartialSuccess(resp)
		return nil
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange,
		codes.Unavailable, codes.DataLoss, codes.ResourceExhausted:
		return &retryableError{err: fmt.Errorf("otlp grpc export to %s: %w", x.cfg.Endpoint, err)}
	}
	return fmt.Errorf("otlp grpc export to %s: %w", x.cfg.Endpoint, err)
}

// reportPartialSuccess hands a collector's rejection of some spans to the
// OpenTelemetry error handler, as the SDK's exporters do.
func reportPartialSuccess(body []byte) {
	if len(body) == 0 {
		return
	}
	var r coltracepb.ExportTraceServiceResponse
	if proto.Unmarshal(body, &r) != nil {
		return
	}
	if ps := r.GetPartialSuccess(); ps != nil && (ps.GetRejectedSpans() > 0 || ps.GetErrorMessage() != "") {
		otel.Handle(fmt.Errorf("otlp export: collector rejected %d spans: %s", ps.GetRejectedSpans(), ps.GetErrorMessage()))
	}
}

func bodySnippet(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return strconv.Quote(string(b))
}

// rawMessage is a request or response body already in protobuf form.
type rawMessage []byte

// rawCodec passes rawMessages through gRPC unchanged. Its name is "proto",
// so the call's content type is application/grpc+proto, as collectors
// expect.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*rawMessage)
	if !ok {
		return nil, fmt.Errorf("otlp grpc codec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*m)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMessage)
	if !ok {
		return fmt.Errorf("otlp grpc codec: cannot unmarshal into %T", v)
	}
	*m = data.Materialize()
	return nil
}
