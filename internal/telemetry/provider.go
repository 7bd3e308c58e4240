// Package telemetry sets up tracing and metrics and publishes the system
// events: every task and step transition and every workflow event becomes a
// span event (with correlation_id) in the task's single trace, and an
// increment of tasker_events_total, plus the transition and duration metrics
// of DESIGN §5. Publication happens only after the database transaction that
// caused it commits (see Journal).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"github.com/tasker/tasker/internal/otlpwire"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Options configures the Provider.
type Options struct {
	ServiceName    string
	TracingEnabled bool
	// OTLPEndpoint and OTLPProtocol ("grpc" or "http/protobuf") override the
	// OTEL_EXPORTER_OTLP_* environment, which is honoured otherwise.
	OTLPEndpoint string
	OTLPProtocol string
	// OTLPEncoder chooses the span exporter: "tasker" or "" (internal/otlpwire,
	// its own protobuf encoder) or "sdk" (the OpenTelemetry SDK's exporters).
	// otlpwire hands over to the SDK's when the environment names TLS
	// certificate files, which it does not read.
	OTLPEncoder string
	// SpanExporter, when set, replaces OTLP (tests record spans in memory).
	SpanExporter sdktrace.SpanExporter
	// SyncExport exports each span as it ends (tests); default batches.
	SyncExport bool
	// TraceSampleRatio is the share of tasks traced (nil: all), unless
	// OTEL_TRACES_SAMPLER is set (sampling.go).
	TraceSampleRatio *float64
	MetricsEnabled   bool
	// Registry receives the metrics; default a new one.
	Registry *prometheus.Registry
	Logger   *slog.Logger
}

// Provider owns the tracer and meter providers and the metric instruments.
type Provider struct {
	opts      Options
	tp        *sdktrace.TracerProvider
	tracer    trace.Tracer
	mp        *sdkmetric.MeterProvider
	meter     metric.Meter
	registry  *prometheus.Registry
	m         *Metrics
	publisher *Publisher
	// direct builds and exports the spans when set (instead of tp).
	direct *directTracers
	logger *slog.Logger
	regs   []metric.Registration
}

// NewProvider builds tracing (when enabled) and metrics (when enabled).
func NewProvider(ctx context.Context, opts Options) (*Provider, error) {
	if opts.ServiceName == "" {
		opts.ServiceName = "tasker-orchestrator"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	p := &Provider{opts: opts, logger: opts.Logger}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(opts.ServiceName)))
	if err != nil {
		res = resource.NewSchemaless(semconv.ServiceName(opts.ServiceName))
	}
	var sampling samplerSpec
	var sampler sdktrace.Sampler
	if opts.TracingEnabled || opts.SpanExporter != nil {
		if sampling, err = chooseSampler(opts.TraceSampleRatio, os.Getenv); err != nil {
			return nil, err
		}
		sampler = sampling.build()
		exp := opts.SpanExporter
		if exp == nil {
			exp, err = newOTLPExporter(ctx, opts)
			if err != nil {
				return nil, err
			}
		}
		var proc sdktrace.SpanProcessor
		if opts.SyncExport {
			proc = sdktrace.NewSimpleSpanProcessor(exp)
		} else {
			proc = sdktrace.NewBatchSpanProcessor(exp, batchOptions()...)
		}
		ids := newIDGenerator()
		p.tp = sdktrace.NewTracerProvider(
			sdktrace.WithResource(res),
			sdktrace.WithSpanProcessor(proc),
			sdktrace.WithIDGenerator(ids),
			sdktrace.WithSampler(sampler),
		)
		p.tracer = p.tp.Tracer(tracerName)
		// Spans skip the SDK's span objects when otlpwire exports them:
		// see otlpwire.Tracer.
		if ox, ok := exp.(*otlpwire.Exporter); ok && !opts.SyncExport {
			d := &directTracers{x: ox, base: directConfig(res, sampler, ids, opts.Logger), byScope: map[instrumentation.Scope]*otlpwire.Tracer{}}
			if t, err := d.tracer(instrumentation.Scope{Name: tracerName}); err != nil {
				opts.Logger.Info("spans built by the OpenTelemetry SDK", "reason", err)
			} else {
				p.direct, p.tracer = d, t
			}
		}
	} else {
		p.tracer = tracenoop.NewTracerProvider().Tracer("")
	}
	if opts.MetricsEnabled {
		p.registry = opts.Registry
		if p.registry == nil {
			p.registry = prometheus.NewRegistry()
			p.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		}
		exp, err := otelprom.New(otelprom.WithRegisterer(p.registry), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo(),
			otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes))
		if err != nil {
			return nil, fmt.Errorf("prometheus exporter: %w", err)
		}
		p.mp = sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(exp),
			sdkmetric.WithView(durationBuckets()))
		p.meter = p.mp.Meter("github.com/tasker/tasker")
	} else {
		p.meter = metricnoop.NewMeterProvider().Meter("")
	}
	p.m, err = NewMetrics(p.meter)
	if err != nil {
		return nil, err
	}
	p.publisher = &Publisher{tracer: p.tracer, tracing: p.tp != nil, m: p.m}
	if d, ok := p.tracer.(*otlpwire.Tracer); ok {
		p.publisher.direct = d
	}
	if p.tp != nil {
		p.publisher.sampler = sampler
		p.publisher.skipUnsampled = sampling.followsParent()
	}
	return p, nil
}

// durationBuckets gives every *_seconds histogram buckets from 1 ms to
// about 30 min, which covers step handlers and whole tasks.
func durationBuckets() sdkmetric.View {
	return sdkmetric.NewView(
		sdkmetric.Instrument{Kind: sdkmetric.InstrumentKindHistogram, Unit: "s"},
		sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{
			Boundaries: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800},
		}},
	)
}

func newOTLPExporter(ctx context.Context, opts Options) (sdktrace.SpanExporter, error) {
	proto := opts.OTLPProtocol
	if proto == "" {
		proto = "grpc"
	}
	switch opts.OTLPEncoder {
	case "", EncoderTasker:
		cfg, unsupported, err := otlpwire.Resolve(proto, opts.OTLPEndpoint, os.Getenv)
		if err != nil {
			return nil, fmt.Errorf("otlp exporter: %w", err)
		}
		if unsupported == "" {
			return otlpwire.New(cfg)
		}
		opts.Logger.Info("otlp exporter: using the OpenTelemetry SDK's, which reads TLS certificate files", "reason", unsupported)
	case EncoderSDK:
	default:
		return nil, fmt.Errorf("unknown OTLP encoder %q (want %s or %s)", opts.OTLPEncoder, EncoderTasker, EncoderSDK)
	}
	switch proto {
	case "grpc":
		var o []otlptracegrpc.Option
		if opts.OTLPEndpoint != "" {
			ep := opts.OTLPEndpoint
			if strings.HasPrefix(ep, "http://") {
				o = append(o, otlptracegrpc.WithInsecure())
				ep = strings.TrimPrefix(ep, "http://")
			}
			o = append(o, otlptracegrpc.WithEndpoint(ep))
			if strings.HasPrefix(ep, "localhost") || strings.HasPrefix(ep, "127.") {
				o = append(o, otlptracegrpc.WithInsecure())
			}
		}
		return otlptracegrpc.New(ctx, o...)
	case "http/protobuf", "http":
		var o []otlptracehttp.Option
		if opts.OTLPEndpoint != "" {
			o = append(o, otlptracehttp.WithEndpointURL(strings.TrimSuffix(opts.OTLPEndpoint, "/")+"/v1/traces"))
		}
		return otlptracehttp.New(ctx, o...)
	}
	return nil, fmt.Errorf("unknown OTLP protocol %q", proto)
}

// The span exporters Options.OTLPEncoder chooses from.
const (
	EncoderTasker = "tasker"
	EncoderSDK    = "sdk"
)

// Publisher returns the journal publisher.
func (p *Provider) Publisher() *Publisher { return p.publisher }

// Metrics returns the instruments.
func (p *Provider) Metrics() *Metrics { return p.m }

// TracerProvider is the provider of this process's tracers: otlpwire's
// when it exports the spans, otherwise the SDK's; a no-op one when tracing
// is off.
func (p *Provider) TracerProvider() trace.TracerProvider {
	if p.direct != nil {
		return p.direct
	}
	if p.tp == nil {
		return tracenoop.NewTracerProvider()
	}
	return p.tp
}

// directTracers is a TracerProvider handing out an otlpwire.Tracer per
// instrumentation scope, all exporting through one exporter.
type directTracers struct {
	embedded.TracerProvider
	x    *otlpwire.Exporter
	base otlpwire.TracerConfig

	mu      sync.Mutex
	byScope map[instrumentation.Scope]*otlpwire.Tracer
	closed  bool
}

// Tracer returns the scope's tracer, as the SDK's provider does (a no-op
// one after Shutdown).
func (d *directTracers) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	if name == "" {
		name = sdkDefaultTracerName
	}
	c := trace.NewTracerConfig(opts...)
	t, err := d.tracer(instrumentation.Scope{Name: name, Version: c.InstrumentationVersion(), SchemaURL: c.SchemaURL(), Attributes: c.InstrumentationAttributes()})
	if err != nil {
		return tracenoop.NewTracerProvider().Tracer(name)
	}
	return t
}

// sdkDefaultTracerName is the scope the SDK gives a tracer asked for
// without a name.
const sdkDefaultTracerName = "go.opentelemetry.io/otel/sdk/tracer"

func (d *directTracers) tracer(scope instrumentation.Scope) (*otlpwire.Tracer, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("tracing is shut down")
	}
	if t, ok := d.byScope[scope]; ok {
		return t, nil
	}
	cfg := d.base
	cfg.Scope, cfg.Provider = scope, d
	t, err := otlpwire.NewTracer(d.x, cfg)
	if err != nil {
		return nil, err
	}
	d.byScope[scope] = t
	return t, nil
}

// shutdown exports what every tracer holds and stops them.
func (d *directTracers) shutdown(ctx context.Context) error {
	d.mu.Lock()
	d.closed = true
	ts := make([]*otlpwire.Tracer, 0, len(d.byScope))
	for _, t := range d.byScope {
		ts = append(ts, t)
	}
	d.mu.Unlock()
	var errs []error
	for _, t := range ts {
		errs = append(errs, t.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// MeterProvider is the meter provider (a no-op one when metrics are off).
func (p *Provider) MeterProvider() metric.MeterProvider {
	if p.mp == nil {
		return metricnoop.NewMeterProvider()
	}
	return p.mp
}

// Registry is the Prometheus registry, nil when metrics are off.
func (p *Provider) Registry() *prometheus.Registry { return p.registry }

// MetricsHandler serves /metrics, nil when metrics are off.
func (p *Provider) MetricsHandler() http.Handler {
	if p.registry == nil {
		return nil
	}
	return promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(p.logger.Handler(), slog.LevelWarn)})
}

// PoisonMessage counts a message archived as poison.
func (p *Provider) PoisonMessage(queueName, reason string) {
	p.m.PoisonMessages.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("queue", queueName), attribute.String("reason", reason)))
}

// RetentionDeleted counts rows of a kind (store.PruneTasks and the others)
// deleted by the retention sweep.
func (p *Provider) RetentionDeleted(kind string, n int64) {
	p.m.RetentionDeleted.Add(context.Background(), n, metric.WithAttributes(attribute.String("kind", kind)))
}

// Shutdown flushes spans and stops the providers.
func (p *Provider) Shutdown(ctx context.Context) error {
	var errs []error
	for _, r := range p.regs {
		errs = append(errs, r.Unregister())
	}
	if p.direct != nil {
		errs = append(errs, p.direct.shutdown(ctx))
	}
	if p.tp != nil {
		errs = append(errs, p.tp.Shutdown(ctx))
	}
	if p.mp != nil {
		errs = append(errs, p.mp.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// HTTPMiddleware records tasker_http_requests_total and
// tasker_http_request_duration_seconds by method, route pattern and status.
func (p *Provider) HTTPMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		} else if _, path, ok := strings.Cut(route, " "); ok {
			route = path
		}
		attrs := metric.WithAttributes(attribute.String("method", r.Method), attribute.String("route", route),
			attribute.String("status", fmt.Sprint(rec.status)))
		p.m.HTTPRequests.Add(r.Context(), 1, attrs)
		p.m.HTTPDuration.Record(r.Context(), time.Since(start).Seconds(), attrs)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// tracerName is the instrumentation scope of the orchestrator's spans.
const tracerName = "github.com/tasker/tasker"

// directConfig configures the otlpwire.Tracer as batchOptions configures the
// SDK's batch span processor, with the same OTEL_BSP_* variables.
func directConfig(res *resource.Resource, sampler sdktrace.Sampler, ids sdktrace.IDGenerator, logger *slog.Logger) otlpwire.TracerConfig {
	return otlpwire.TracerConfig{
		Resource: res, Scope: instrumentation.Scope{Name: tracerName}, Sampler: sampler, IDs: ids, Logger: logger,
		QueueSize:     envInt("OTEL_BSP_MAX_QUEUE_SIZE", 64*1024),
		BatchSize:     envInt("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 4096),
		Delay:         time.Duration(envInt("OTEL_BSP_SCHEDULE_DELAY", sdktrace.DefaultScheduleDelay)) * time.Millisecond,
		ExportTimeout: time.Duration(envInt("OTEL_BSP_EXPORT_TIMEOUT", sdktrace.DefaultExportTimeout)) * time.Millisecond,
	}
}

// envInt reads a positive integer variable, def when unset or invalid (as
// the SDK reads its OTEL_BSP_* variables).
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(strings.TrimSpace(os.Getenv(name))); err == nil && n > 0 {
		return n
	}
	return def
}

// batchOptions sizes the span batcher for the engine's volume (about ten
// spans per step): the SDK's defaults (a queue of 2,048 spans, exports of
// 512) drop spans beyond a few hundred steps per second and send many small
// requests. OTEL_BSP_MAX_QUEUE_SIZE and OTEL_BSP_MAX_EXPORT_BATCH_SIZE still
// win when set.
func batchOptions() []sdktrace.BatchSpanProcessorOption {
	var o []sdktrace.BatchSpanProcessorOption
	if os.Getenv("OTEL_BSP_MAX_QUEUE_SIZE") == "" {
		o = append(o, sdktrace.WithMaxQueueSize(64*1024))
	}
	if os.Getenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") == "" {
		o = append(o, sdktrace.WithMaxExportBatchSize(4096))
	}
	return o
}
