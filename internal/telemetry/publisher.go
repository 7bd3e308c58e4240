package telemetry

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasker/tasker/internal/lifecycle"
)

// Publisher turns a committed journal into spans, span events and metrics.
//
// Spans follow DESIGN §5. For each task transition it emits a
// task_state_transition span (child of the task's root) whose children are
// the orchestration phases that led to it (step_discovery, step_enqueuing,
// result_evaluation); events observed since the previous transition are
// attached to the phase they happened in, or to the transition span. When a
// task finishes, the root span task_orchestration is emitted with the ids
// stored on the task and the task's creation time as its start.
type Publisher struct {
	tracer  trace.Tracer
	tracing bool
	m       *Metrics
}

// pendingEvent is an event waiting for the span it belongs to.
type pendingEvent struct {
	name  lifecycle.EventName
	at    time.Time
	attrs []attribute.KeyValue
}

// taskBatch collects one task's records between two task transitions.
type taskBatch struct {
	ref    TaskRef
	start  time.Time
	phases []Record
	events []pendingEvent
}

// Publish emits everything the journal recorded. It never fails: telemetry
// must not break orchestration.
func (p *Publisher) Publish(ctx context.Context, j *Journal) {
	if j == nil || len(j.Records) == 0 {
		return
	}
	batches := map[string]*taskBatch{}
	var order []string
	batchOf := func(r Record) *taskBatch {
		k := r.Task.UUID.String()
		b := batches[k]
		if b == nil {
			b = &taskBatch{ref: r.Task, start: r.At}
			batches[k] = b
			order = append(order, k)
		}
		return b
	}
	for _, r := range j.Records {
		b := batchOf(r)
		switch r.Kind {
		case KindEvent:
			p.count(ctx, r.Event, r.Task.Namespace)
			b.events = append(b.events, pendingEvent{name: r.Event, at: r.At, attrs: eventAttrs(r, r.Step)})

		case KindStepTransition:
			from, to := lifecycle.StepState(r.From), lifecycle.StepState(r.To)
			p.m.StepTransitions.Add(ctx, 1, metric.WithAttributes(
				attribute.String("from_state", stateLabel(r.From)), attribute.String("to_state", r.To),
				attribute.String("namespace", r.Task.Namespace)))
			if from != lifecycle.StepCreatedState {
				p.count(ctx, lifecycle.EventStepBeforeTransition, r.Task.Namespace)
				b.events = append(b.events, pendingEvent{name: lifecycle.EventStepBeforeTransition, at: r.At, attrs: eventAttrs(r, r.Step)})
			}
			if ev, ok := lifecycle.StepTransitionEvent(from, to); ok {
				p.count(ctx, ev, r.Task.Namespace)
				b.events = append(b.events, pendingEvent{name: ev, at: r.At, attrs: eventAttrs(r, r.Step)})
			}

		case KindPhase:
			b.phases = append(b.phases, r)

		case KindTaskTransition:
			p.taskTransition(ctx, b, r)
			batches[r.Task.UUID.String()] = &taskBatch{ref: r.Task, start: r.At}

		case KindTaskFinished:
			p.taskFinished(ctx, b, r)
			batches[r.Task.UUID.String()] = &taskBatch{ref: r.Task, start: r.At}
		}
	}
	// Events not followed by a transition (a duplicate result, a reap that
	// found nothing to move) go on a result_evaluation span of their own.
	for _, k := range order {
		b := batches[k]
		if len(b.events) == 0 && len(b.phases) == 0 {
			continue
		}
		p.leftover(ctx, b)
	}
}

func (p *Publisher) count(ctx context.Context, ev lifecycle.EventName, ns string) {
	p.m.Events.Add(ctx, 1, metric.WithAttributes(attribute.String("event", string(ev)), attribute.String("namespace", ns)))
}

func stateLabel(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// eventAttrs are the attributes every span event carries (DESIGN §4).
func eventAttrs(r Record, step *StepRef) []attribute.KeyValue {
	a := []attribute.KeyValue{
		attribute.String("correlation_id", r.Task.CorrelationID.String()),
		attribute.String("task_uuid", r.Task.UUID.String()),
		attribute.String("namespace", r.Task.Namespace),
	}
	if step != nil {
		a = append(a, attribute.String("step_uuid", step.UUID.String()), attribute.String("step_name", step.Name),
			attribute.Int("attempt", step.Attempt))
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

// parentContext returns a context whose remote parent is the task's root
// span, rebuilt from the stored traceparent.
func parentContext(ctx context.Context, ref TaskRef) context.Context {
	sc, ok := SpanContextFromTraceParent(ref.TraceParent)
	if !ok {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

func (p *Publisher) taskTransition(ctx context.Context, b *taskBatch, r Record) {
	from, to := lifecycle.TaskState(r.From), lifecycle.TaskState(r.To)
	ns := r.Task.Namespace
	p.m.TaskTransitions.Add(ctx, 1, metric.WithAttributes(attribute.String("from_state", stateLabel(r.From)),
		attribute.String("to_state", r.To), attribute.String("namespace", ns)))
	if !r.PrevEnteredAt.IsZero() && r.From != "" {
		p.m.TaskStateSeconds.Record(ctx, r.At.Sub(r.PrevEnteredAt).Seconds(), metric.WithAttributes(
			attribute.String("state", r.From), attribute.String("namespace", ns)))
	}
	names := []lifecycle.EventName{lifecycle.EventTaskBeforeTransition}
	if ev, ok := lifecycle.TaskTransitionEvent(from, to); ok {
		names = append(names, ev)
	}
	names = append(names, lifecycle.AdditionalTaskEvents(from, to)...)
	for _, n := range names {
		p.count(ctx, n, ns)
	}
	if !p.tracing {
		return
	}
	start := b.start
	for _, ph := range b.phases {
		if ph.At.Before(start) {
			start = ph.At
		}
	}
	pctx := parentContext(ctx, r.Task)
	tctx, span := p.tracer.Start(pctx, "task_state_transition", trace.WithTimestamp(start),
		trace.WithAttributes(append(taskAttrs(r.Task), attribute.String("from_state", r.From), attribute.String("to_state", r.To))...))
	// Events go on the phase span that was running when they happened.
	remaining := b.events
	for _, ph := range b.phases {
		_, ps := p.tracer.Start(tctx, string(ph.Phase), trace.WithTimestamp(ph.At), trace.WithAttributes(taskAttrs(r.Task)...))
		var keep []pendingEvent
		for _, ev := range remaining {
			if !ev.at.Before(ph.At) && !ev.at.After(ph.End) && phaseOwns(ph.Phase, ev.name) {
				ps.AddEvent(string(ev.name), trace.WithTimestamp(ev.at), trace.WithAttributes(ev.attrs...))
			} else {
				keep = append(keep, ev)
			}
		}
		remaining = keep
		ps.End(trace.WithTimestamp(ph.End))
	}
	for _, ev := range remaining {
		span.AddEvent(string(ev.name), trace.WithTimestamp(ev.at), trace.WithAttributes(ev.attrs...))
	}
	attrs := eventAttrs(r, nil)
	span.AddEvent(string(lifecycle.EventTaskBeforeTransition), trace.WithTimestamp(r.At), trace.WithAttributes(attrs...))
	for _, n := range names[1:] {
		span.AddEvent(string(n), trace.WithTimestamp(r.At), trace.WithAttributes(attrs...))
	}
	span.End(trace.WithTimestamp(r.At))
}

// phaseOwns says which events belong on a phase span rather than on the
// transition span: discovery outcomes on discovery and evaluation, step
// dispatch on enqueuing, step result processing on evaluation.
func phaseOwns(ph Phase, ev lifecycle.EventName) bool {
	switch ph {
	case PhaseStepDiscovery:
		return ev == lifecycle.EventWorkflowViableStepsDiscovered || ev == lifecycle.EventWorkflowNoViableSteps
	case PhaseStepEnqueuing:
		return ev == lifecycle.EventStepEnqueueRequested || ev == lifecycle.EventStepBeforeTransition
	case PhaseResultEvaluation:
		return ev == lifecycle.EventWorkflowViableStepsDiscovered || ev == lifecycle.EventWorkflowNoViableSteps ||
			ev == lifecycle.EventStepRetryRequested || ev == lifecycle.EventStepBeforeTransition
	}
	return false
}

func (p *Publisher) taskFinished(ctx context.Context, b *taskBatch, r Record) {
	ns := r.Task.Namespace
	p.m.TaskCompletion.Record(ctx, r.At.Sub(r.Task.CreatedAt).Seconds(), metric.WithAttributes(
		attribute.String("namespace", ns), attribute.String("outcome", r.Outcome)))
	if !p.tracing {
		return
	}
	sc, ok := SpanContextFromTraceParent(r.Task.TraceParent)
	if !ok {
		return
	}
	// The root span ends in this process, with the ids generated when the
	// task was accepted (the IDGenerator honours ids put in the context).
	rctx := withForcedIDs(ctx, sc.TraceID(), sc.SpanID())
	_, root := p.tracer.Start(rctx, "task_orchestration", trace.WithNewRoot(), trace.WithTimestamp(r.Task.CreatedAt),
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(append(taskAttrs(r.Task), attribute.String("outcome", r.Outcome))...))
	for _, ev := range b.events {
		root.AddEvent(string(ev.name), trace.WithTimestamp(ev.at), trace.WithAttributes(ev.attrs...))
	}
	b.events = nil
	if r.Outcome == string(lifecycle.TaskError) {
		root.SetStatus(codes.Error, "task failed")
	}
	root.End(trace.WithTimestamp(r.At))
}

func (p *Publisher) leftover(ctx context.Context, b *taskBatch) {
	if !p.tracing {
		return
	}
	end := b.start
	for _, ev := range b.events {
		if ev.at.After(end) {
			end = ev.at
		}
	}
	_, span := p.tracer.Start(parentContext(ctx, b.ref), string(PhaseResultEvaluation), trace.WithTimestamp(b.start),
		trace.WithAttributes(taskAttrs(b.ref)...))
	for _, ev := range b.events {
		span.AddEvent(string(ev.name), trace.WithTimestamp(ev.at), trace.WithAttributes(ev.attrs...))
	}
	span.End(trace.WithTimestamp(end))
}
