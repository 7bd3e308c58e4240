package orchestration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/jsonenc"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
)

// ResultNotice is the message tasker.step_submit_result sends to
// orchestration_step_results. It names a step and an attempt; the result
// itself is on the step row.
type ResultNotice struct {
	TaskUUID uuid.UUID `json:"task_uuid"`
	StepUUID uuid.UUID `json:"step_uuid"`
	Attempt  int       `json:"attempt"`
	Success  bool      `json:"success"`
}

// StepError is the error object a worker submits with a failure.
type StepError struct {
	Message   string `json:"message"`
	Retryable *bool  `json:"retryable,omitempty"`
	Kind      string `json:"kind,omitempty"`
}

// DecodeResultNotice parses and checks a result notice.
func DecodeResultNotice(body []byte) (ResultNotice, error) {
	n, err := decodeNotice(body)
	if err != nil {
		return n, fmt.Errorf("result notice is not a JSON object with task_uuid, step_uuid, attempt, success: %w", err)
	}
	if n.TaskUUID == uuid.Nil || n.StepUUID == uuid.Nil {
		return n, fmt.Errorf("result notice lacks task_uuid or step_uuid")
	}
	if n.Attempt < 1 {
		return n, fmt.Errorf("result notice has attempt %d; attempts start at 1", n.Attempt)
	}
	return n, nil
}

// decodeNotice is json.Unmarshal of a notice, with the same result and
// error; the notices the worker protocol writes are read without
// reflection.
func decodeNotice(body []byte) (ResultNotice, error) {
	var n ResultNotice
	if jsonenc.Fields(body, func(k []byte, kind jsonenc.Kind, text []byte) bool {
		var ok bool
		switch string(k) {
		case "task_uuid":
			n.TaskUUID, ok = jsonenc.AsUUID(kind, text)
		case "step_uuid":
			n.StepUUID, ok = jsonenc.AsUUID(kind, text)
		case "attempt":
			n.Attempt, ok = jsonenc.AsInt(kind, text)
		case "success":
			n.Success, ok = kind == jsonenc.True, kind == jsonenc.True || kind == jsonenc.False
		}
		return ok
	}) {
		return n, nil
	}
	n = ResultNotice{}
	err := json.Unmarshal(body, &n)
	return n, err
}

// Poison is a message that can never be processed; the caller archives it.
type Poison struct {
	MsgID  int64
	Reason string
}

// ProcessResults applies a batch of result notices. Notices are grouped by
// task; each task is handled in its own transaction that also deletes its
// notices, so a crash re-delivers exactly the notices whose effects were not
// committed, and a duplicate notice finds its step already moved and changes
// nothing. It returns the messages that can never be processed.
func (e *Engine) ProcessResults(ctx context.Context, msgs []queue.Message) ([]Poison, error) {
	var poison []Poison
	byTask := map[uuid.UUID][]noticeMsg{}
	for _, m := range msgs {
		n, err := DecodeResultNotice(m.Body)
		if err != nil {
			poison = append(poison, Poison{MsgID: m.ID, Reason: err.Error()})
			continue
		}
		byTask[n.TaskUUID] = append(byTask[n.TaskUUID], noticeMsg{n: n, msgID: m.ID, headers: m.Headers})
	}
	tasks := make([]uuid.UUID, 0, len(byTask))
	for id := range byTask {
		tasks = append(tasks, id)
	}
	sortUUIDs(tasks)
	if len(tasks) == 0 {
		return poison, nil
	}
	p, err := e.processResultsBatch(ctx, tasks, byTask)
	if err == nil {
		return append(poison, p...), nil
	}
	if ctx.Err() != nil {
		return poison, err
	}
	// One task's failure must not hold up the others: retry them one by one.
	e.logger.Warn("batch of step results failed; processing its tasks one by one", "tasks", len(tasks), "error", err)
	var firstErr error
	for _, id := range tasks {
		p, err := e.processTaskResults(ctx, id, byTask[id])
		poison = append(poison, p...)
		switch {
		case err == nil:
		case store.IsLockTimeout(err) && ctx.Err() == nil:
			// Not a failure of ours: the notices stay in the queue and
			// come back after their visibility timeout.
			e.logger.Warn("task locked by another session for longer than the results' lock timeout; its results wait for their next delivery",
				"task_uuid", id, "notices", len(byTask[id]), "lock_timeout", resultsLockTimeout.String())
		default:
			e.logger.Error("process step results", "task_uuid", id, "error", err)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	return poison, firstErr
}

// resultsLockTimeout bounds how long a batch of results waits for a task
// another session holds (an operator command, a replica, a long manual
// transaction): past it the batch's tasks are processed one by one, and the
// locked task's notices wait for their next delivery instead of stalling
// every other task's results until the statement timeout.
const resultsLockTimeout = 3 * time.Second

// RedriveStrandedResults applies the results of steps that have waited in
// enqueued_(as_error_)for_orchestration for longer than olderThan, as if
// their notices had arrived: a notice can be lost to the poison archive
// (read too often while its task was locked, or held by an orchestrator
// that crashed many times) and nothing else would ever process the step. A
// notice that still turns up later finds its step moved and changes
// nothing. Each task is its own transaction. It returns how many results
// it applied.
func (e *Engine) RedriveStrandedResults(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	stranded, err := e.store.StrandedResults(ctx, olderThan, limit)
	if err != nil || len(stranded) == 0 {
		return 0, err
	}
	byTask := map[uuid.UUID][]noticeMsg{}
	var tasks []uuid.UUID
	for _, r := range stranded {
		if _, seen := byTask[r.TaskUUID]; !seen {
			tasks = append(tasks, r.TaskUUID)
		}
		byTask[r.TaskUUID] = append(byTask[r.TaskUUID], noticeMsg{
			n: ResultNotice{TaskUUID: r.TaskUUID, StepUUID: r.StepUUID, Attempt: r.Attempt, Success: r.Success}})
	}
	applied := 0
	for _, id := range tasks {
		if _, err := e.processTaskResults(ctx, id, byTask[id]); err != nil {
			if store.IsLockTimeout(err) && ctx.Err() == nil {
				continue // the next sweep tries again
			}
			return applied, fmt.Errorf("re-drive results of task %s: %w", id, err)
		}
		for _, nm := range byTask[id] {
			e.logger.Warn("step result applied without its notice: the notice was never processed (archived as poison, or lost)",
				"task_uuid", id, "step_uuid", nm.n.StepUUID, "attempt", nm.n.Attempt, "success", nm.n.Success,
				"waited_longer_than", olderThan.String())
			applied++
		}
	}
	return applied, nil
}

func hasStep(steps []store.Step, id uuid.UUID) bool {
	for i := range steps {
		if steps[i].UUID == id {
			return true
		}
	}
	return false
}

type noticeMsg struct {
	n       ResultNotice
	msgID   int64
	headers map[string]string
}

func (e *Engine) processTaskResults(ctx context.Context, taskID uuid.UUID, notices []noticeMsg) ([]Poison, error) {
	return e.processResultsBatch(ctx, []uuid.UUID{taskID}, map[uuid.UUID][]noticeMsg{taskID: notices})
}

// processResultsBatch applies the notices of several tasks in one
// transaction: one commit for the batch instead of one per task. Tasks are
// locked in uuid order, like every multi-task transaction, so replicas
// cannot deadlock. Notices naming unknown tasks are returned as poison and
// left in the queue for the caller to archive.
func (e *Engine) processResultsBatch(ctx context.Context, taskIDs []uuid.UUID, byTask map[uuid.UUID][]noticeMsg) ([]Poison, error) {
	var poison []Poison
	err := e.run(ctx, func(tx store.Tx, j *telemetry.Journal) error {
		poison = poison[:0]
		tasks, stepsByTask, err := e.store.TasksLockWithStepsTx(ctx, tx, taskIDs, noticeSteps(taskIDs, byTask), resultsLockTimeout)
		if err != nil {
			return err
		}
		found := make(map[uuid.UUID]bool, len(tasks))
		var ids []int64
		for _, t := range tasks {
			found[t.UUID] = true
			for _, nm := range byTask[t.UUID] {
				switch {
				case nm.msgID == 0: // re-driven: there is no notice
				case !hasStep(stepsByTask[t.UUID], nm.n.StepUUID):
					// Notices come from the protocol functions, which only
					// name real steps: this one was forged or corrupted.
					poison = append(poison, Poison{MsgID: nm.msgID, Reason: fmt.Sprintf(
						"result notice for unknown step %s of task %s", nm.n.StepUUID, t.UUID)})
				default:
					ids = append(ids, nm.msgID)
				}
			}
		}
		for _, id := range taskIDs {
			if !found[id] {
				for _, nm := range byTask[id] {
					poison = append(poison, Poison{MsgID: nm.msgID, Reason: "result notice for unknown task " + id.String()})
				}
			}
		}
		// The notices are consumed whatever happens below: their effects
		// commit with their deletion.
		if err := e.store.MessagesDeleteTx(ctx, tx, queue.StepResultsQueue, ids); err != nil {
			return err
		}
		var unreported []unreportedRun
		for i := range tasks {
			if err := e.applyTaskNotices(ctx, tx, j, &tasks[i], stepsByTask[tasks[i].UUID], byTask[tasks[i].UUID], &unreported); err != nil {
				return err
			}
		}
		return e.reportWorkerRuns(ctx, tx, j, unreported)
	})
	return poison, err
}

// noticeSteps are the steps the notices name, whose results the lock read
// brings for the domain events.
func noticeSteps(taskIDs []uuid.UUID, byTask map[uuid.UUID][]noticeMsg) []uuid.UUID {
	var out []uuid.UUID
	for _, id := range taskIDs {
		for _, nm := range byTask[id] {
			out = append(out, nm.n.StepUUID)
		}
	}
	return out
}

// unreportedRun is an applied result whose worker did not say that it
// published its worker-side events (lifecycle.WorkerEventsHeader).
type unreportedRun struct {
	task telemetry.TaskRef
	step telemetry.StepRef
	err  string // the failure's message
}

// reportWorkerRuns publishes, for workers that do not publish their own
// (another language's, a Go worker without an observer), the worker-side
// events of the runs whose results this transaction applied, timed by the
// claim and the submission the steps' transitions recorded. A run whose
// recorded submission is of another attempt than the notice's is left out.
func (e *Engine) reportWorkerRuns(ctx context.Context, tx store.Tx, j *telemetry.Journal, runs []unreportedRun) error {
	if len(runs) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(runs))
	for i, r := range runs {
		ids[i] = r.step.UUID
	}
	recorded, err := e.store.StepRunsTx(ctx, tx, ids)
	if err != nil {
		return err
	}
	byStep := make(map[uuid.UUID]store.StepRun, len(recorded))
	for _, r := range recorded {
		byStep[r.StepUUID] = r
	}
	for _, u := range runs {
		r, ok := byStep[u.step.UUID]
		if !ok || r.Attempt != u.step.Attempt {
			continue
		}
		// The Go SDK's labels for a result stored (worker.Outcome).
		outcome := "success"
		if r.SubmittedTo == lifecycle.StepEnqueuedAsErrorForOrchestration {
			outcome = "failure"
		}
		j.WorkerRun(u.task, u.step, r.ClaimedAt, r.SubmittedAt, r.SubmittedTo, outcome, r.WorkerID, u.err)
	}
	return nil
}

// applyTaskNotices applies one locked task's result notices and drives it.
// An applied notice without lifecycle.WorkerEventsHeader is added to
// unreported.
func (e *Engine) applyTaskNotices(ctx context.Context, tx store.Tx, j *telemetry.Journal, t *store.Task, steps []store.Step, notices []noticeMsg, unreported *[]unreportedRun) error {
	ref := taskRef(t)
	applied := 0
	start := j.Now()
	for _, nm := range notices {
		j.Event(lifecycle.EventWorkflowOrchestrationRequested, ref, nil)
		ok, err := e.applyResult(ctx, tx, j, t, steps, nm.n)
		if err != nil {
			return err
		}
		if ok {
			applied++
			// A re-driven result (no notice) says nothing about its worker.
			if nm.msgID != 0 && nm.headers[lifecycle.WorkerEventsHeader] != lifecycle.WorkerEventsPublished {
				for i := range steps {
					if s := &steps[i]; s.UUID == nm.n.StepUUID {
						var se StepError
						if !nm.n.Success {
							// The failure's error (read for failures only).
							_ = json.Unmarshal(s.LastError, &se)
						}
						*unreported = append(*unreported, unreportedRun{task: ref, err: se.Message,
							step: telemetry.StepRef{UUID: s.UUID, Name: s.Name, Handler: s.Handler, Attempt: nm.n.Attempt}})
					}
				}
			}
		}
	}
	j.Phase(telemetry.PhaseResultEvaluation, ref, start)
	if applied == 0 || t.State.Terminal() {
		return nil
	}
	trig, ok := wakeTrigger(t.State)
	if !ok {
		// blocked_by_failures (hold): the result is recorded; the task
		// stays held for an operator.
		return nil
	}
	if err := e.moveTask(ctx, tx, j, t, trig, nil, nil); err != nil {
		return err
	}
	return e.drive(ctx, tx, j, t, steps)
}

// applyResult moves one step out of enqueued_(as_error_)for_orchestration if
// the notice matches its current attempt; otherwise (a duplicate, or a result
// overtaken by a cancellation or a lease reap) it changes nothing.
func (e *Engine) applyResult(ctx context.Context, tx store.Tx, j *telemetry.Journal, t *store.Task, steps []store.Step, n ResultNotice) (bool, error) {
	var s *store.Step
	for i := range steps {
		if steps[i].UUID == n.StepUUID {
			s = &steps[i]
			break
		}
	}
	if s == nil || s.Attempts != n.Attempt {
		e.logger.Debug("stale step result ignored", "task_uuid", t.UUID, "step_uuid", n.StepUUID, "attempt", n.Attempt)
		return false, nil
	}
	ref := taskRef(t)
	var change stepChange
	switch s.State {
	case lifecycle.StepEnqueuedForOrchestration:
		change = stepChange{step: s, trig: lifecycle.StepResultProcessed}
	case lifecycle.StepEnqueuedAsErrorForOrchestration:
		change = e.failureChange(s, "handler failed")
	default:
		e.logger.Debug("duplicate step result ignored", "task_uuid", t.UUID, "step_uuid", s.UUID, "state", s.State)
		return false, nil
	}
	moved, err := e.moveSteps(ctx, tx, j, t, []stepChange{change})
	if err != nil || len(moved) == 0 {
		return false, err
	}
	sr := stepRef(s)
	if change.trig == lifecycle.StepResultProcessed {
		j.Event(lifecycle.EventWorkflowStepCompleted, ref, &sr)
	} else {
		j.Event(lifecycle.EventWorkflowStepFailed, ref, &sr)
	}
	return true, nil
}

// failureChange decides what a failed attempt (a failed result, or an
// expired or released lease) leads to: another attempt after a backoff, at
// once for a step released before its handler started, or a permanent
// error.
func (e *Engine) failureChange(s *store.Step, why string) stepChange {
	leased := s.State == lifecycle.StepInProgress
	var se StepError
	rel, released := releaseOf(s)
	switch {
	case released:
		// The worker gave the attempt back (tasker.step_release); the
		// release's retryable says nothing about the step.
		why, se.Message = rel.reason(), rel.Message
	case len(s.LastError) > 0 && !leased:
		// A failed result carries this attempt's error; for an expired
		// lease the stored error is an earlier attempt's (or an earlier
		// release's) and says nothing about this one, so only the step's
		// own setting counts.
		_ = json.Unmarshal(s.LastError, &se) // a malformed error object is treated as retryable
	}
	retryable := s.Retryable && (se.Retryable == nil || *se.Retryable)
	meta := map[string]any{"reason": why, "attempt": s.Attempts}
	if se.Message != "" {
		meta["error"] = se.Message
	}
	if released && !rel.handlerStarted() {
		// Nothing of the step ran, so nothing can be unsafe to repeat and
		// there is no failure to back off from: it is retried at once,
		// whatever its retryable setting, on the attempt the release gave
		// back (max_attempts grew by one).
		at := e.clock()
		return stepChange{step: s, trig: lifecycle.StepLeaseExpiredRetry, nextAttemptAt: &at, meta: meta, leaseGuard: true, unrun: true}
	}
	if retryable && s.Attempts < s.MaxAttempts {
		at := e.clock().Add(e.backoffFor(s, s.Attempts))
		trig := lifecycle.StepRetryScheduled
		if leased {
			trig = lifecycle.StepLeaseExpiredRetry
		}
		return stepChange{step: s, trig: trig, nextAttemptAt: &at, meta: meta, leaseGuard: leased}
	}
	switch {
	case !retryable && released:
		// The handler started and was abandoned: it may have had side
		// effects that a step which is not retryable must not repeat.
		meta["why_final"] = "released by its worker while its handler ran, and the step is not retryable"
	case !retryable:
		meta["why_final"] = "error is not retryable"
	default:
		meta["why_final"] = fmt.Sprintf("attempts exhausted (%d of %d)", s.Attempts, s.MaxAttempts)
	}
	trig := lifecycle.StepFailedPermanently
	if leased {
		trig = lifecycle.StepLeaseExpiredFail
	}
	return stepChange{step: s, trig: trig, meta: meta, leaseGuard: leased}
}

// stepRelease is the last_error tasker.step_release stores when a worker
// gives a claimed step back (migration 00026).
type stepRelease struct {
	Message        string `json:"message"`
	Kind           string `json:"kind"`
	Attempt        *int   `json:"attempt"`
	HandlerStarted *bool  `json:"handler_started"`
}

// releaseOf returns the release of step s's current attempt, if its worker
// released it. A step in progress keeps the last_error of its earlier
// attempts, so a release counts only when it names this attempt; one
// stored before 00026 names none and does not count (the lease expiry is
// then judged as any other).
func releaseOf(s *store.Step) (stepRelease, bool) {
	var r stepRelease
	if s.State != lifecycle.StepInProgress || len(s.LastError) == 0 || json.Unmarshal(s.LastError, &r) != nil {
		return stepRelease{}, false
	}
	return r, r.Kind == "released" && r.Attempt != nil && *r.Attempt == s.Attempts
}

// handlerStarted reports whether the released attempt's handler had
// started; a release that does not say is taken to have started it.
func (r stepRelease) handlerStarted() bool { return r.HandlerStarted == nil || *r.HandlerStarted }

// reason is the transition's reason for ending a released attempt.
func (r stepRelease) reason() string {
	if r.handlerStarted() {
		return "released by its worker after its handler started"
	}
	return "released by its worker before its handler ran"
}

// ReapExpiredLeases finds steps whose worker stopped renewing its lease (it
// died or lost its connection) or gave the step back (tasker.step_release
// ends the lease at once) and ends that attempt: the step is retried after
// its backoff (at once when it was released unrun), or fails when attempts
// are exhausted or it is not retryable (failureChange). It returns the
// number of steps reaped.
func (e *Engine) ReapExpiredLeases(ctx context.Context, limit int) (int, error) {
	tasks, err := e.store.TasksWithExpiredLeases(ctx, limit)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, id := range tasks {
		n, err := e.reapTask(ctx, id)
		if store.IsLockTimeout(err) && ctx.Err() == nil {
			// Held by another session: the next pass reaps it. The
			// others' leases must not wait for it.
			e.logger.Warn("expired leases of a locked task left for the next pass", "task_uuid", id,
				"lock_timeout", resultsLockTimeout.String())
			continue
		}
		if err != nil {
			return total, fmt.Errorf("reap leases of task %s: %w", id, err)
		}
		total += n
	}
	return total, nil
}

func (e *Engine) reapTask(ctx context.Context, id uuid.UUID) (int, error) {
	reaped := 0
	err := e.run(ctx, func(tx store.Tx, j *telemetry.Journal) error {
		reaped = 0
		if err := e.store.LockTimeoutTx(ctx, tx, resultsLockTimeout); err != nil {
			return err
		}
		t, err := e.store.TaskLockTx(ctx, tx, id)
		if err != nil {
			return err
		}
		steps, err := e.store.TaskStepsTx(ctx, tx, id)
		if err != nil {
			return err
		}
		now := e.clock()
		start := j.Now()
		var changes []stepChange
		for i := range steps {
			s := &steps[i]
			if s.State == lifecycle.StepInProgress && s.LeaseExpiresAt != nil && s.LeaseExpiresAt.Before(now) {
				c := e.failureChange(s, "lease expired: the worker stopped heartbeating")
				changes = append(changes, c)
			}
		}
		moved, err := e.moveSteps(ctx, tx, j, &t, changes)
		if err != nil {
			return err
		}
		reaped = len(moved)
		if reaped == 0 || t.State.Terminal() {
			return nil
		}
		j.Phase(telemetry.PhaseResultEvaluation, taskRef(&t), start)
		j.Event(lifecycle.EventWorkflowOrchestrationRequested, taskRef(&t), nil)
		trig, ok := wakeTrigger(t.State)
		if !ok {
			return nil
		}
		if err := e.moveTask(ctx, tx, j, &t, trig, nil, map[string]any{"reason": "lease expired"}); err != nil {
			return err
		}
		return e.drive(ctx, tx, j, &t, steps)
	})
	return reaped, err
}

// WakeDueTasks re-evaluates tasks whose retry backoff has elapsed. Replicas
// share the work: each locks the due tasks no other replica holds.
func (e *Engine) WakeDueTasks(ctx context.Context, limit int) (int, error) {
	woken := 0
	err := e.run(ctx, func(tx store.Tx, j *telemetry.Journal) error {
		woken = 0
		due, err := e.store.TasksDueTx(ctx, tx, limit)
		if err != nil {
			return err
		}
		for i := range due {
			t := &due[i]
			// Whatever the task rests in, the trigger is the backoff's
			// (DESIGN §3: waiting_for_retry; lifecycle.TaskBackoffExpired
			// for the other resting states).
			if _, err := lifecycle.NextTaskState(t.State, lifecycle.TaskBackoffExpired); err != nil {
				if err := e.store.TaskWakeSetTx(ctx, tx, t.UUID, nil); err != nil {
					return err
				}
				continue
			}
			steps, err := e.store.TaskStepsTx(ctx, tx, t.UUID)
			if err != nil {
				return err
			}
			tpl, err := e.template(ctx, t.TemplateID)
			if err != nil {
				return err
			}
			ev := evaluate(tpl, steps, e.clock())
			if len(ev.dueRetries) == 0 {
				// Woken early (clock skew between replicas): keep waiting.
				if err := e.store.TaskWakeSetTx(ctx, tx, t.UUID, ev.earliestWake); err != nil {
					return err
				}
				continue
			}
			j.Event(lifecycle.EventWorkflowOrchestrationRequested, taskRef(t), nil)
			if err := e.moveTask(ctx, tx, j, t, lifecycle.TaskBackoffExpired, nil, map[string]any{"reason": "retry backoff elapsed"}); err != nil {
				return err
			}
			if err := e.drive(ctx, tx, j, t, steps); err != nil {
				return err
			}
			woken++
		}
		return nil
	})
	return woken, err
}

// sortUUIDs sorts ids in Postgres's uuid order, the order task locks are
// taken in: the order of their bytes, and of their text forms.
func sortUUIDs(ids []uuid.UUID) {
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
}
