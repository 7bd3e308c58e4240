// Package orchestration drives tasks and steps through their state machines:
// intake of task requests, discovery of ready steps, dispatch, processing of
// step results, retries with backoff, finalization, lease reaping, and the
// operator actions (cancel, retry, resolve).
//
// Every action runs in one database transaction that holds the task's row
// lock, so orchestrator replicas serialise per task and any of them may die
// at any moment: an action either commits whole (state changes, transition
// rows, queue messages and the deletion of the command message that caused
// it) or leaves nothing behind, and its command message is read again.
// Telemetry for an action is collected in a journal and published only after
// the commit.
package orchestration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/internal/template"
)

// Sentinel errors callers (the API) branch on.
var (
	ErrNotFound      = errors.New("not found")
	ErrInvalid       = errors.New("invalid request")
	ErrWrongState    = errors.New("not allowed in the current state")
	ErrConflict      = errors.New("conflict")
	ErrUnknownTarget = errors.New("unknown template or namespace")
)

// Publisher publishes a committed transaction's journal (spans, span events,
// metrics, domain events are written in the transaction itself).
type Publisher interface {
	Publish(ctx context.Context, j *telemetry.Journal)
	// NewTraceParent returns the traceparent of a task being accepted,
	// carrying whether its trace is sampled.
	NewTraceParent() string
}

// Engine holds the orchestration logic shared by the background services and
// the API.
type Engine struct {
	store     *store.Store
	publisher Publisher
	logger    *slog.Logger
	clock     func() time.Time
	jitter    func() float64

	// beforeCommit runs at the end of every engine transaction, with the
	// transaction's journal, before the commit (domain events are written
	// there, so they commit with the changes that cause them).
	beforeCommit []BeforeCommit

	mu        sync.RWMutex
	templates map[int64]*template.Template // immutable once registered

	intake *intakeBatcher

	// journals are reused from one transaction to the next: a result
	// batch's journal holds hundreds of records of a few hundred bytes,
	// and growing a new one every time was most of the bytes a batch
	// allocated.
	journals sync.Pool
}

// maxPooledRecords bounds the journals kept for reuse: one that grew past
// it (a very large batch) is left to the garbage collector.
const maxPooledRecords = 4096

// BeforeCommit is a hook run inside an engine transaction after its work and
// before its commit; an error rolls the whole transaction back.
type BeforeCommit func(ctx context.Context, tx store.Tx, j *telemetry.Journal) error

// WithBeforeCommit adds a hook run before each engine transaction commits.
func WithBeforeCommit(h BeforeCommit) EngineOption {
	return func(e *Engine) { e.beforeCommit = append(e.beforeCommit, h) }
}

// EngineOption configures an Engine.
type EngineOption func(*Engine)

// WithClock injects the clock used for backoff and telemetry timestamps.
func WithClock(clock func() time.Time) EngineOption { return func(e *Engine) { e.clock = clock } }

// WithJitter injects the random source for backoff jitter ([0,1)).
func WithJitter(f func() float64) EngineOption { return func(e *Engine) { e.jitter = f } }

// NewEngine returns an engine.
func NewEngine(st *store.Store, pub Publisher, logger *slog.Logger, opts ...EngineOption) *Engine {
	e := &Engine{
		store: st, publisher: pub, logger: logger,
		clock: time.Now, jitter: rand.Float64,
		templates: map[int64]*template.Template{},
		intake:    newIntakeBatcher(),
	}
	for _, o := range opts {
		o(e)
	}
	if e.publisher == nil {
		e.publisher = nopPublisher{}
	}
	return e
}

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, *telemetry.Journal) {}

func (nopPublisher) NewTraceParent() string { return (*telemetry.Publisher)(nil).NewTraceParent() }

// Template returns a registered template by id (cached; versions are
// immutable).
func (e *Engine) Template(ctx context.Context, id int64) (*template.Template, error) {
	return e.template(ctx, id)
}

// Store exposes the engine's store to the services of this package.
func (e *Engine) Store() *store.Store { return e.store }

// template returns a task's template, from cache or the database.
func (e *Engine) template(ctx context.Context, id int64) (*template.Template, error) {
	e.mu.RLock()
	t, ok := e.templates[id]
	e.mu.RUnlock()
	if ok {
		return t, nil
	}
	rec, err := e.store.TemplateByID(ctx, id)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.templates[id] = rec.Template
	e.mu.Unlock()
	return rec.Template, nil
}

// run executes fn in a transaction with a fresh journal and publishes the
// journal after a successful commit. fn may run more than once (the store
// retries deadlocks), so the journal is reset before each run.
func (e *Engine) run(ctx context.Context, fn func(tx store.Tx, j *telemetry.Journal) error) error {
	return e.runSettled(ctx, fn, nil)
}

// runSettled is run that calls settled, when not nil, once the transaction
// has committed or failed, before the journal is published: building spans
// for a large journal takes milliseconds that a caller waiting for the
// transaction need not wait.
func (e *Engine) runSettled(ctx context.Context, fn func(tx store.Tx, j *telemetry.Journal) error, settled func()) error {
	j, _ := e.journals.Get().(*telemetry.Journal)
	if j == nil {
		j = telemetry.NewJournal(e.clock)
	}
	defer func() {
		if cap(j.Records) <= maxPooledRecords {
			j.Reset()
			e.journals.Put(j)
		}
	}()
	err := e.store.InTxDeferred(ctx, func(tx store.Tx) error {
		j.Reset()
		if err := fn(tx, j); err != nil {
			return err
		}
		for _, h := range e.beforeCommit {
			if err := h(ctx, tx, j); err != nil {
				return err
			}
		}
		return nil
	})
	if settled != nil {
		settled()
	}
	if err != nil {
		return err
	}
	// A task ends when its final state is committed: the root span ends
	// then, after the commit of the workers' last submission that led here
	// (which the worker's own spans end at).
	j.Committed(e.clock())
	e.publisher.Publish(ctx, j)
	return nil
}

// taskRef is the telemetry identity of a task.
func taskRef(t *store.Task) telemetry.TaskRef {
	return telemetry.TaskRef{UUID: t.UUID, TemplateID: t.TemplateID, Namespace: t.Namespace, Name: t.Name,
		CorrelationID: t.CorrelationID, TraceParent: t.TraceParent, CreatedAt: t.CreatedAt}
}

func stepRef(s *store.Step) telemetry.StepRef {
	return telemetry.StepRef{UUID: s.UUID, Name: s.Name, Handler: s.Handler, Attempt: s.Attempts}
}

// moveTask applies one task trigger: it asks the state machine for the next
// state, writes it with a compare-and-swap, records it in the journal and
// updates t. Losing the swap means another actor moved the task under our
// lock, which cannot happen; it is reported as an error so the transaction
// rolls back.
func (e *Engine) moveTask(ctx context.Context, tx store.Tx, j *telemetry.Journal, t *store.Task, trig lifecycle.TaskTrigger, wakeAt *time.Time, meta map[string]any) error {
	to, err := lifecycle.NextTaskState(t.State, trig)
	if err != nil {
		return fmt.Errorf("task %s: %w", t.UUID, err)
	}
	if meta == nil {
		meta = map[string]any{}
	}
	meta["trigger"] = string(trig)
	ok, firstFinish, err := e.store.TaskTransitionTx(ctx, tx, store.TaskMove{UUID: t.UUID, From: t.State, To: to, WakeAt: wakeAt, Meta: meta,
		RootSpanEmitted: t.RootSpanEmitted})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("task %s left state %s while locked", t.UUID, t.State)
	}
	j.TaskTransition(taskRef(t), t.State, to, trig, t.StateEnteredAt)
	t.State, t.StateEnteredAt, t.WakeAt = to, j.Now(), wakeAt
	if to.Terminal() {
		t.RootSpanEmitted = true
		switch to {
		case lifecycle.TaskComplete:
			j.Event(lifecycle.EventWorkflowTaskCompleted, taskRef(t), nil)
		case lifecycle.TaskError:
			j.Event(lifecycle.EventWorkflowTaskFailed, taskRef(t), nil)
		}
		// The root span is emitted once per task, at its first end; a task
		// an operator revives keeps that root as the parent of its later
		// spans. At a later end no root is emitted, so the workflow.task_*
		// event, recorded after the transition, goes on a
		// result_evaluation span under that root (the publisher's
		// emitLeftover), and the completion histogram observes this end
		// too: every end is recorded, with the task's creation as its
		// start (docs/events.md, "A task an operator revives").
		j.TaskFinished(taskRef(t), to, firstFinish)
	}
	return nil
}

// stepChange is a planned step trigger.
type stepChange struct {
	step *store.Step
	trig lifecycle.StepTrigger
	// optional fields passed to the store
	nextAttemptAt *time.Time
	results       []byte
	extraAttempts int
	leaseGuard    bool
	meta          map[string]any
	// unrun: the attempt this change ends was given back before its
	// handler ran (telemetry.Record.Unrun).
	unrun bool
}

// moveSteps applies step triggers in one statement and updates the in-memory
// steps that moved. It returns the changes that happened: a step a worker
// moved meanwhile (claimed, submitted) is left alone.
func (e *Engine) moveSteps(ctx context.Context, tx store.Tx, j *telemetry.Journal, t *store.Task, changes []stepChange) ([]stepChange, error) {
	if len(changes) == 0 {
		return nil, nil
	}
	moves := make([]store.StepMove, 0, len(changes))
	byID := make(map[uuid.UUID]stepChange, len(changes))
	for _, c := range changes {
		to, err := lifecycle.NextStepState(c.step.State, c.trig)
		if err != nil {
			return nil, fmt.Errorf("step %s (%s): %w", c.step.Name, c.step.UUID, err)
		}
		meta := c.meta
		if meta == nil {
			meta = map[string]any{}
		}
		meta["trigger"] = string(c.trig)
		moves = append(moves, store.StepMove{UUID: c.step.UUID, From: c.step.State, To: to,
			NextAttemptAt: c.nextAttemptAt, Results: c.results, ExtraAttempts: c.extraAttempts,
			LeaseGuard: c.leaseGuard, Meta: meta})
		byID[c.step.UUID] = c
	}
	moved, err := e.store.StepsTransitionTx(ctx, tx, moves)
	if err != nil {
		return nil, err
	}
	out := make([]stepChange, 0, len(moved))
	now := j.Now()
	for _, m := range moved {
		c := byID[m.UUID]
		j.StepTransition(taskRef(t), stepRef(c.step), m.From, m.To, c.step.StateEnteredAt)
		r := &j.Records[len(j.Records)-1]
		r.Unrun = c.unrun
		r.Reason, _ = c.meta["reason"].(string)
		r.Final, _ = c.meta["why_final"].(string)
		r.Error, _ = c.meta["error"].(string)
		c.step.State, c.step.StateEnteredAt, c.step.NextAttemptAt = m.To, now, c.nextAttemptAt
		c.step.MaxAttempts += c.extraAttempts
		if c.results != nil {
			c.step.Results = c.results
		}
		out = append(out, c)
	}
	return out, nil
}

// evaluation is what the task's steps say about it.
type evaluation struct {
	ready        []*store.Step
	dueRetries   []*store.Step // waiting_for_retry whose backoff has elapsed
	inFlight     int
	backoff      int // waiting_for_retry, not yet due
	failed       int // in error
	satisfied    int
	total        int
	earliestWake *time.Time
}

// evaluate classifies a task's steps at time now. A pending step is ready
// when every step its template lists in depends_on is satisfied: tpl must be
// the version the task was created from, whose DAG its steps and edges were
// written from (versions are immutable), so readiness needs no read of
// workflow_step_edges and ignores Step.Parents. A step the template does not
// name is never ready (the stale-task sweep reports such a task). Pure.
func evaluate(tpl *template.Template, steps []store.Step, now time.Time) evaluation {
	ev := evaluation{total: len(steps)}
	state := make(map[string]lifecycle.StepState, len(steps))
	for i := range steps {
		state[steps[i].Name] = steps[i].State
	}
	for i := range steps {
		s := &steps[i]
		switch {
		case s.State.Satisfied():
			ev.satisfied++
		case s.State.InFlight():
			ev.inFlight++
		case s.State == lifecycle.StepError:
			ev.failed++
		case s.State == lifecycle.StepWaitingForRetry:
			if s.NextAttemptAt == nil || !s.NextAttemptAt.After(now) {
				ev.dueRetries = append(ev.dueRetries, s)
			} else {
				ev.backoff++
				if ev.earliestWake == nil || s.NextAttemptAt.Before(*ev.earliestWake) {
					at := *s.NextAttemptAt
					ev.earliestWake = &at
				}
			}
		case s.State == lifecycle.StepPending:
			ts, ready := tpl.StepByName(s.Name)
			for j := 0; ready && j < len(ts.DependsOn); j++ {
				ready = state[ts.DependsOn[j]].Satisfied()
			}
			if ready {
				ev.ready = append(ev.ready, s)
			}
		}
	}
	return ev
}

// drive advances a locked task through its transient states until it rests:
// in steps_in_process, waiting, blocked (hold policy) or a terminal state.
// steps must be the task's steps, read after the task was locked.
func (e *Engine) drive(ctx context.Context, tx store.Tx, j *telemetry.Journal, t *store.Task, steps []store.Step) error {
	tpl, err := e.template(ctx, t.TemplateID)
	if err != nil {
		return err
	}
	ref := taskRef(t)
	for guard := 0; guard < 32; guard++ {
		switch t.State {
		case lifecycle.TaskPending:
			// Recorded before the move so that it goes on the move's
			// span, next to task.initialize_requested (the catalog's
			// place); like every record, it is published only if the
			// move commits.
			j.Event(lifecycle.EventWorkflowTaskStarted, ref, nil)
			if err := e.moveTask(ctx, tx, j, t, lifecycle.TaskStart, nil, nil); err != nil {
				return err
			}

		case lifecycle.TaskInitializing:
			start := j.Now()
			ev := evaluate(tpl, steps, start)
			if len(ev.ready) > 0 {
				j.Event(lifecycle.EventWorkflowViableStepsDiscovered, ref, nil)
			} else {
				j.Event(lifecycle.EventWorkflowNoViableSteps, ref, nil)
			}
			j.Phase(telemetry.PhaseStepDiscovery, ref, start)
			switch {
			case len(steps) == 0:
				err = e.moveTask(ctx, tx, j, t, lifecycle.TaskNoSteps, nil, nil)
			case len(ev.ready) > 0:
				err = e.moveTask(ctx, tx, j, t, lifecycle.TaskReadyStepsFound, nil, map[string]any{"ready": len(ev.ready)})
			default:
				err = e.moveTask(ctx, tx, j, t, lifecycle.TaskNothingReady, nil, nil)
				if err == nil && (ev.failed > 0 || ev.satisfied == ev.total) {
					// A task an operator revived may have nothing left to
					// wait for: every step is done, or one is failed. Its
					// dependencies are as satisfied as they will ever be, so
					// it is evaluated at once (precedence of DESIGN §3)
					// instead of resting where nothing would wake it.
					err = e.moveTask(ctx, tx, j, t, lifecycle.TaskDependenciesSatisfied, nil, nil)
				}
			}
			if err != nil {
				return err
			}

		case lifecycle.TaskEvaluatingResults:
			if err := e.evaluateResults(ctx, tx, j, tpl, t, steps); err != nil {
				return err
			}

		case lifecycle.TaskEnqueuingSteps:
			if err := e.enqueue(ctx, tx, j, tpl, t, steps); err != nil {
				return err
			}

		case lifecycle.TaskBlockedByFailures:
			if tpl.FailurePolicy == template.Hold {
				return e.store.TaskWakeSetTx(ctx, tx, t.UUID, nil)
			}
			detail := failureDetail(steps)
			if err := e.moveTask(ctx, tx, j, t, lifecycle.TaskGiveUp, nil, map[string]any{"reason": detail}); err != nil {
				return err
			}
			if err := e.store.DLQCreateTx(ctx, tx, t.UUID, "step_failed", detail); err != nil {
				return err
			}

		default:
			// A resting state. Keep a timer for the earliest retry backoff,
			// whatever the task is waiting for, so that a retry is not held
			// up by a long-running sibling step.
			var wake *time.Time
			if !t.State.Terminal() {
				ev := evaluate(tpl, steps, j.Now())
				wake = ev.earliestWake
				if len(ev.dueRetries) > 0 {
					// A backoff elapsed while this transaction ran: wake at
					// once, or nothing would ever look at the task again.
					now := j.Now()
					wake = &now
				}
			}
			if sameTime(wake, t.WakeAt) {
				return nil // the last transition already stored it
			}
			t.WakeAt = wake
			return e.store.TaskWakeSetTx(ctx, tx, t.UUID, wake)
		}
	}
	return fmt.Errorf("task %s: state machine did not settle (last state %s)", t.UUID, t.State)
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

// evaluateResults decides where a task in evaluating_results goes, by the
// precedence of DESIGN §3: blocked by failures > ready steps > steps in
// flight > all complete > waiting for a retry backoff.
func (e *Engine) evaluateResults(ctx context.Context, tx store.Tx, j *telemetry.Journal, tpl *template.Template, t *store.Task, steps []store.Step) error {
	ref := taskRef(t)
	start := j.Now()
	ev := evaluate(tpl, steps, start)
	if len(ev.dueRetries) > 0 {
		changes := make([]stepChange, 0, len(ev.dueRetries))
		for _, s := range ev.dueRetries {
			changes = append(changes, stepChange{step: s, trig: lifecycle.StepRetry})
		}
		if _, err := e.moveSteps(ctx, tx, j, t, changes); err != nil {
			return err
		}
	}
	j.Phase(telemetry.PhaseResultEvaluation, ref, start)
	dstart := j.Now()
	ev = evaluate(tpl, steps, dstart)
	if len(ev.ready) > 0 {
		j.Event(lifecycle.EventWorkflowViableStepsDiscovered, ref, nil)
	} else {
		j.Event(lifecycle.EventWorkflowNoViableSteps, ref, nil)
	}
	j.Phase(telemetry.PhaseStepDiscovery, ref, dstart)
	counts := map[string]any{"ready": len(ev.ready), "in_flight": ev.inFlight, "failed": ev.failed,
		"backoff": ev.backoff, "satisfied": ev.satisfied, "total": ev.total}
	switch {
	case ev.failed > 0:
		return e.moveTask(ctx, tx, j, t, lifecycle.TaskStepFailedPermanently, nil, counts)
	case len(ev.ready) > 0:
		return e.moveTask(ctx, tx, j, t, lifecycle.TaskReadyStepsFound, nil, counts)
	case ev.inFlight > 0:
		return e.moveTask(ctx, tx, j, t, lifecycle.TaskNothingReady, ev.earliestWake, counts)
	case ev.satisfied == ev.total:
		return e.moveTask(ctx, tx, j, t, lifecycle.TaskAllStepsComplete, nil, counts)
	case ev.backoff > 0:
		return e.moveTask(ctx, tx, j, t, lifecycle.TaskOnlyBackoffRemains, ev.earliestWake, counts)
	default:
		// Pending steps whose parents can never be satisfied (a parent was
		// cancelled): wait; stale-task detection reports it.
		return e.moveTask(ctx, tx, j, t, lifecycle.TaskNothingReady, nil, counts)
	}
}

// enqueue dispatches the ready steps of a task in enqueuing_steps: each moves
// pending -> enqueued and its message is sent, in this transaction.
func (e *Engine) enqueue(ctx context.Context, tx store.Tx, j *telemetry.Journal, tpl *template.Template, t *store.Task, steps []store.Step) error {
	ref := taskRef(t)
	start := j.Now()
	ev := evaluate(tpl, steps, start)
	headers := make([]map[string]string, 0, len(ev.ready))
	byID := make(map[uuid.UUID]*store.Step, len(ev.ready))
	for _, s := range ev.ready {
		headers = append(headers, map[string]string{"traceparent": t.TraceParent})
		byID[s.UUID] = s
	}
	sent, err := e.store.StepsDispatchTx(ctx, tx, t, ev.ready, headers)
	if err != nil {
		return err
	}
	now := j.Now()
	for _, d := range sent {
		s := byID[d.StepUUID]
		j.StepTransition(ref, stepRef(s), lifecycle.StepPending, lifecycle.StepEnqueued, s.StateEnteredAt)
		s.State, s.StateEnteredAt = lifecycle.StepEnqueued, now
	}
	j.Phase(telemetry.PhaseStepEnqueuing, ref, start)
	return e.moveTask(ctx, tx, j, t, lifecycle.TaskStepsEnqueued, nil, map[string]any{"enqueued": len(sent)})
}

// wakeTrigger is the trigger that takes a resting task back to
// evaluating_results when something happened to its steps: a result arrived,
// a lease was reaped, or an operator acted on a step. The timer does not use
// it: a step's retry backoff elapsing is lifecycle.TaskBackoffExpired out of
// every resting state (WakeDueTasks), so that a retry is never held up by a
// long-running sibling and the wake-up does not publish a result or a
// satisfied dependency that did not happen.
func wakeTrigger(s lifecycle.TaskState) (lifecycle.TaskTrigger, bool) {
	switch s {
	case lifecycle.TaskStepsInProcess:
		return lifecycle.TaskStepResultReceived, true
	case lifecycle.TaskWaitingForDependencies:
		return lifecycle.TaskDependenciesSatisfied, true
	case lifecycle.TaskWaitingForRetry:
		return lifecycle.TaskBackoffExpired, true
	}
	return "", false
}

// backoffFor is the delay before the attempt after `attempt` of step s.
func (e *Engine) backoffFor(s *store.Step, attempt int) time.Duration {
	r := template.Retry{MaxAttempts: s.MaxAttempts, Retryable: s.Retryable, BackoffBaseMs: s.BackoffBaseMs, BackoffCapMs: s.BackoffCapMs}
	return r.Backoff(attempt, e.jitter)
}
