package telemetry

import (
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/lifecycle"
)

// TaskRef identifies a task in telemetry: what every event and span carries.
type TaskRef struct {
	UUID          uuid.UUID
	TemplateID    int64
	Namespace     string
	Name          string
	CorrelationID uuid.UUID
	// TraceParent is the W3C traceparent of the task's root span, stored on
	// the task row when it was accepted.
	TraceParent string
	CreatedAt   time.Time
}

// StepRef identifies a step in telemetry.
type StepRef struct {
	UUID    uuid.UUID
	Name    string
	Handler string
	Attempt int
}

// Phase names the orchestration phases recorded as child spans of a task
// transition (DESIGN §5).
type Phase string

// The phases.
const (
	PhaseStepDiscovery    Phase = "step_discovery"
	PhaseStepEnqueuing    Phase = "step_enqueuing"
	PhaseResultEvaluation Phase = "result_evaluation"
)

// RecordKind says what a journal record describes.
type RecordKind uint8

// The record kinds.
const (
	KindEvent RecordKind = iota + 1
	KindTaskTransition
	KindStepTransition
	KindPhase
	KindTaskFinished
	KindTaskCreated
	KindWorkerRun
)

// Record is one fact observed inside a database transaction.
type Record struct {
	Kind  RecordKind
	At    time.Time
	Event lifecycle.EventName // KindEvent
	Task  TaskRef
	Step  *StepRef
	// From and To are states, for transitions.
	From, To string
	// Trigger is the task trigger, for KindTaskTransition: the events of a
	// move depend on it (lifecycle.TaskMoveEvents).
	Trigger lifecycle.TaskTrigger
	// PrevEnteredAt is when the task or step entered From, for state
	// duration metrics; zero when unknown.
	PrevEnteredAt time.Time
	// Phase, with At as its start and End as its end, for KindPhase (for
	// KindWorkerRun, At is the claim and End the submission).
	Phase Phase
	End   time.Time
	// Outcome for KindTaskFinished (the terminal state), and for
	// KindWorkerRun (success or failure).
	Outcome string
	// EmitRoot for KindTaskFinished: this is the task's first end, so its
	// root span is due.
	EmitRoot bool
	// Worker is the worker id, for KindWorkerRun.
	Worker string
	// Reason says why a step transition out of a failure happened (an
	// expired lease, a release, a failed handler), and Final why it is the
	// step's last (attempts exhausted, not retryable); Error is the
	// failure's message. For KindStepTransition and, Error only, for a
	// failed KindWorkerRun. They become span attributes (reason,
	// why_final, error), so a trace says why a step failed or was retried.
	Reason, Final, Error string
	// Unrun, for a KindStepTransition out of in_progress: the attempt it
	// ends never ran its handler (its worker gave the step back first), so
	// no business failure happened (no StepFailed domain event).
	Unrun bool
}

// Journal collects what happened inside one database transaction so that it
// is published only after the transaction commits: a rolled-back change must
// not appear in traces or metrics. A Journal is not safe for concurrent use.
type Journal struct {
	Records []Record
	now     func() time.Time
}

// NewJournal returns an empty journal using clock for timestamps (time.Now
// when nil).
func NewJournal(clock func() time.Time) *Journal {
	if clock == nil {
		clock = time.Now
	}
	return &Journal{now: clock}
}

// Reset empties the journal for reuse (after a rolled-back transaction that
// is retried, or by the next transaction), dropping what its records
// referenced.
func (j *Journal) Reset() {
	clear(j.Records)
	j.Records = j.Records[:0]
}

// Event records a non-transition event (workflow.*, task.start_requested,
// step.initialize_requested, worker hooks).
func (j *Journal) Event(name lifecycle.EventName, task TaskRef, step *StepRef) {
	j.Records = append(j.Records, Record{Kind: KindEvent, At: j.now(), Event: name, Task: task, Step: step})
}

// TaskCreated records that a task was created in state (pending): it is
// counted as a task transition from "none", and is no span of its own (the
// creation's events, task.start_requested, are on the first transition).
func (j *Journal) TaskCreated(task TaskRef, state lifecycle.TaskState) {
	j.Records = append(j.Records, Record{Kind: KindTaskCreated, At: j.now(), Task: task, To: string(state)})
}

// TaskTransition records a committed-with-the-journal task transition; the
// publisher derives task.before_transition and the move's events from it.
func (j *Journal) TaskTransition(task TaskRef, from, to lifecycle.TaskState, trigger lifecycle.TaskTrigger, prevEnteredAt time.Time) {
	j.Records = append(j.Records, Record{Kind: KindTaskTransition, At: j.now(), Task: task,
		From: string(from), To: string(to), Trigger: trigger, PrevEnteredAt: prevEnteredAt})
}

// StepTransition records a step transition.
func (j *Journal) StepTransition(task TaskRef, step StepRef, from, to lifecycle.StepState, prevEnteredAt time.Time) {
	s := step
	j.Records = append(j.Records, Record{Kind: KindStepTransition, At: j.now(), Task: task, Step: &s,
		From: string(from), To: string(to), PrevEnteredAt: prevEnteredAt})
}

// WorkerRun records, on behalf of a worker that does not publish its own
// worker-side events (lifecycle.WorkerEventsHeader), one run of a step: its
// claim at claimedAt (enqueued → in_progress) and the submission of its
// outcome at submittedAt (in_progress → submittedTo), as the step's
// transitions recorded them. outcome is "success" or "failure", as the Go
// SDK labels its handler metrics.
// errMessage is the failure's message, if any.
func (j *Journal) WorkerRun(task TaskRef, step StepRef, claimedAt, submittedAt time.Time, submittedTo lifecycle.StepState, outcome, workerID, errMessage string) {
	s := step
	j.Records = append(j.Records, Record{Kind: KindWorkerRun, At: claimedAt, End: submittedAt, Task: task, Step: &s,
		From: string(lifecycle.StepInProgress), To: string(submittedTo), Outcome: outcome, Worker: workerID, Error: errMessage})
}

// Phase records an orchestration phase that ran from start until now.
func (j *Journal) Phase(p Phase, task TaskRef, start time.Time) {
	j.Records = append(j.Records, Record{Kind: KindPhase, At: start, End: j.now(), Phase: p, Task: task})
}

// TaskFinished records that a task reached a terminal state: the publisher
// observes the completion histogram at every end and, when emitRoot (the
// task's first end), emits the task's root span.
func (j *Journal) TaskFinished(task TaskRef, outcome lifecycle.TaskState, emitRoot bool) {
	j.Records = append(j.Records, Record{Kind: KindTaskFinished, At: j.now(), Task: task, Outcome: string(outcome), EmitRoot: emitRoot})
}

// Committed moves the end of the tasks finished in this journal to at, the
// time their transaction committed, when that is later.
func (j *Journal) Committed(at time.Time) {
	for i := range j.Records {
		if r := &j.Records[i]; r.Kind == KindTaskFinished && at.After(r.At) {
			r.At = at
		}
	}
}

// Now is the journal's clock.
func (j *Journal) Now() time.Time { return j.now() }
