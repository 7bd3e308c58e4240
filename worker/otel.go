package worker

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker/tasker/internal/attrcache"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/traceparent"
)

// OTelObserver publishes the worker-side system events (step.execution_requested,
// step.before_handle, step.handle, step.result_submitted and the
// step.before_transition of the claim and the submission) as span events in
// the task's trace and as metrics, with the same names the orchestrator uses:
// tasker_events_total, tasker_step_state_transitions_total,
// tasker_step_execution_duration_seconds and tasker_step_attempts_total,
// and the steps it follows now as tasker_worker_steps_in_flight. It is a
// PoisonObserver too: tasker_poison_messages_total{queue,reason}.
//
// Its counters are summed in the observer and added to the meter's
// counters when the meter collects, which it does for every scrape and
// export: a collection sees every increment made before it, as with
// direct Adds, for a fraction of their cost.
type OTelObserver struct {
	tracer trace.Tracer
	// timed is tracer's shortcut when it has one (timedTracer).
	timed       timedTracer
	events      metric.Int64Counter
	transitions metric.Int64Counter
	duration    metric.Float64Histogram
	attempts    metric.Int64Counter
	poison      metric.Int64Counter
	inFlight    metric.Int64ObservableGauge
	// attrs holds the measurements' attribute sets (internal/attrcache).
	attrs *attrcache.Cache[otelAttrKey]

	// mu guards sums and running. sums are the increments of events,
	// transitions and attempts since the meter last collected; collect adds
	// them to their counters, so every collection sees every increment
	// made before it. An Add through the OpenTelemetry SDK resolves its
	// attribute set each time (about a microsecond) and a step makes nine;
	// a map increment costs a few dozen nanoseconds. running counts, by
	// namespace, the steps claimed and not yet ended
	// (tasker_worker_steps_in_flight).
	mu      sync.Mutex
	sums    map[otelAttrKey]int64
	running map[string]int64
}

// NewOTelObserver builds an observer on the given providers (use the
// otel/…/noop providers to turn either off).
func NewOTelObserver(tp trace.TracerProvider, mp metric.MeterProvider) (*OTelObserver, error) {
	// The same scope as the orchestrator's instruments, so that a process
	// running both (tests, an embedded worker) aggregates into one series.
	meter := mp.Meter("github.com/tasker/tasker")
	o := &OTelObserver{tracer: tp.Tracer("github.com/tasker/tasker/worker"), attrs: attrcache.New(otelAttrs),
		sums: map[otelAttrKey]int64{}, running: map[string]int64{}}
	o.timed, _ = o.tracer.(timedTracer)
	var err error
	if o.events, err = meter.Int64Counter("tasker_events", metric.WithDescription("System events published (the 35 names of the event catalog).")); err != nil {
		return nil, err
	}
	if o.transitions, err = meter.Int64Counter("tasker_step_state_transitions", metric.WithDescription("Step state transitions.")); err != nil {
		return nil, err
	}
	if o.duration, err = meter.Float64Histogram("tasker_step_execution_duration", metric.WithUnit("s"),
		metric.WithDescription("Step handler run time in the worker, by outcome.")); err != nil {
		return nil, err
	}
	if o.attempts, err = meter.Int64Counter("tasker_step_attempts", metric.WithDescription("Step attempts finished by workers, by outcome.")); err != nil {
		return nil, err
	}
	if o.poison, err = meter.Int64Counter("tasker_poison_messages", metric.WithDescription("Queue messages archived because they can never be processed.")); err != nil {
		return nil, err
	}
	if o.inFlight, err = meter.Int64ObservableGauge("tasker_worker_steps_in_flight",
		metric.WithDescription("Steps this process's Go workers have claimed and not yet finished (running, or waiting for their submission).")); err != nil {
		return nil, err
	}
	// The callback runs when the meter collects (a scrape, an export),
	// before the collection reads the counters: the counts gathered since
	// the last one are added first. The observer lives as long as its
	// provider; the registration is never undone.
	if _, err = meter.RegisterCallback(o.collect, o.inFlight); err != nil {
		return nil, err
	}
	return o, nil
}

// count adds one to the counter of k (events, transitions or attempts, by
// k.kind) at the meter's next collection.
func (o *OTelObserver) count(k otelAttrKey) {
	o.mu.Lock()
	o.sums[k]++
	o.mu.Unlock()
}

// collect adds the counts gathered since the last collection to their
// counters and observes the steps in flight.
func (o *OTelObserver) collect(ctx context.Context, obs metric.Observer) error {
	o.mu.Lock()
	sums := o.sums
	o.sums = make(map[otelAttrKey]int64, len(sums))
	for ns, n := range o.running {
		obs.ObserveInt64(o.inFlight, n, o.attrs.Option(otelAttrKey{kind: otelInFlight, a: ns}))
	}
	o.mu.Unlock()
	for k, n := range sums {
		c := o.events
		switch k.kind {
		case otelTransition:
			c = o.transitions
		case otelHandler:
			c = o.attempts
		}
		c.Add(ctx, n, o.attrs.Option(k))
	}
	return nil
}

// PublishesWorkerEvents implements EventPublisher: the observer publishes
// the worker-side events, so the orchestrator does not repeat them.
func (o *OTelObserver) PublishesWorkerEvents() bool { return true }

// PoisonMessage implements PoisonObserver.
func (o *OTelObserver) PoisonMessage(queue, reason string) {
	o.poison.Add(context.Background(), 1, o.attrs.Option(otelAttrKey{kind: otelPoison, a: queue, b: reason}))
}

// timedTracer and timedSpan are the shortcuts of the tracers the
// orchestrator's telemetry builds when it exports OTLP itself (the default;
// internal/otlpwire): a span started at a time with attributes, an event
// added at a time with attributes and an end at a time, without the
// OpenTelemetry API's options. The attribute slices are kept as they are
// (the caller does not change them afterwards), where the options copy
// them into configurations: a step's six base attributes went into each of
// its spans and events that way, about 19 KB of copies per step
// (BenchmarkObserverStep). With any other tracer the observer goes through
// the API; both give the same spans (telemetry's otlp_export_test.go).
type timedTracer interface {
	StartAt(ctx context.Context, name string, at time.Time, attrs []attribute.KeyValue) (context.Context, trace.Span)
}

type timedSpan interface {
	AddEventAt(name string, at time.Time, attrs []attribute.KeyValue)
	EndAt(at time.Time)
}

// start starts a child span of the step at a time (now when zero) with
// attrs, which it keeps.
func (o *OTelObserver) start(ctx context.Context, name string, at time.Time, attrs []attribute.KeyValue) (context.Context, trace.Span) {
	if o.timed != nil {
		return o.timed.StartAt(ctx, name, at, attrs)
	}
	if at.IsZero() {
		return o.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
	}
	return o.tracer.Start(ctx, name, trace.WithTimestamp(at), trace.WithAttributes(attrs...))
}

// endAt ends a span at a time (now when zero).
func endAt(s trace.Span, at time.Time) {
	if d, ok := s.(timedSpan); ok {
		d.EndAt(at)
		return
	}
	if at.IsZero() {
		s.End()
		return
	}
	s.End(trace.WithTimestamp(at))
}

// with returns the step's base attributes followed by extra, in a slice of
// its own.
func (s *otelStepSpan) with(extra ...attribute.KeyValue) []attribute.KeyValue {
	if len(extra) == 0 {
		return s.base
	}
	return append(s.base[:len(s.base):len(s.base)], extra...)
}

// remoteParent makes the task root's span context, rebuilt from a
// traceparent, the remote parent of ctx. Its sampled flag is the
// orchestrator's decision for the task's whole trace: a parent-based
// sampler (the SDK's default) follows it.
func remoteParent(ctx context.Context, tp string) context.Context {
	sc, ok := traceparent.SpanContext(tp)
	if !ok {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

// StepClaimed implements Observer.
//
// A step whose span is not recorded (tracing off, or a trace the sampler
// left out) gets no child spans, events or attributes, which would be
// built only to be dropped; its metrics are recorded all the same. The
// span's attributes are therefore set once it is known to record, not at
// its start (the SDK's samplers decide on the parent and the trace id).
func (o *OTelObserver) StepClaimed(ctx context.Context, s *Step) (context.Context, StepSpan) {
	now := time.Now()
	sctx, span := o.start(remoteParent(ctx, s.TraceParent), "step_execution", now, nil)
	ss := &otelStepSpan{o: o, step: s, ctx: sctx, span: span, rec: span.IsRecording()}
	o.mu.Lock()
	o.running[s.Namespace]++
	o.mu.Unlock()
	if ss.rec {
		ss.base = []attribute.KeyValue{
			attribute.String("correlation_id", s.CorrelationID.String()),
			attribute.String("task_uuid", s.TaskUUID.String()),
			attribute.String("namespace", s.Namespace),
			attribute.String("step_uuid", s.StepUUID.String()),
			attribute.String("step_name", s.Name),
			attribute.Int("attempt", s.Attempt),
		}
		span.SetAttributes(ss.with(attribute.String("handler_name", s.Handler))...)
	}
	ss.transition(lifecycle.StepEnqueued, lifecycle.StepInProgress, now, time.Now(), true)
	return sctx, ss
}

type otelStepSpan struct {
	o    *OTelObserver
	step *Step
	ctx  context.Context
	span trace.Span
	// rec: the step's span is recorded; base are then its attributes,
	// which every span and event of the step carries, first. base is
	// never changed: spans and events may keep it (timedTracer).
	rec     bool
	base    []attribute.KeyValue
	mu      sync.Mutex
	handler trace.Span
	submit  trace.Span
	// sentAt is when the stored submission was sent to the database: the
	// step's spans end then, before the commit that lets the orchestrator
	// finish the task, so they always lie inside the task's root span.
	sentAt time.Time
	// ended: End has taken the step out of the steps in flight (guarded
	// by o.mu).
	ended bool
}

// submittedAt records when the submission that was stored was sent.
func (s *otelStepSpan) submittedAt(at time.Time) {
	s.mu.Lock()
	s.sentAt = at
	s.mu.Unlock()
}

// event adds an event to span with attrs (the base attributes first; see
// with), which the span may keep, and counts it.
func (s *otelStepSpan) event(span trace.Span, name lifecycle.EventName, at time.Time, attrs []attribute.KeyValue) {
	if s.rec {
		if d, ok := span.(timedSpan); ok {
			d.AddEventAt(string(name), at, attrs)
		} else {
			span.AddEvent(string(name), trace.WithTimestamp(at), trace.WithAttributes(attrs...))
		}
	}
	s.o.count(otelAttrKey{kind: otelEvent, a: string(name), b: s.step.Namespace})
}

// transition records a step transition made by this worker as a
// step_state_transition span with step.before_transition and, when mapped,
// the transition's event (step.execution_requested for the claim; the
// submission's step.result_submitted goes on the result_submission span, as
// the event catalog says).
func (s *otelStepSpan) transition(from, to lifecycle.StepState, at, end time.Time, mapped bool) {
	ts := unrecorded
	var attrs []attribute.KeyValue
	if s.rec {
		// One slice for the span and its events, which keep it.
		attrs = s.with(attribute.String("from_state", string(from)), attribute.String("to_state", string(to)))
		_, ts = s.o.start(s.ctx, "step_state_transition", at, attrs)
	}
	s.event(ts, lifecycle.EventStepBeforeTransition, at, attrs)
	if ev, ok := lifecycle.StepTransitionEvent(from, to); ok && mapped {
		s.event(ts, ev, at, attrs)
	}
	endAt(ts, end)
	s.o.count(otelAttrKey{kind: otelTransition, a: string(from), b: string(to), c: s.step.Namespace})
}

// unrecorded stands for the child spans of a step whose span is not
// recorded: its End and AddEvent do nothing.
var unrecorded = trace.SpanFromContext(context.Background())

func (s *otelStepSpan) BeforeHandle(ctx context.Context) context.Context {
	now := time.Now()
	s.event(s.span, lifecycle.EventStepBeforeHandle, now, s.base)
	hctx, hs := ctx, unrecorded
	if s.rec {
		hctx, hs = s.o.start(ctx, "handler_execution", now, s.with(attribute.String("handler_name", s.step.Handler)))
	}
	s.event(hs, lifecycle.EventStepHandle, now, s.base)
	s.mu.Lock()
	s.handler = hs
	s.mu.Unlock()
	return hctx
}

func (s *otelStepSpan) BeforeSubmit(ctx context.Context) context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handler != nil {
		endAt(s.handler, time.Time{})
		s.handler = nil
	}
	if !s.rec {
		s.submit = unrecorded
		return ctx
	}
	sctx, sub := s.o.start(trace.ContextWithSpan(ctx, s.span), "result_submission", time.Time{}, s.base)
	s.submit = sub
	return sctx
}

func (s *otelStepSpan) TraceParent() string {
	sc := s.span.SpanContext()
	if !sc.IsValid() {
		return s.step.TraceParent
	}
	return traceparent.Format(sc)
}

func (s *otelStepSpan) End(outcome Outcome, d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now, end := time.Now(), time.Now()
	if !s.sentAt.IsZero() {
		// The transition span [sentAt, +1µs] and the submission span end
		// within the step span, which ends 2µs after sentAt.
		now, end = s.sentAt, s.sentAt.Add(2*time.Microsecond)
	}
	if s.handler != nil {
		endAt(s.handler, time.Time{})
	}
	label := string(outcome)
	hk := otelAttrKey{kind: otelHandler, a: s.step.Handler, b: s.step.Namespace, c: label}
	s.o.duration.Record(context.Background(), d.Seconds(), s.o.attrs.Option(hk))
	s.o.mu.Lock()
	s.o.sums[hk]++
	if !s.ended {
		s.ended = true
		s.o.running[s.step.Namespace]--
	}
	s.o.mu.Unlock()
	if s.submit != nil {
		if outcome == outcomeSucceeded || outcome == outcomeFailed {
			to := lifecycle.StepEnqueuedForOrchestration
			if outcome == outcomeFailed {
				to = lifecycle.StepEnqueuedAsErrorForOrchestration
			}
			s.transition(lifecycle.StepInProgress, to, now, now.Add(time.Microsecond), false)
			var attrs []attribute.KeyValue
			if s.rec {
				attrs = s.with(attribute.String("from_state", string(lifecycle.StepInProgress)),
					attribute.String("to_state", string(to)), attribute.String("outcome", label))
			}
			s.event(s.submit, lifecycle.EventStepResultSubmitted, now, attrs)
		}
		endAt(s.submit, now.Add(time.Microsecond))
	}
	if s.rec {
		if err != nil {
			s.span.RecordError(err, trace.WithAttributes(s.base...))
			s.span.SetStatus(codes.Error, err.Error())
		}
		s.span.SetAttributes(attribute.String("outcome", label))
	}
	endAt(s.span, end)
}

// otelAttrKey names one attribute set of the worker's measurements.
type otelAttrKey struct {
	kind    uint8
	a, b, c string
}

const (
	otelEvent      = iota // event=a, namespace=b
	otelTransition        // from_state=a, to_state=b, namespace=c
	otelHandler           // handler_name=a, namespace=b, outcome=c
	otelPoison            // queue=a, reason=b
	otelInFlight          // namespace=a
)

func otelAttrs(k otelAttrKey) []attribute.KeyValue {
	switch k.kind {
	case otelEvent:
		return []attribute.KeyValue{attribute.String("event", k.a), attribute.String("namespace", k.b)}
	case otelTransition:
		return []attribute.KeyValue{attribute.String("from_state", k.a), attribute.String("to_state", k.b), attribute.String("namespace", k.c)}
	case otelPoison:
		return []attribute.KeyValue{attribute.String("queue", k.a), attribute.String("reason", k.b)}
	case otelInFlight:
		return []attribute.KeyValue{attribute.String("namespace", k.a)}
	default:
		return []attribute.KeyValue{attribute.String("handler_name", k.a), attribute.String("namespace", k.b), attribute.String("outcome", k.c)}
	}
}

var (
	_ PoisonObserver = (*OTelObserver)(nil)
	_ EventPublisher = (*OTelObserver)(nil)
)
