package orchestration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/internal/template"
)

// operatorKey is the context key of who performs operator actions.
type operatorKey struct{}

// WithOperator returns a context whose operator actions are recorded as done
// by who (the API sets the name of the caller's API key). Without it they
// are recorded as done by "operator".
func WithOperator(ctx context.Context, who string) context.Context {
	return context.WithValue(ctx, operatorKey{}, who)
}

func operatorOf(ctx context.Context) string {
	if who, _ := ctx.Value(operatorKey{}).(string); who != "" {
		return who
	}
	return "operator"
}

// actionMeta is the metadata of the transitions an operator action makes:
// why, and who asked (the API key's name; "operator" without auth).
func actionMeta(ctx context.Context, reason string) map[string]any {
	return map[string]any{"reason": reason, "by": operatorOf(ctx)}
}

// closeDLQEntries resolves the open DLQ entries of a task that an operator
// action took out of error or blocked_by_failures (from is the state before
// the action, t the task after it), in the action's transaction: the entry
// asked for exactly that decision, and left pending it would keep a handled
// task on the triage list. The note says what was done, by whom and where
// the task went. A task that is still failed keeps its entries open; if a
// revived task fails again, a new entry is filed.
func (e *Engine) closeDLQEntries(ctx context.Context, tx store.Tx, t *store.Task, from lifecycle.TaskState, action, reason string) error {
	failed := func(s lifecycle.TaskState) bool {
		return s == lifecycle.TaskError || s == lifecycle.TaskBlockedByFailures
	}
	if !failed(from) || failed(t.State) {
		return nil
	}
	who := operatorOf(ctx)
	note := action
	if reason != "" {
		note += ": " + reason
	}
	note += fmt.Sprintf(" (by %s; task %s -> %s)", who, from, t.State)
	_, err := e.store.DLQResolveOpenTx(ctx, tx, t.UUID, note, who)
	return err
}

// lockTask locks a task for an operator action, mapping a missing task to
// ErrNotFound.
func (e *Engine) lockTask(ctx context.Context, tx store.Tx, id uuid.UUID) (store.Task, []store.Step, error) {
	t, err := e.store.TaskLockTx(ctx, tx, id)
	if errors.Is(err, store.ErrNotFound) {
		return t, nil, fmt.Errorf("%w: task %s", ErrNotFound, id)
	}
	if err != nil {
		return t, nil, err
	}
	steps, err := e.store.TaskStepsTx(ctx, tx, id)
	return t, steps, err
}

// CancelTask cancels a task that has not finished: every step that is not
// terminal moves to cancelled (a worker running one finds out at its next
// heartbeat, and its result is refused), then the task moves to cancelled.
// Queued step messages stay where they are; claiming them fails and they are
// deleted.
func (e *Engine) CancelTask(ctx context.Context, id uuid.UUID, reason string) (store.Task, error) {
	if err := ValidateText("reason", reason, MaxReasonLen); err != nil {
		return store.Task{}, err
	}
	var out store.Task
	err := e.run(ctx, func(tx store.Tx, j *telemetry.Journal) error {
		t, steps, err := e.lockTask(ctx, tx, id)
		if err != nil {
			return err
		}
		if t.State.Terminal() {
			return fmt.Errorf("%w: task %s is %s and cannot be cancelled", ErrWrongState, id, t.State)
		}
		j.Event(lifecycle.EventWorkflowOrchestrationRequested, taskRef(&t), nil)
		meta := actionMeta(ctx, reason)
		var changes []stepChange
		for i := range steps {
			if !steps[i].State.Terminal() {
				changes = append(changes, stepChange{step: &steps[i], trig: lifecycle.StepCancel, meta: meta})
			}
		}
		if err := e.moveStepsRetrying(ctx, tx, j, &t, changes); err != nil {
			return err
		}
		if err := e.moveTask(ctx, tx, j, &t, lifecycle.TaskCancel, nil, meta); err != nil {
			return err
		}
		out = t
		return nil
	})
	return out, err
}

// moveStepsRetrying applies changes that must all happen although a worker
// may move a step between our read and our write (claim, submit): a step
// whose swap lost is re-read and the trigger applied to its new state.
func (e *Engine) moveStepsRetrying(ctx context.Context, tx store.Tx, j *telemetry.Journal, t *store.Task, changes []stepChange) error {
	for round := 0; round < 5 && len(changes) > 0; round++ {
		moved, err := e.moveSteps(ctx, tx, j, t, changes)
		if err != nil {
			return err
		}
		done := make(map[uuid.UUID]bool, len(moved))
		for _, m := range moved {
			done[m.step.UUID] = true
		}
		var retry []stepChange
		var fresh []store.Step
		for _, c := range changes {
			if done[c.step.UUID] {
				continue
			}
			if fresh == nil {
				fresh, err = e.store.TaskStepsTx(ctx, tx, t.UUID)
				if err != nil {
					return err
				}
			}
			for i := range fresh {
				if fresh[i].UUID == c.step.UUID {
					c.step.State, c.step.Attempts, c.step.StateEnteredAt = fresh[i].State, fresh[i].Attempts, fresh[i].StateEnteredAt
				}
			}
			if _, err := lifecycle.NextStepState(c.step.State, c.trig); err != nil {
				continue // it reached a state where the action no longer applies
			}
			retry = append(retry, c)
		}
		changes = retry
	}
	if len(changes) > 0 {
		return fmt.Errorf("task %s: steps kept changing under an operator action", t.UUID)
	}
	return nil
}

// RetryTask restarts a task in error, or held in blocked_by_failures by the
// hold policy: its failed steps get their attempts back and return to
// pending, and the task goes error -> pending (or blocked_by_failures ->
// evaluating_results, the move a step retry of a held task makes) and is
// driven again at once. Steps still enqueued get their messages sent again
// (resendEnqueued).
func (e *Engine) RetryTask(ctx context.Context, id uuid.UUID, reason string) (store.Task, error) {
	if err := ValidateText("reason", reason, MaxReasonLen); err != nil {
		return store.Task{}, err
	}
	var out store.Task
	err := e.run(ctx, func(tx store.Tx, j *telemetry.Journal) error {
		t, steps, err := e.lockTask(ctx, tx, id)
		if err != nil {
			return err
		}
		trig := lifecycle.TaskRetry
		switch t.State {
		case lifecycle.TaskError:
		case lifecycle.TaskBlockedByFailures:
			trig = lifecycle.TaskUnblocked
		default:
			return fmt.Errorf("%w: task %s is %s; only a task in error or blocked_by_failures can be retried", ErrWrongState, id, t.State)
		}
		from := t.State
		j.Event(lifecycle.EventWorkflowOrchestrationRequested, taskRef(&t), nil)
		tpl, err := e.template(ctx, t.TemplateID)
		if err != nil {
			return err
		}
		var changes []stepChange
		for i := range steps {
			s := &steps[i]
			if s.State == lifecycle.StepError || s.State == lifecycle.StepWaitingForRetry {
				changes = append(changes, stepChange{step: s, trig: lifecycle.StepRetry,
					extraAttempts: grantAttempts(tpl, s), meta: actionMeta(ctx, "task retried by operator")})
			}
		}
		if _, err := e.moveSteps(ctx, tx, j, &t, changes); err != nil {
			return err
		}
		meta := actionMeta(ctx, reason)
		if n, err := e.resendEnqueued(ctx, tx, &t, steps); err != nil {
			return err
		} else if n > 0 {
			meta["resent_step_messages"] = n
		}
		if err := e.moveTask(ctx, tx, j, &t, trig, nil, meta); err != nil {
			return err
		}
		if err := e.drive(ctx, tx, j, &t, steps); err != nil {
			return err
		}
		if err := e.closeDLQEntries(ctx, tx, &t, from, "task retried", reason); err != nil {
			return err
		}
		out = t
		return nil
	})
	return out, err
}

// resendEnqueued sends the messages of the task's enqueued steps again
// (store.StepsResendTx): a task in error with a step still enqueued was
// given up as stale while that step waited in its queue, and its message
// may be gone. It returns how many it sent.
func (e *Engine) resendEnqueued(ctx context.Context, tx store.Tx, t *store.Task, steps []store.Step) (int, error) {
	var waiting []*store.Step
	for i := range steps {
		if steps[i].State == lifecycle.StepEnqueued {
			waiting = append(waiting, &steps[i])
		}
	}
	n, err := e.store.StepsResendTx(ctx, tx, t, waiting, map[string]string{"traceparent": t.TraceParent})
	for _, s := range waiting[:n] {
		e.logger.Info("step message sent again by a task retry", "task_uuid", t.UUID, "step_uuid", s.UUID,
			"step_name", s.Name, "attempt", s.Attempts+1)
	}
	return n, err
}

// grantAttempts is how many attempts an operator retry adds to a step so
// that it has its template's full allowance again. Attempts already used stay
// counted, so attempt numbers are never reused and a stale message for an
// old attempt can never be claimed.
func grantAttempts(tpl *template.Template, s *store.Step) int {
	per := 1
	if ts, ok := tpl.StepByName(s.Name); ok && ts.Retry.MaxAttempts > 0 {
		per = ts.Retry.MaxAttempts
	}
	extra := s.Attempts + per - s.MaxAttempts
	if extra < 0 {
		extra = 0
	}
	return extra
}

// ResolveTask marks a task that gave up (error, or held in
// blocked_by_failures) as resolved by an operator.
func (e *Engine) ResolveTask(ctx context.Context, id uuid.UUID, reason string) (store.Task, error) {
	if err := ValidateText("reason", reason, MaxReasonLen); err != nil {
		return store.Task{}, err
	}
	var out store.Task
	err := e.run(ctx, func(tx store.Tx, j *telemetry.Journal) error {
		t, _, err := e.lockTask(ctx, tx, id)
		if err != nil {
			return err
		}
		if _, err := lifecycle.NextTaskState(t.State, lifecycle.TaskResolve); err != nil {
			return fmt.Errorf("%w: task %s is %s; only a task in error or blocked_by_failures can be resolved", ErrWrongState, id, t.State)
		}
		j.Event(lifecycle.EventWorkflowOrchestrationRequested, taskRef(&t), nil)
		from := t.State
		if err := e.moveTask(ctx, tx, j, &t, lifecycle.TaskResolve, nil, actionMeta(ctx, reason)); err != nil {
			return err
		}
		if err := e.closeDLQEntries(ctx, tx, &t, from, "task resolved", reason); err != nil {
			return err
		}
		out = t
		return nil
	})
	return out, err
}

// StepAction is an operator action on one step.
type StepAction string

// The step actions.
const (
	// StepActionResolve marks the step resolved_manually, optionally with a
	// result that its children receive as if the step had produced it.
	StepActionResolve StepAction = "resolve"
	// StepActionRetry returns a failed step to pending with fresh attempts.
	StepActionRetry StepAction = "retry"
)

// StepOperate applies an operator action to a step, then lets its task move
// on: a task in error is restarted (error -> pending) unless another of its
// steps is still failed, a held task is unblocked (and held again if a
// failed step remains), a running task is re-evaluated at once.
func (e *Engine) StepOperate(ctx context.Context, stepID uuid.UUID, action StepAction, result json.RawMessage, reason string) (store.Step, store.Task, error) {
	if err := ValidateText("reason", reason, MaxReasonLen); err != nil {
		return store.Step{}, store.Task{}, err
	}
	if err := ValidateJSON("result", result); err != nil {
		return store.Step{}, store.Task{}, err
	}
	st, err := e.store.StepGet(ctx, stepID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Step{}, store.Task{}, fmt.Errorf("%w: step %s", ErrNotFound, stepID)
	}
	if err != nil {
		return store.Step{}, store.Task{}, err
	}
	var outStep store.Step
	var outTask store.Task
	err = e.run(ctx, func(tx store.Tx, j *telemetry.Journal) error {
		t, steps, err := e.lockTask(ctx, tx, st.TaskUUID)
		if err != nil {
			return err
		}
		var s *store.Step
		for i := range steps {
			if steps[i].UUID == stepID {
				s = &steps[i]
			}
		}
		if s == nil {
			return fmt.Errorf("%w: step %s", ErrNotFound, stepID)
		}
		if t.State == lifecycle.TaskCancelled || t.State == lifecycle.TaskComplete || t.State == lifecycle.TaskResolvedManually {
			return fmt.Errorf("%w: task %s is %s", ErrWrongState, t.UUID, t.State)
		}
		tpl, err := e.template(ctx, t.TemplateID)
		if err != nil {
			return err
		}
		var change stepChange
		meta := actionMeta(ctx, reason)
		switch action {
		case StepActionResolve:
			if s.State.Terminal() {
				return fmt.Errorf("%w: step %s is %s", ErrWrongState, s.Name, s.State)
			}
			change = stepChange{step: s, trig: lifecycle.StepResolve, results: result, meta: meta}
		case StepActionRetry:
			if s.State != lifecycle.StepError && s.State != lifecycle.StepWaitingForRetry {
				return fmt.Errorf("%w: step %s is %s; only a step in error or waiting_for_retry can be retried", ErrWrongState, s.Name, s.State)
			}
			change = stepChange{step: s, trig: lifecycle.StepRetry, extraAttempts: grantAttempts(tpl, s), meta: meta}
		default:
			return fieldErr("action", "must be resolve or retry, not %q", action)
		}
		j.Event(lifecycle.EventWorkflowOrchestrationRequested, taskRef(&t), nil)
		if err := e.moveStepsRetrying(ctx, tx, j, &t, []stepChange{change}); err != nil {
			return err
		}
		from := t.State
		switch t.State {
		case lifecycle.TaskError:
			// By the precedence of DESIGN §3 a failed step that cannot run
			// wins over everything else: a task that still has one would go
			// straight back to blocked_by_failures and, under either policy,
			// not run. It stays in error (resolved_manually and retry remain
			// open to the operator) rather than being revived for nothing.
			if evaluate(tpl, steps, j.Now()).failed > 0 {
				break
			}
			if err := e.moveTask(ctx, tx, j, &t, lifecycle.TaskRetry, nil, actionMeta(ctx, "step "+s.Name+" "+string(action)+" by operator")); err != nil {
				return err
			}
		case lifecycle.TaskBlockedByFailures:
			if err := e.moveTask(ctx, tx, j, &t, lifecycle.TaskUnblocked, nil, actionMeta(ctx, "step "+s.Name+" "+string(action)+" by operator")); err != nil {
				return err
			}
		default:
			if trig, ok := wakeTrigger(t.State); ok {
				if err := e.moveTask(ctx, tx, j, &t, trig, nil, actionMeta(ctx, "step "+s.Name+" "+string(action)+" by operator")); err != nil {
					return err
				}
			}
		}
		if err := e.drive(ctx, tx, j, &t, steps); err != nil {
			return err
		}
		done := map[StepAction]string{StepActionResolve: "resolved", StepActionRetry: "retried"}[action]
		if err := e.closeDLQEntries(ctx, tx, &t, from, "step "+s.Name+" "+done, reason); err != nil {
			return err
		}
		outStep, outTask = *s, t
		return nil
	})
	return outStep, outTask, err
}
