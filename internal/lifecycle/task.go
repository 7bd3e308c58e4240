package lifecycle

import (
	"errors"
	"fmt"
)

// ErrInvalidTransition is wrapped by every error from [NextTaskState] and
// [NextStepState]; callers branch on it to tell a refused move from other
// failures.
var ErrInvalidTransition = errors.New("invalid transition")

// ErrUnknownState is wrapped by [ParseTaskState] and [ParseStepState] when a
// string names no state, e.g. a row written by a newer release.
var ErrUnknownState = errors.New("unknown state")

// TaskState is the state of a task, stored as its string value.
type TaskState string

// Task states (DESIGN §3).
const (
	TaskPending                TaskState = "pending"
	TaskInitializing           TaskState = "initializing"
	TaskEnqueuingSteps         TaskState = "enqueuing_steps"
	TaskStepsInProcess         TaskState = "steps_in_process"
	TaskEvaluatingResults      TaskState = "evaluating_results"
	TaskWaitingForDependencies TaskState = "waiting_for_dependencies"
	TaskWaitingForRetry        TaskState = "waiting_for_retry"
	TaskBlockedByFailures      TaskState = "blocked_by_failures"
	TaskComplete               TaskState = "complete"
	TaskError                  TaskState = "error"
	TaskCancelled              TaskState = "cancelled"
	TaskResolvedManually       TaskState = "resolved_manually"
)

// TaskStates lists every task state, non-terminal first, in DESIGN order.
var TaskStates = []TaskState{
	TaskPending,
	TaskInitializing,
	TaskEnqueuingSteps,
	TaskStepsInProcess,
	TaskEvaluatingResults,
	TaskWaitingForDependencies,
	TaskWaitingForRetry,
	TaskBlockedByFailures,
	TaskComplete,
	TaskError,
	TaskCancelled,
	TaskResolvedManually,
}

// Terminal reports whether the engine will never move the task again.
// TaskError is terminal even though an operator may retry or resolve it:
// nothing automatic leaves it, so finalization (completed_at, the root span,
// task.failed) happens on entering it.
func (s TaskState) Terminal() bool {
	switch s {
	case TaskComplete, TaskError, TaskCancelled, TaskResolvedManually:
		return true
	}
	return false
}

// Valid reports whether s is one of [TaskStates].
func (s TaskState) Valid() bool {
	switch s {
	case TaskPending, TaskInitializing, TaskEnqueuingSteps, TaskStepsInProcess,
		TaskEvaluatingResults, TaskWaitingForDependencies, TaskWaitingForRetry,
		TaskBlockedByFailures, TaskComplete, TaskError, TaskCancelled,
		TaskResolvedManually:
		return true
	}
	return false
}

// ParseTaskState converts a stored or user-supplied string to a TaskState.
// The error wraps [ErrUnknownState].
func ParseTaskState(s string) (TaskState, error) {
	if st := TaskState(s); st.Valid() {
		return st, nil
	}
	return "", fmt.Errorf("parse task state %q: %w", s, ErrUnknownState)
}

// TaskTrigger is the reason for a task transition.
type TaskTrigger string

// Task triggers. The comment on each gives the moves it allows.
const (
	TaskStart                 TaskTrigger = "start"                   // pending → initializing
	TaskReadyStepsFound       TaskTrigger = "ready_steps_found"       // initializing | evaluating_results → enqueuing_steps
	TaskNoSteps               TaskTrigger = "no_steps"                // initializing → complete
	TaskNothingReady          TaskTrigger = "nothing_ready"           // initializing | evaluating_results → waiting_for_dependencies
	TaskStepsEnqueued         TaskTrigger = "steps_enqueued"          // enqueuing_steps → steps_in_process
	TaskStepResultReceived    TaskTrigger = "step_result_received"    // steps_in_process → evaluating_results
	TaskAllStepsComplete      TaskTrigger = "all_steps_complete"      // evaluating_results → complete
	TaskOnlyBackoffRemains    TaskTrigger = "only_backoff_remains"    // evaluating_results → waiting_for_retry
	TaskStepFailedPermanently TaskTrigger = "step_failed_permanently" // evaluating_results → blocked_by_failures
	TaskDependenciesSatisfied TaskTrigger = "dependencies_satisfied"  // waiting_for_dependencies → evaluating_results

	// TaskBackoffExpired is the timer's trigger: a step's retry backoff
	// elapsed. DESIGN §3 lists it out of waiting_for_retry; it also takes a
	// task out of steps_in_process and waiting_for_dependencies, where a
	// task rests while a step waits out its backoff beside a sibling still
	// in flight (in flight takes precedence over waiting), so that the retry
	// is not held up until the sibling finishes. The wake-up is not a result
	// arriving or a dependency being satisfied, and [TaskMoveEvents] does
	// not say it is.
	TaskBackoffExpired TaskTrigger = "backoff_expired" // waiting_for_retry | steps_in_process | waiting_for_dependencies → evaluating_results

	// TaskUnblocked moves a task held in blocked_by_failures (the `hold`
	// failure policy) back to evaluating_results after an operator resolved
	// or retried its failed step, or retried the task. DESIGN §3 lets an operator act on a held
	// task; without this trigger the only exits would be error and
	// resolved_manually, and a retried step could never be picked up.
	TaskUnblocked TaskTrigger = "unblocked" // blocked_by_failures → evaluating_results

	// TaskStale gives up on a task whose progress stopped (no step moved or
	// heartbeated for its template's stale_after_seconds, or the daemon's
	// default): for example every worker of its namespace is gone. The
	// orchestrator files a DLQ entry saying why. An extension of DESIGN §3,
	// which otherwise has no exit from a waiting state but cancel.
	TaskStale TaskTrigger = "stale" // steps_in_process | waiting_for_dependencies | waiting_for_retry → error

	TaskGiveUp  TaskTrigger = "give_up" // blocked_by_failures → error
	TaskResolve TaskTrigger = "resolve" // blocked_by_failures | error → resolved_manually
	TaskRetry   TaskTrigger = "retry"   // error → pending
	TaskCancel  TaskTrigger = "cancel"  // any non-terminal → cancelled
)

// TaskTriggers lists every task trigger.
var TaskTriggers = []TaskTrigger{
	TaskStart,
	TaskReadyStepsFound,
	TaskNoSteps,
	TaskNothingReady,
	TaskStepsEnqueued,
	TaskStepResultReceived,
	TaskAllStepsComplete,
	TaskOnlyBackoffRemains,
	TaskStepFailedPermanently,
	TaskDependenciesSatisfied,
	TaskBackoffExpired,
	TaskUnblocked,
	TaskStale,
	TaskGiveUp,
	TaskResolve,
	TaskRetry,
	TaskCancel,
}

// taskMoves is the task state machine as data (DESIGN §3). Cancel is added
// for every non-terminal state in init so that a new state cannot forget it.
var taskMoves = map[TaskState]map[TaskTrigger]TaskState{
	TaskPending: {
		TaskStart: TaskInitializing,
	},
	TaskInitializing: {
		TaskReadyStepsFound: TaskEnqueuingSteps,
		TaskNoSteps:         TaskComplete,
		TaskNothingReady:    TaskWaitingForDependencies,
	},
	TaskEnqueuingSteps: {
		TaskStepsEnqueued: TaskStepsInProcess,
	},
	TaskStepsInProcess: {
		TaskStepResultReceived: TaskEvaluatingResults,
		TaskBackoffExpired:     TaskEvaluatingResults,
		TaskStale:              TaskError,
	},
	TaskEvaluatingResults: {
		TaskReadyStepsFound:       TaskEnqueuingSteps,
		TaskNothingReady:          TaskWaitingForDependencies,
		TaskAllStepsComplete:      TaskComplete,
		TaskOnlyBackoffRemains:    TaskWaitingForRetry,
		TaskStepFailedPermanently: TaskBlockedByFailures,
	},
	TaskWaitingForDependencies: {
		TaskDependenciesSatisfied: TaskEvaluatingResults,
		TaskBackoffExpired:        TaskEvaluatingResults,
		TaskStale:                 TaskError,
	},
	TaskWaitingForRetry: {
		TaskBackoffExpired: TaskEvaluatingResults,
		TaskStale:          TaskError,
	},
	TaskBlockedByFailures: {
		TaskUnblocked: TaskEvaluatingResults,
		TaskGiveUp:    TaskError,
		TaskResolve:   TaskResolvedManually,
	},
	// Terminal for the engine; only the operator triggers leave it.
	TaskError: {
		TaskResolve: TaskResolvedManually,
		TaskRetry:   TaskPending,
	},
}

func init() {
	for _, s := range TaskStates {
		if s.Terminal() {
			continue
		}
		if taskMoves[s] == nil {
			taskMoves[s] = map[TaskTrigger]TaskState{}
		}
		taskMoves[s][TaskCancel] = TaskCancelled
	}
}

// NextTaskState returns the state a task in from moves to on trigger. A move
// the machine does not allow (including an unknown state or trigger) returns
// an error wrapping [ErrInvalidTransition] that names both.
func NextTaskState(from TaskState, trigger TaskTrigger) (TaskState, error) {
	if to, ok := taskMoves[from][trigger]; ok {
		return to, nil
	}
	return "", fmt.Errorf("task in state %q cannot take trigger %q: %w", from, trigger, ErrInvalidTransition)
}
