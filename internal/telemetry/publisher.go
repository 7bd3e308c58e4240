package telemetry

import (
	"context"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/otlpwire"
	"github.com/tasker/tasker/internal/traceparent"
)

// Publisher turns a committed journal into spans, span events and metrics.
//
// Spans follow DESIGN §5 and every event goes on the span the event catalog
// names for it (lifecycle.EventInfo.Span, listed in docs/events.md). A
// journal is cut into batches at each task transition: the batch's phases
// (step_discovery, step_enqueuing, result_evaluation) become children of the
// task_state_transition span of the transition that ends the batch, and the
// batch's step transitions become step_state_transition spans under the
// phase they happened in. When a task finishes, the root task_orchestration
// span is emitted with the ids stored on the task and the task's creation
// time as its start; a span must end in the process that started it, so the
// root cannot stay open for the task's life.
type Publisher struct {
	tracer trace.Tracer
	// direct is tracer when it is an otlpwire.Tracer: spans are then
	// started through its StartAt (startAt).
	direct  *otlpwire.Tracer
	tracing bool
	m       *Metrics
	// sampler decides, when a task is accepted, whether its trace is
	// recorded (nil: tracing off); skipUnsampled is set when the spans of
	// a task not sampled would all be dropped (a parent-based sampler), so
	// they are not built (sampling.go).
	sampler       sdktrace.Sampler
	skipUnsampled bool
}

// traced is whether spans of the task are to be built.
func (p *Publisher) traced(ref TaskRef) bool {
	if !p.tracing {
		return false
	}
	if p.skipUnsampled {
		if sc, ok := traceparent.SpanContext(ref.TraceParent); ok && !sc.IsSampled() {
			return false
		}
	}
	return true
}

// batch is one task's records since its previous task transition.
type batch struct {
	ref   TaskRef
	start time.Time
	// records point into the journal being published, which does not
	// change while Publish runs: a Record is a few hundred bytes, and
	// copying each into its batch was most of what publishing allocated.
	records []*Record
	// attrs are the task's attribute sets, shared by its batches of one
	// journal.
	attrs *taskAttrSets
}

// taskAttrSets builds a task's span and event attributes (taskAttrs,
// eventAttrs) with its ids formatted once: a journal's records of one
// task repeat them in every span and event, and formatting the uuids and
// building the task's sets anew for each was a third of the bytes the
// publisher allocated (BenchmarkPublishTracedExported). The slices it
// returns are shared: read only, as the spans keep them.
type taskAttrSets struct {
	ref              TaskRef
	corr, taskID, ns attribute.KeyValue
	task, taskEvent  []attribute.KeyValue
	stepID           uuid.UUID
	stepUUID         attribute.KeyValue
}

func newTaskAttrSets(ref TaskRef) *taskAttrSets {
	a := &taskAttrSets{ref: ref,
		corr:   attribute.String("correlation_id", ref.CorrelationID.String()),
		taskID: attribute.String("task_uuid", ref.UUID.String()),
		ns:     attribute.String("namespace", ref.Namespace)}
	a.task = []attribute.KeyValue{a.corr, a.taskID, a.ns, attribute.String("task_name", ref.Name)}
	a.taskEvent = []attribute.KeyValue{a.corr, a.taskID, a.ns}
	return a
}

// of is whether ref names the task with the attributes a holds (always,
// for a batch's own records).
func (a *taskAttrSets) of(ref TaskRef) bool {
	return ref.UUID == a.ref.UUID && ref.CorrelationID == a.ref.CorrelationID &&
		ref.Namespace == a.ref.Namespace && ref.Name == a.ref.Name
}

// forTask is taskAttrs(ref), shared.
func (a *taskAttrSets) forTask(ref TaskRef) []attribute.KeyValue {
	if !a.of(ref) {
		return taskAttrs(ref)
	}
	return a.task
}

// event is eventAttrs(r): shared for a record of the task without a step
// or states, otherwise a slice of its own from the formatted ids.
func (a *taskAttrSets) event(r *Record) []attribute.KeyValue {
	if !a.of(r.Task) {
		return eventAttrs(r)
	}
	if r.Step == nil && r.From == "" && r.To == "" {
		return a.taskEvent
	}
	out := make([]attribute.KeyValue, 0, 8)
	out = append(out, a.corr, a.taskID, a.ns)
	if r.Step != nil {
		if r.Step.UUID != a.stepID || !a.stepUUID.Valid() {
			// A batch's step records come one step at a time.
			a.stepID, a.stepUUID = r.Step.UUID, attribute.String("step_uuid", r.Step.UUID.String())
		}
		out = append(out, a.stepUUID, attribute.String("step_name", r.Step.Name), attribute.Int("attempt", r.Step.Attempt))
	}
	if r.From != "" || r.To != "" {
		out = append(out, attribute.String("from_state", r.From), attribute.String("to_state", r.To))
	}
	return out
}

// Publish emits everything the journal recorded. It never fails: telemetry
// must not break orchestration.
func (p *Publisher) Publish(ctx context.Context, j *Journal) {
	if j == nil || len(j.Records) == 0 {
		return
	}
	// A large journal's counter increments are summed and added once per
	// instrument and attribute set: a result batch repeats the same few
	// sets hundreds of times, and each Add resolves its set again.
	t := &tally{ctx: ctx, m: p.m}
	if len(j.Records) > tallyAbove {
		t.sums = make([]tallySum, 0, 16)
		defer t.add()
	}
	if !p.tracing {
		// Metrics only: no spans, so no per-task batches to gather.
		for i := range j.Records {
			p.record(ctx, t, &j.Records[i])
		}
		return
	}
	batches := map[[16]byte]*batch{}
	var order [][16]byte
	for i := range j.Records {
		r := &j.Records[i]
		if r.Kind == KindWorkerRun {
			// A worker's run has spans of its own (step_execution), not
			// part of any orchestration batch.
			p.record(ctx, t, r)
			p.emitWorkerRun(ctx, r)
			continue
		}
		k := [16]byte(r.Task.UUID)
		b := batches[k]
		if b == nil {
			b = &batch{ref: r.Task, start: r.At, attrs: newTaskAttrSets(r.Task)}
			batches[k] = b
			order = append(order, k)
		}
		p.record(ctx, t, r)
		switch r.Kind {
		case KindTaskTransition:
			p.emitTransition(ctx, b, r)
			batches[k] = &batch{ref: r.Task, start: r.At, attrs: b.attrs}
		case KindTaskFinished:
			if r.EmitRoot {
				p.emitRoot(ctx, b, r)
				batches[k] = &batch{ref: r.Task, start: r.At, attrs: b.attrs}
			}
		case KindTaskCreated:
			// Metrics only.
		default:
			b.records = append(b.records, r)
		}
	}
	// Records not followed by a task transition (a duplicate result, a
	// result for a held task) still appear, under the task's root.
	for _, k := range order {
		if b := batches[k]; len(b.records) > 0 {
			p.emitLeftover(ctx, b)
		}
	}
}

// tally counts counter increments: at once, or, once sums is set, summed
// by instrument and attribute set until add. A journal names a few sets (a
// dozen for a batch of one template's results), so a short list searched
// in order serves.
type tally struct {
	ctx  context.Context
	m    *Metrics
	sums []tallySum
}

// tallyAbove is the journal size above which increments are summed; a
// smaller one (a task's own transaction) adds them as they come.
const tallyAbove = 32

type tallySum struct {
	counter metric.Int64Counter
	attrs   attrKey
	n       int64
}

func (t *tally) inc(c metric.Int64Counter, kind attrKind, a, b, c2 string) {
	k := attrKey{kind: kind, a: a, b: b, c: c2}
	if t.sums == nil {
		c.Add(t.ctx, 1, t.m.attrs.Option(k))
		return
	}
	for i := range t.sums {
		if s := &t.sums[i]; s.counter == c && s.attrs == k {
			s.n++
			return
		}
	}
	t.sums = append(t.sums, tallySum{counter: c, attrs: k, n: 1})
}

// add adds the sums to their counters.
func (t *tally) add() {
	for _, s := range t.sums {
		s.counter.Add(t.ctx, s.n, t.m.attrs.Option(s.attrs))
	}
}

// record updates the metrics for one record: the histograms at once, the
// counters in t.
func (p *Publisher) record(ctx context.Context, t *tally, r *Record) {
	ns := r.Task.Namespace
	switch r.Kind {
	case KindEvent:
		t.inc(p.m.Events, attrsEvent, string(r.Event), ns, "")
	case KindStepTransition:
		t.inc(p.m.StepTransitions, attrsTransition, stateLabel(r.From), r.To, ns)
		for _, ev := range stepEvents(r) {
			t.inc(p.m.Events, attrsEvent, string(ev), ns, "")
		}
	case KindTaskCreated:
		// From is empty: from_state="none", as for a step's creation.
		t.inc(p.m.TaskTransitions, attrsTransition, stateLabel(r.From), r.To, ns)
	case KindTaskTransition:
		t.inc(p.m.TaskTransitions, attrsTransition, stateLabel(r.From), r.To, ns)
		if !r.PrevEnteredAt.IsZero() && r.From != "" {
			p.m.TaskStateSeconds.Record(ctx, r.At.Sub(r.PrevEnteredAt).Seconds(), p.m.attrSet(attrsState, r.From, ns, ""))
		}
		for _, ev := range taskEvents(r) {
			t.inc(p.m.Events, attrsEvent, string(ev), ns, "")
		}
	case KindWorkerRun:
		t.inc(p.m.StepTransitions, attrsTransition, string(lifecycle.StepEnqueued), string(lifecycle.StepInProgress), ns)
		t.inc(p.m.StepTransitions, attrsTransition, r.From, r.To, ns)
		for _, ev := range workerRunEvents {
			t.inc(p.m.Events, attrsEvent, string(ev), ns, "")
		}
		p.m.StepExecution.Record(ctx, r.End.Sub(r.At).Seconds(), p.m.attrSet(attrsHandler, r.Step.Handler, ns, r.Outcome))
		t.inc(p.m.StepAttempts, attrsHandler, r.Step.Handler, ns, r.Outcome)
	case KindTaskFinished:
		p.m.TaskCompletion.Record(ctx, r.At.Sub(r.Task.CreatedAt).Seconds(), p.m.attrSet(attrsCompletion, ns, r.Outcome, ""))
	}
}

// taskEvents are the events of a task transition: task.before_transition,
// then the move's events.
func taskEvents(r *Record) []lifecycle.EventName {
	out := []lifecycle.EventName{lifecycle.EventTaskBeforeTransition}
	return append(out, lifecycle.TaskMoveEvents(lifecycle.TaskState(r.From), r.Trigger, lifecycle.TaskState(r.To))...)
}

// stepEvents are the events of a step transition: step.before_transition
// (not for a step's creation, which is no transition of an existing step),
// then the mapped event.
func stepEvents(r *Record) []lifecycle.EventName {
	from, to := lifecycle.StepState(r.From), lifecycle.StepState(r.To)
	var out []lifecycle.EventName
	if from != lifecycle.StepCreatedState {
		out = append(out, lifecycle.EventStepBeforeTransition)
	}
	if ev, ok := lifecycle.StepTransitionEvent(from, to); ok {
		out = append(out, ev)
	}
	return out
}

// workerRunEvents are the events of a worker's run of a step, in order:
// the claim's transition (step.before_transition,
// step.execution_requested), the handler's start (step.before_handle,
// step.handle), the submission's transition (step.before_transition,
// step.result_submitted).
var workerRunEvents = []lifecycle.EventName{
	lifecycle.EventStepBeforeTransition, lifecycle.EventStepExecutionRequested,
	lifecycle.EventStepBeforeHandle, lifecycle.EventStepHandle,
	lifecycle.EventStepBeforeTransition, lifecycle.EventStepResultSubmitted,
}

// emitWorkerRun emits, for a worker that does not publish them itself, the
// spans and events a Go SDK worker's OTel observer would have: a
// step_execution span from the claim to the submission, with the claim's
// and the submission's step_state_transition spans, a handler_execution
// span and a result_submission span. The times are the ones the step's
// transitions recorded; the handler's own start and end are not known to
// the orchestrator, so handler_execution spans the whole run and the span
// says who reported it (reported_by = orchestrator).
func (p *Publisher) emitWorkerRun(ctx context.Context, r *Record) {
	if !p.traced(r.Task) {
		return
	}
	claimed, submitted := r.At, r.End
	if submitted.Before(claimed) {
		submitted = claimed
	}
	base := eventAttrs(&Record{Task: r.Task, Step: r.Step})
	claim := []attribute.KeyValue{attribute.String("from_state", string(lifecycle.StepEnqueued)), attribute.String("to_state", string(lifecycle.StepInProgress))}
	submit := []attribute.KeyValue{attribute.String("from_state", r.From), attribute.String("to_state", r.To)}
	with := func(extra ...attribute.KeyValue) []attribute.KeyValue {
		return append(append(make([]attribute.KeyValue, 0, len(base)+len(extra)), base...), extra...)
	}
	sctx, span := p.startAt(parentContext(ctx, r.Task), "step_execution", claimed,
		with(attribute.String("handler_name", r.Step.Handler), attribute.String("worker_id", r.Worker),
			attribute.String("reported_by", "orchestrator")))
	claimAttrs := with(claim...)
	_, ts := p.startAt(sctx, "step_state_transition", claimed, claimAttrs)
	eventAt(ts, string(lifecycle.EventStepBeforeTransition), claimed, claimAttrs)
	eventAt(ts, string(lifecycle.EventStepExecutionRequested), claimed, claimAttrs)
	endAt(ts, claimed.Add(minSpan))
	eventAt(span, string(lifecycle.EventStepBeforeHandle), claimed, base)
	_, hs := p.startAt(sctx, "handler_execution", claimed, with(attribute.String("handler_name", r.Step.Handler)))
	eventAt(hs, string(lifecycle.EventStepHandle), claimed, base)
	endAt(hs, spanEnd(claimed, submitted))
	submitAttrs := with(submit...)
	_, us := p.startAt(sctx, "step_state_transition", submitted, submitAttrs)
	eventAt(us, string(lifecycle.EventStepBeforeTransition), submitted, submitAttrs)
	endAt(us, submitted.Add(minSpan))
	_, rs := p.startAt(sctx, "result_submission", submitted, base)
	eventAt(rs, string(lifecycle.EventStepResultSubmitted), submitted, with(append(submit, attribute.String("outcome", r.Outcome))...))
	endAt(rs, submitted.Add(minSpan))
	span.SetAttributes(attribute.String("outcome", r.Outcome))
	if r.To == string(lifecycle.StepEnqueuedAsErrorForOrchestration) {
		// As the Go SDK's observer records a handler's error.
		msg := firstOf(r.Error, "handler failed")
		eventAt(span, "exception", submitted, with(attribute.String("exception.message", msg)))
		span.SetStatus(codes.Error, msg)
	}
	endAt(span, later(spanEnd(claimed, submitted), submitted.Add(2*minSpan)))
}

// whyAttrs are a step transition's reason, why_final and error, where it
// has them.
func whyAttrs(r *Record) []attribute.KeyValue {
	var a []attribute.KeyValue
	if r.Reason != "" {
		a = append(a, attribute.String("reason", r.Reason))
	}
	if r.Final != "" {
		a = append(a, attribute.String("why_final", r.Final))
	}
	if r.Error != "" {
		a = append(a, attribute.String("error", r.Error))
	}
	return a
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func stateLabel(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// eventAttrs are the attributes every span event carries (DESIGN §4).
// eventAttrs are the attributes DESIGN §4 gives every event; the span an
// event is on carries the rest (task_name, handler_name), so events do not
// repeat them: span data is most of tracing's cost.
func eventAttrs(r *Record) []attribute.KeyValue {
	a := make([]attribute.KeyValue, 0, 8)
	a = append(a, attribute.String("correlation_id", r.Task.CorrelationID.String()),
		attribute.String("task_uuid", r.Task.UUID.String()), attribute.String("namespace", r.Task.Namespace))
	if r.Step != nil {
		a = append(a, attribute.String("step_uuid", r.Step.UUID.String()), attribute.String("step_name", r.Step.Name),
			attribute.Int("attempt", r.Step.Attempt))
	}
	if r.From != "" || r.To != "" {
		a = append(a, attribute.String("from_state", r.From), attribute.String("to_state", r.To))
	}
	return a
}

func taskAttrs(ref TaskRef) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("correlation_id", ref.CorrelationID.String()),
		attribute.String("task_uuid", ref.UUID.String()),
		attribute.String("namespace", ref.Namespace),
		attribute.String("task_name", ref.Name),
	}
}

func stepAttrs(s *StepRef) []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("step_uuid", s.UUID.String()), attribute.String("step_name", s.Name),
		attribute.String("handler_name", s.Handler), attribute.Int("attempt", s.Attempt)}
}

// parentContext returns a context whose remote parent is the task's root
// span, rebuilt from the stored traceparent.
func parentContext(ctx context.Context, ref TaskRef) context.Context {
	sc, ok := traceparent.SpanContext(ref.TraceParent)
	if !ok {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

// minSpan is the shortest duration a span is given: a span that ends when
// it starts reads as a negative duration to trace backends (Jaeger warns).
const minSpan = time.Microsecond

func spanEnd(start, end time.Time) time.Time {
	if end.Sub(start) < minSpan {
		return start.Add(minSpan)
	}
	return end
}

// phaseSpan is an open phase span of a batch.
type phaseSpan struct {
	phase      Phase
	start, end time.Time
	ctx        context.Context
	span       trace.Span
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// emitBatch emits a batch's phases, step transitions and events under
// parent, returning the events that belong on the parent itself (catalog
// span task_state_transition) or on the root (task_orchestration), and the
// latest end of the spans it emitted (a parent must not end before its
// children).
func (p *Publisher) emitBatch(parent context.Context, b *batch) (own, root []*Record, lastEnd time.Time) {
	var phases []*phaseSpan
	for _, r := range b.records {
		if r.Kind == KindPhase {
			ctx, s := p.startAt(parent, string(r.Phase), r.At, b.attrs.forTask(r.Task))
			phases = append(phases, &phaseSpan{phase: r.Phase, start: r.At, end: r.End, ctx: ctx, span: s})
		}
	}
	// phaseAt finds the phase span running at t (of the given phase, if
	// not empty), creating a point-in-time one when a catalog span names a
	// phase that did not run in this batch.
	phaseAt := func(t time.Time, want Phase) *phaseSpan {
		for _, ph := range phases {
			if (want == "" || ph.phase == want) && !t.Before(ph.start) && !t.After(ph.end) {
				return ph
			}
		}
		if want == "" {
			return nil
		}
		for _, ph := range phases {
			if ph.phase == want {
				return ph
			}
		}
		ctx, s := p.startAt(parent, string(want), t, b.attrs.forTask(b.ref))
		ph := &phaseSpan{phase: want, start: t, end: t, ctx: ctx, span: s}
		phases = append(phases, ph)
		return ph
	}
	for _, r := range b.records {
		switch r.Kind {
		case KindStepTransition:
			pctx := parent
			end := r.At.Add(minSpan)
			if ph := phaseAt(r.At, ""); ph != nil {
				pctx = ph.ctx
				ph.end = later(ph.end, end)
			}
			lastEnd = later(lastEnd, end)
			// One attribute slice for the span and its events (read only:
			// the SDK copies it, StartAt keeps it).
			ea := b.attrs.event(r)
			_, s := p.startAt(pctx, "step_state_transition", r.At, append(ea[:len(ea):len(ea)], whyAttrs(r)...))
			for _, ev := range stepEvents(r) {
				eventAt(s, string(ev), r.At, ea)
			}
			if r.To == string(lifecycle.StepError) {
				s.SetStatus(codes.Error, firstOf(r.Error, r.Final, r.Reason))
			}
			endAt(s, end)
		case KindEvent:
			info, _ := lifecycle.LookupEvent(r.Event)
			switch info.Span {
			case string(PhaseStepDiscovery), string(PhaseStepEnqueuing), string(PhaseResultEvaluation):
				ph := phaseAt(r.At, Phase(info.Span))
				eventAt(ph.span, string(r.Event), r.At, b.attrs.event(r))
			case "task_orchestration":
				root = append(root, r)
			default:
				own = append(own, r)
			}
		}
	}
	for _, ph := range phases {
		end := spanEnd(ph.start, ph.end)
		lastEnd = later(lastEnd, end)
		endAt(ph.span, end)
	}
	return own, root, lastEnd
}

func (p *Publisher) emitTransition(ctx context.Context, b *batch, r *Record) {
	if !p.traced(r.Task) {
		return
	}
	start := b.start
	for _, x := range b.records {
		if x.At.Before(start) {
			start = x.At
		}
	}
	// The trigger tells moves between the same states apart (a result
	// arriving, a retry backoff elapsing), as their events do.
	tctx, span := p.startAt(parentContext(ctx, r.Task), "task_state_transition", start,
		append(b.attrs.forTask(r.Task), attribute.String("from_state", r.From), attribute.String("to_state", r.To),
			attribute.String("trigger", string(r.Trigger))))
	own, root, childEnd := p.emitBatch(tctx, b)
	for _, e := range own {
		eventAt(span, string(e.Event), e.At, b.attrs.event(e))
	}
	if evs := taskEvents(r); len(evs) > 0 {
		evAttrs := b.attrs.event(r)
		for _, ev := range evs {
			eventAt(span, string(ev), r.At, evAttrs)
		}
	}
	endAt(span, later(spanEnd(start, r.At), childEnd))
	// Root events (workflow.task_completed/failed) are recorded after the
	// terminal transition, so they are in the next batch, never here: they
	// reach emitRoot at a task's first end, emitLeftover at a later one.
	_ = root
}

func (p *Publisher) emitRoot(ctx context.Context, b *batch, r *Record) {
	if !p.traced(r.Task) {
		return
	}
	sc, ok := traceparent.SpanContext(r.Task.TraceParent)
	if !ok {
		return
	}
	// The root span ends in this process, with the ids generated when the
	// task was accepted (the IDGenerator honours ids put in the context).
	rctx := withForcedIDs(ctx, sc)
	_, root := p.tracer.Start(rctx, "task_orchestration", trace.WithNewRoot(), trace.WithTimestamp(r.Task.CreatedAt),
		trace.WithAttributes(append(b.attrs.forTask(r.Task), attribute.String("outcome", r.Outcome))...))
	own, rootEvents, _ := p.emitBatch(parentContext(ctx, r.Task), b)
	for _, e := range append(rootEvents, own...) {
		eventAt(root, string(e.Event), e.At, b.attrs.event(e))
	}
	if r.Outcome == string(lifecycle.TaskError) {
		root.SetStatus(codes.Error, "task failed")
	}
	endAt(root, spanEnd(r.Task.CreatedAt, r.At))
}

func (p *Publisher) emitLeftover(ctx context.Context, b *batch) {
	if !p.traced(b.ref) {
		return
	}
	// A command that moved no task state (a duplicate or late result, a
	// result for a task held in blocked_by_failures, the end of a task an
	// operator revived) still shows: its phases and step transitions go
	// under the task's root, and its task-level events on a
	// result_evaluation span.
	own, root, _ := p.emitBatch(parentContext(ctx, b.ref), b)
	rest := append(own, root...)
	if len(rest) == 0 {
		return
	}
	start, end := rest[0].At, rest[len(rest)-1].At
	_, span := p.startAt(parentContext(ctx, b.ref), string(PhaseResultEvaluation), start, b.attrs.forTask(b.ref))
	for _, e := range rest {
		eventAt(span, string(e.Event), e.At, b.attrs.event(e))
	}
	endAt(span, spanEnd(start, end))
}

// startAt starts a span at a time with attributes: through the otlpwire
// tracer's StartAt when spans go out through otlpwire (attrs is then kept,
// not copied, and must not change afterwards), otherwise as the options of
// the tracer's Start.
func (p *Publisher) startAt(ctx context.Context, name string, at time.Time, attrs []attribute.KeyValue) (context.Context, trace.Span) {
	if p.direct != nil {
		return p.direct.StartAt(ctx, name, at, attrs)
	}
	return p.tracer.Start(ctx, name, trace.WithTimestamp(at), trace.WithAttributes(attrs...))
}

// timedSpan is what otlpwire's spans offer beside the API.
type timedSpan interface {
	AddEventAt(name string, at time.Time, attrs []attribute.KeyValue)
	EndAt(at time.Time)
}

// eventAt adds an event at a time with attributes (kept, by an otlpwire
// span).
func eventAt(s trace.Span, name string, at time.Time, attrs []attribute.KeyValue) {
	if d, ok := s.(timedSpan); ok {
		d.AddEventAt(name, at, attrs)
		return
	}
	s.AddEvent(name, trace.WithTimestamp(at), trace.WithAttributes(attrs...))
}

// endAt ends a span at a time.
func endAt(s trace.Span, at time.Time) {
	if d, ok := s.(timedSpan); ok {
		d.EndAt(at)
		return
	}
	s.End(trace.WithTimestamp(at))
}
