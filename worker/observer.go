package worker

import (
	"context"
	"time"
)

// Outcome is how a claimed step ended in this worker.
type Outcome string

// The outcomes.
const (
	outcomeSucceeded Outcome = "success"
	outcomeFailed    Outcome = "failure"
	outcomeRefused   Outcome = "refused"  // result submitted but the step was no longer ours
	outcomeLost      Outcome = "lost"     // taken away while running, or the result could not be stored
	outcomeReleased  Outcome = "released" // given back at shutdown
)

// Observer receives the worker-side lifecycle of each step (the telemetry
// package's implementation records spans, span events and metrics).
type Observer interface {
	// StepClaimed is called once a step is claimed (step.execution_requested);
	// the returned context carries the step_execution span.
	StepClaimed(ctx context.Context, step *Step) (context.Context, StepSpan)
}

// StepSpan follows one claimed step.
type StepSpan interface {
	// BeforeHandle is called just before the handler runs
	// (step.before_handle, step.handle); the returned context is the
	// handler's.
	BeforeHandle(ctx context.Context) context.Context
	// BeforeSubmit is called before the result is submitted; the returned
	// context carries the result_submission span.
	BeforeSubmit(ctx context.Context) context.Context
	// TraceParent is the traceparent to put on the result notice.
	TraceParent() string
	// End closes the step's spans with its outcome (step.result_submitted
	// when the result was stored).
	End(outcome Outcome, handlerDuration time.Duration, err error)
}

// EventPublisher is an Observer that publishes the worker-side system
// events (step.execution_requested, step.before_handle, step.handle,
// step.result_submitted and the two transitions' step.before_transition)
// itself, as OTelObserver does. The worker says so in each result notice
// (header tasker-worker-events: published), and the orchestrator leaves
// those events to it; for a worker whose observer is not an EventPublisher
// (the default: none), the orchestrator publishes them when it processes
// the step's result, timed by the claim and the submission it recorded.
type EventPublisher interface {
	Observer
	// PublishesWorkerEvents reports whether the observer publishes them.
	PublishesWorkerEvents() bool
}

// PoisonObserver is an Observer that also counts the step messages the
// worker archives because they can never be processed (OTelObserver does:
// tasker_poison_messages_total). It is an interface of its own, which the
// worker looks for on Config.Observer, so that Observers written before it
// need not change.
type PoisonObserver interface {
	// PoisonMessage is called once for each message archived from queue
	// (worker_<namespace>_queue). reason is one of PoisonMalformed,
	// PoisonUnknownStep, PoisonRejected and PoisonMisrouted.
	PoisonMessage(queue, reason string)
}

// The reasons a step message is archived as poison (bounded: they are
// metric labels; the log line says more).
const (
	// PoisonMalformed: not a step message (not a JSON object, no
	// step_uuid, an attempt outside 1..2147483647).
	PoisonMalformed = "malformed"
	// PoisonUnknownStep: it names a step that does not exist (or no
	// longer does: its task was deleted).
	PoisonUnknownStep = "unknown_step"
	// PoisonRejected: its claim, made alone, raises an error that the same
	// call would raise again (a step of a namespace the login does not
	// serve).
	PoisonRejected = "rejected"
	// PoisonMisrouted: the step it claimed is of another namespace than
	// its queue, or has a handler this worker lacks; the step was released
	// unrun.
	PoisonMisrouted = "misrouted"
)

type nopObserver struct{}

func (nopObserver) StepClaimed(ctx context.Context, s *Step) (context.Context, StepSpan) {
	return ctx, nopSpan{tp: s.TraceParent}
}

type nopSpan struct{ tp string }

func (nopSpan) BeforeHandle(ctx context.Context) context.Context { return ctx }
func (nopSpan) BeforeSubmit(ctx context.Context) context.Context { return ctx }
func (s nopSpan) TraceParent() string                            { return s.tp }
func (nopSpan) End(Outcome, time.Duration, error)                {}
