package otlpwire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracer is a trace.Tracer that encodes each span into an OTLP request as
// it ends and sends the requests through an Exporter: no SDK span object,
// snapshot or span processor in between. The orchestrator builds a dozen
// spans per step after the fact, from each transaction's journal; through
// the SDK, building them cost as much as encoding them (docs/performance.md,
// row 77).
//
// It does what the SDK's tracer with a batch span processor does, and the
// encoded spans decode to what the SDK's would (tracer_test.go compares
// them): the same ids from the same IDGenerator, the same sampler
// decisions, span kinds, start and end times, attribute de-duplication
// (the last value of a key wins) and count limits, event and link
// eviction, status rules and exception events; only sampled spans are
// exported. Two things it leaves out, which NewTracer refuses or the
// caller must not need: a limit on attribute value length
// (OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT) and the normalisation of
// nested map and slice values (their keys de-duplicated, their depth
// limited), which the engine's attributes never are.
//
// Spans are exported in batches of BatchSize, or every Delay, by one
// goroutine; at most QueueSize spans wait, and spans beyond that are dropped
// and counted in a warning, as the SDK's batch processor drops them.
type Tracer struct {
	embedded.Tracer
	x       *Exporter
	res     *resource.Resource
	scope   instrumentation.Scope
	sampler sdktrace.Sampler
	// followParent: the sampler follows a valid parent's decision (see
	// ParentFollower), so spans with one are decided without asking it.
	followParent bool
	ids          sdktrace.IDGenerator
	limits       sdktrace.SpanLimits
	cfg          TracerConfig
	logger       *slog.Logger

	mu      sync.Mutex
	cur     []byte // spans encoded since the last hand-over
	curN    int
	queued  int // spans handed over and not yet exported
	dropped int64
	closed  bool

	full     chan spanBatch       // batches of BatchSize, to the export goroutine
	flushes  chan chan struct{}   // ForceFlush requests
	free     chan []byte          // buffers of exported batches, for reuse
	done     chan struct{}        // closed by Shutdown
	exited   chan struct{}        // closed when the export goroutine returns
	provider trace.TracerProvider // what the spans' TracerProvider returns
}

// TracerConfig configures NewTracer. Zero values take the defaults of the
// SDK's tracer provider and batch span processor, except where noted.
type TracerConfig struct {
	Resource *resource.Resource
	Scope    instrumentation.Scope
	// Sampler decides as the SDK's would (default: parent-based always-on).
	Sampler sdktrace.Sampler
	// IDs generates trace and span ids (required).
	IDs sdktrace.IDGenerator
	// Limits bounds attributes, events and links (default:
	// sdktrace.NewSpanLimits, which reads OTEL_SPAN_*_LIMIT).
	Limits *sdktrace.SpanLimits
	// QueueSize is the most spans waiting for export (default 2,048),
	// BatchSize the most in one request (default 512), Delay the longest a
	// span waits for a batch to fill (default 5 s), ExportTimeout the
	// longest one export with its retries may take (default 30 s).
	QueueSize     int
	BatchSize     int
	Delay         time.Duration
	ExportTimeout time.Duration
	Logger        *slog.Logger
	// Provider is what the spans' TracerProvider method returns (default:
	// a provider of no-op tracers).
	Provider trace.TracerProvider
}

type spanBatch struct {
	buf []byte
	n   int
}

// ParentFollower is a sampler that says whether it decides every span with
// a valid parent (remote or local) as sdktrace.ParentBased with its default
// options does: sampled, with the parent's tracestate and no attributes,
// when the parent is sampled, otherwise dropped. When FollowsParent is
// true the Tracer makes that decision itself for such spans, without
// calling ShouldSample.
type ParentFollower interface {
	FollowsParent() bool
}

// NewTracer starts a Tracer exporting through x. Shutdown stops it; it does
// not shut x down.
func NewTracer(x *Exporter, cfg TracerConfig) (*Tracer, error) {
	limits := sdktrace.NewSpanLimits()
	if cfg.Limits != nil {
		limits = *cfg.Limits
	}
	if limits.AttributeValueLengthLimit >= 0 {
		return nil, fmt.Errorf("otlpwire tracer: an attribute value length limit (%d) is not supported", limits.AttributeValueLengthLimit)
	}
	if cfg.Sampler == nil {
		cfg.Sampler = sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
	if cfg.IDs == nil {
		return nil, errors.New("otlpwire tracer: no id generator")
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = sdktrace.DefaultMaxQueueSize
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = sdktrace.DefaultMaxExportBatchSize
	}
	cfg.BatchSize = min(cfg.BatchSize, cfg.QueueSize)
	if cfg.Delay <= 0 {
		cfg.Delay = sdktrace.DefaultScheduleDelay * time.Millisecond
	}
	if cfg.ExportTimeout <= 0 {
		cfg.ExportTimeout = sdktrace.DefaultExportTimeout * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Provider == nil {
		cfg.Provider = noop.NewTracerProvider()
	}
	batches := max(1, cfg.QueueSize/cfg.BatchSize)
	pf, _ := cfg.Sampler.(ParentFollower)
	t := &Tracer{followParent: pf != nil && pf.FollowsParent(),
		x: x, res: cfg.Resource, scope: cfg.Scope, sampler: cfg.Sampler, ids: cfg.IDs, limits: limits, cfg: cfg, logger: cfg.Logger,
		full: make(chan spanBatch, batches), flushes: make(chan chan struct{}), free: make(chan []byte, batches+1),
		done: make(chan struct{}), exited: make(chan struct{}), provider: cfg.Provider,
	}
	go t.loop()
	return t, nil
}

// Start starts a span, as the SDK's tracer does.
func (t *Tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	cfg := trace.NewSpanStartConfig(opts...)
	// The configuration's attribute slice is its own copy of the options'
	// (and the configuration is dropped here): it can be kept.
	return t.start(ctx, name, cfg.NewRoot(), cfg.SpanKind(), cfg.Links(), cfg.Timestamp(), cfg.Attributes())
}

// StartAt is Start with trace.WithTimestamp(at) and
// trace.WithAttributes(attrs...), minus the options' processing and copies:
// attrs is kept as it is, so the caller must not change it afterwards. The
// span it returns has AddEventAt and EndAt, the same shortcuts for its
// events and end. The orchestrator's publisher, which builds a dozen spans
// per step from its journal, uses them.
func (t *Tracer) StartAt(ctx context.Context, name string, at time.Time, attrs []attribute.KeyValue) (context.Context, trace.Span) {
	return t.start(ctx, name, false, trace.SpanKindUnspecified, nil, at, attrs[:len(attrs):len(attrs)])
}

// start starts a span, keeping attrs (which no one else changes).
func (t *Tracer) start(ctx context.Context, name string, newRoot bool, kind trace.SpanKind, links []trace.Link, at time.Time, attrs []attribute.KeyValue) (context.Context, trace.Span) {
	if ctx == nil {
		ctx = context.Background()
	}
	var psc trace.SpanContext
	sctx := ctx // what the id generator and the sampler see
	if newRoot {
		sctx = trace.ContextWithSpanContext(ctx, psc)
	} else {
		psc = trace.SpanContextFromContext(ctx)
	}
	var tid trace.TraceID
	var sid trace.SpanID
	if !psc.TraceID().IsValid() {
		tid, sid = t.ids.NewIDs(sctx)
	} else {
		tid = psc.TraceID()
		sid = t.ids.NewSpanID(sctx, tid)
	}
	var sr sdktrace.SamplingResult
	if t.followParent && psc.IsValid() {
		// What the parent-based samplers answer for a span with a parent
		// (their defaults: sampled parents always, others never), without
		// the call: it looked the parent up in the context twice more and
		// was half of starting a span (BenchmarkPublishTracedExported).
		sr = sdktrace.SamplingResult{Decision: sdktrace.Drop, Tracestate: psc.TraceState()}
		if psc.IsSampled() {
			sr.Decision = sdktrace.RecordAndSample
		}
	} else {
		sr = t.sampler.ShouldSample(sdktrace.SamplingParameters{
			ParentContext: sctx, TraceID: tid, Name: name, Kind: kind, Attributes: attrs, Links: links,
		})
	}
	flags := psc.TraceFlags() &^ trace.FlagsSampled
	if sr.Decision == sdktrace.RecordAndSample {
		flags |= trace.FlagsSampled
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, TraceState: sr.Tracestate})
	if sr.Decision == sdktrace.Drop {
		s := nonRecordingSpan{sc: sc, tp: t.provider}
		return trace.ContextWithSpan(ctx, s), s
	}
	if at.IsZero() {
		at = time.Now()
	}
	s := &span{t: t, f: spanFields{sc: sc, parent: psc, name: name, kind: trace.ValidateSpanKind(kind), start: at}}
	for _, l := range links {
		s.addLink(l)
	}
	s.setAttributes(sr.Attributes)
	if len(s.f.attrs) == 0 && s.allValid(attrs) {
		s.f.attrs, s.dirty, s.shared = attrs, len(attrs) > 1, true
	} else {
		s.setAttributes(attrs)
	}
	return trace.ContextWithSpan(ctx, s), s
}

// span is a recording span of a Tracer.
type span struct {
	embedded.Span
	t     *Tracer
	mu    sync.Mutex
	ended bool
	dirty bool // attributes may hold a key twice
	// shared: the attributes are the caller's slice (StartAt), to copy
	// before writing over any of them.
	shared bool
	f      spanFields
}

func (s *span) SpanContext() trace.SpanContext { return s.f.sc }

func (s *span) IsRecording() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.ended
}

func (s *span) TracerProvider() trace.TracerProvider { return s.t.provider }

func (s *span) SetName(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.f.name = name
	}
}

func (s *span) SetStatus(code codes.Code, description string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.f.status.Code > code {
		return
	}
	st := sdktrace.Status{Code: code}
	if code == codes.Error {
		st.Description = description
	}
	s.f.status = st
}

func (s *span) SetAttributes(kv ...attribute.KeyValue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.setAttributes(kv)
	}
}

// setAttributes adds kv as the SDK does: invalid ones are dropped, and
// beyond the count limit new keys are dropped while known keys still take
// their new value. s.mu is held (or s not yet shared).
func (s *span) setAttributes(kv []attribute.KeyValue) {
	if len(kv) == 0 {
		return
	}
	limit := s.t.limits.AttributeCountLimit
	if limit == 0 {
		s.f.droppedAttrs += len(kv)
		return
	}
	if limit < 0 || len(s.f.attrs)+len(kv) <= limit {
		for _, a := range kv {
			if !a.Valid() {
				s.f.droppedAttrs++
				continue
			}
			s.f.attrs = append(s.f.attrs, a)
			s.dirty = true
		}
		return
	}
	s.dedupe()
	if s.shared {
		s.f.attrs, s.shared = slices.Clone(s.f.attrs), false
	}
	for _, a := range kv {
		if !a.Valid() {
			s.f.droppedAttrs++
			continue
		}
		if i := s.index(a.Key); i >= 0 {
			s.f.attrs[i] = a
			continue
		}
		if len(s.f.attrs) >= limit {
			s.f.droppedAttrs++
			continue
		}
		s.f.attrs = append(s.f.attrs, a)
	}
}

// allValid reports whether kv can be kept as it is: every attribute valid
// and within the count limit.
func (s *span) allValid(kv []attribute.KeyValue) bool {
	if limit := s.t.limits.AttributeCountLimit; limit >= 0 && len(kv) > limit {
		return false
	}
	for i := range kv {
		if !kv[i].Valid() {
			return false
		}
	}
	return true
}

func (s *span) index(k attribute.Key) int {
	for i := range s.f.attrs {
		if s.f.attrs[i].Key == k {
			return i
		}
	}
	return -1
}

// dedupe keeps each key once, at its first place, with its last value. The
// slice may be shared (StartAt keeps the caller's): it is left as it is
// when no key repeats, and rewritten into a new one when one does.
func (s *span) dedupe() {
	if !s.dirty {
		return
	}
	s.dirty = false
	if !s.repeats() {
		return
	}
	unique := make([]attribute.KeyValue, 0, len(s.f.attrs))
	for _, a := range s.f.attrs {
		found := false
		for i := range unique {
			if unique[i].Key == a.Key {
				unique[i] = a
				found = true
				break
			}
		}
		if !found {
			unique = append(unique, a)
		}
	}
	s.f.attrs = unique
}

// repeats reports whether a key appears twice in the attributes.
func (s *span) repeats() bool {
	a := s.f.attrs
	for i := 1; i < len(a); i++ {
		for j := range i {
			if a[j].Key == a[i].Key {
				return true
			}
		}
	}
	return false
}

func (s *span) AddEvent(name string, opts ...trace.EventOption) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.addEvent(name, opts...)
	}
}

// AddEventAt is AddEvent with trace.WithTimestamp(at) and
// trace.WithAttributes(attrs...), without the options: attrs is kept as it
// is, so the caller must not change it afterwards.
func (s *span) AddEventAt(name string, at time.Time, attrs []attribute.KeyValue) {
	if at.IsZero() {
		at = time.Now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.addEventAt(name, at, attrs)
	}
}

func (s *span) addEvent(name string, opts ...trace.EventOption) {
	c := trace.NewEventConfig(opts...)
	s.addEventAt(name, c.Timestamp(), c.Attributes())
}

func (s *span) addEventAt(name string, at time.Time, attrs []attribute.KeyValue) {
	e := sdktrace.Event{Name: name, Attributes: attrs, Time: at}
	if limit := s.t.limits.AttributePerEventCountLimit; limit == 0 {
		e.DroppedAttributeCount, e.Attributes = len(e.Attributes), nil
	} else if limit > 0 && len(e.Attributes) > limit {
		e.DroppedAttributeCount, e.Attributes = len(e.Attributes)-limit, e.Attributes[:limit]
	}
	s.f.events, s.f.droppedEvents = evict(s.f.events, s.f.droppedEvents, s.t.limits.EventCountLimit, e)
}

func (s *span) AddLink(l trace.Link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.addLink(l)
	}
}

func (s *span) addLink(link trace.Link) {
	if !link.SpanContext.IsValid() && len(link.Attributes) == 0 && link.SpanContext.TraceState().Len() == 0 {
		return
	}
	l := sdktrace.Link{SpanContext: link.SpanContext, Attributes: link.Attributes}
	if limit := s.t.limits.AttributePerLinkCountLimit; limit == 0 {
		l.DroppedAttributeCount, l.Attributes = len(l.Attributes), nil
	} else if limit > 0 && len(l.Attributes) > limit {
		l.DroppedAttributeCount, l.Attributes = len(l.Attributes)-limit, l.Attributes[:limit]
	}
	s.f.links, s.f.droppedLinks = evict(s.f.links, s.f.droppedLinks, s.t.limits.LinkCountLimit, l)
}

// evict appends v to q, holding at most limit (negative: no limit), the
// oldest dropped first.
func evict[T any](q []T, dropped, limit int, v T) ([]T, int) {
	if limit == 0 {
		return q, dropped + 1
	}
	if q == nil && (limit < 0 || limit > 1) {
		q = make([]T, 0, 4) // spans carry a few events: grow once, not from one
	}
	if limit > 0 && len(q) == limit {
		copy(q, q[1:])
		q = q[:limit-1]
		dropped++
	}
	return append(q, v), dropped
}

// RecordError adds an exception event, as the SDK's spans do.
func (s *span) RecordError(err error, opts ...trace.EventOption) {
	if err == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	opts = append(opts, trace.WithAttributes(semconv.ExceptionType(errorType(err)), semconv.ExceptionMessage(err.Error())))
	if c := trace.NewEventConfig(opts...); c.StackTrace() {
		opts = append(opts, trace.WithAttributes(semconv.ExceptionStacktrace(stackTrace())))
	}
	s.addEvent(semconv.ExceptionEventName, opts...)
}

// End ends the span and, when it is sampled, encodes it for export.
func (s *span) End(opts ...trace.SpanEndOption) {
	c := trace.NewSpanEndConfig(opts...)
	s.EndAt(c.Timestamp())
}

// EndAt is End with trace.WithTimestamp(at) (now when zero), without the
// option.
func (s *span) EndAt(at time.Time) {
	now := time.Now()
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	if !at.IsZero() {
		s.f.end = at
	} else {
		s.f.end = s.f.start.Add(now.Sub(s.f.start))
	}
	s.dedupe()
	// The SDK's snapshot reports dropped events and links only beside
	// some that were kept.
	if len(s.f.events) == 0 {
		s.f.droppedEvents = 0
	}
	if len(s.f.links) == 0 {
		s.f.droppedLinks = 0
	}
	s.mu.Unlock()
	if s.f.sc.IsSampled() {
		s.t.add(&s.f)
	}
}

// add encodes a span into the current batch, handing the batch to the
// export goroutine when full.
func (t *Tracer) add(f *spanFields) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.queued+t.curN >= t.cfg.QueueSize {
		t.dropped++
		return
	}
	e := encoder{b: t.cur}
	e.spanFields(f)
	t.cur = e.b
	t.curN++
	if t.curN >= t.cfg.BatchSize {
		t.handOver()
	}
}

// handOver queues the current batch for export (t.mu held). The channel
// has room: t.queued counts what it holds, within QueueSize, and add
// drops spans beyond that. Were it full all the same, the batch would be
// dropped rather than the caller blocked.
func (t *Tracer) handOver() {
	select {
	case t.full <- spanBatch{buf: t.cur, n: t.curN}:
		t.queued += t.curN
	default:
		t.dropped += int64(t.curN)
		t.cur, t.curN = t.cur[:0], 0
		return
	}
	t.curN = 0
	t.cur = t.freeBuffer()
}

// freeBuffer is the buffer of an exported batch, emptied, or nil.
func (t *Tracer) freeBuffer() []byte {
	select {
	case b := <-t.free:
		return b[:0]
	default:
		return nil
	}
}

// take returns the current batch, partly filled, for export now.
func (t *Tracer) take() spanBatch {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.curN == 0 {
		return spanBatch{}
	}
	b := spanBatch{buf: t.cur, n: t.curN}
	t.queued += t.curN
	t.curN = 0
	t.cur = t.freeBuffer()
	return b
}

func (t *Tracer) loop() {
	defer close(t.exited)
	tick := time.NewTicker(t.cfg.Delay)
	defer tick.Stop()
	drain := func() {
		for {
			select {
			case b := <-t.full:
				t.export(b)
			default:
				t.export(t.take())
				return
			}
		}
	}
	for {
		select {
		case b := <-t.full:
			t.export(b)
		case <-tick.C:
			t.export(t.take())
		case reply := <-t.flushes:
			drain()
			close(reply)
		case <-t.done:
			drain()
			return
		}
	}
}

// export sends a batch and recycles its buffer; a failure is logged, as
// the SDK's batch processor hands it to the error handler.
func (t *Tracer) export(b spanBatch) {
	if b.n == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.ExportTimeout)
	err := t.x.exportEncoded(ctx, t.res, t.scope, b.buf)
	cancel()
	t.mu.Lock()
	t.queued -= b.n
	dropped := t.dropped
	t.dropped = 0
	t.mu.Unlock()
	if err != nil {
		t.logger.Warn("span export failed", "spans", b.n, "err", err)
	}
	if dropped > 0 {
		t.logger.Warn("spans dropped: the export queue was full", "spans", dropped, "queue_size", t.cfg.QueueSize)
	}
	if cap(b.buf) <= 64<<20 { // a batch of outsized spans must not pin its buffer
		select {
		case t.free <- b.buf[:0]:
		default:
		}
	}
}

// ForceFlush exports every span ended so far.
func (t *Tracer) ForceFlush(ctx context.Context) error {
	reply := make(chan struct{})
	select {
	case t.flushes <- reply:
	case <-t.exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-reply:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is left and stops the export goroutine. Spans
// ended later are dropped.
func (t *Tracer) Shutdown(ctx context.Context) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	close(t.done)
	select {
	case <-t.exited:
		return nil
	case <-ctx.Done():
		return errors.Join(errors.New("otlpwire tracer: spans left unexported at shutdown"), ctx.Err())
	}
}

// nonRecordingSpan is a span the sampler dropped: it carries its context
// to children and records nothing.
type nonRecordingSpan struct {
	noop.Span
	sc trace.SpanContext
	tp trace.TracerProvider
}

func (s nonRecordingSpan) SpanContext() trace.SpanContext       { return s.sc }
func (s nonRecordingSpan) TracerProvider() trace.TracerProvider { return s.tp }

// errorType names err's type as the SDK's exception events do: package
// path and name, or the type's literal for an unnamed one.
func errorType(err error) string {
	t := reflect.TypeOf(err)
	if t.PkgPath() == "" && t.Name() == "" {
		return t.String()
	}
	return t.PkgPath() + "." + t.Name()
}

// stackTrace is the calling goroutine's stack, up to 2 KiB.
func stackTrace() string {
	b := make([]byte, 2048)
	return string(b[:runtime.Stack(b, false)])
}
