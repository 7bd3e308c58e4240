package lifecycle

import "fmt"

// StepState is the state of a workflow step, stored as its string value.
type StepState string

// Step states (DESIGN §3).
const (
	StepPending                         StepState = "pending"
	StepEnqueued                        StepState = "enqueued"
	StepInProgress                      StepState = "in_progress"
	StepEnqueuedForOrchestration        StepState = "enqueued_for_orchestration"
	StepEnqueuedAsErrorForOrchestration StepState = "enqueued_as_error_for_orchestration"
	StepWaitingForRetry                 StepState = "waiting_for_retry"
	StepError                           StepState = "error"
	StepComplete                        StepState = "complete"
	StepCancelled                       StepState = "cancelled"
	StepResolvedManually                StepState = "resolved_manually"
)

// StepCreatedState is the pseudo from-state of a step being created (its
// first transition row has no from_state). It is not a state a step can be
// in, so it is not in [StepStates] and Valid reports false for it;
// StepTransitionEvent(StepCreatedState, StepPending) names
// step.initialize_requested.
const StepCreatedState StepState = ""

// StepStates lists every step state, non-terminal first, in DESIGN order.
var StepStates = []StepState{
	StepPending,
	StepEnqueued,
	StepInProgress,
	StepEnqueuedForOrchestration,
	StepEnqueuedAsErrorForOrchestration,
	StepWaitingForRetry,
	StepError,
	StepComplete,
	StepCancelled,
	StepResolvedManually,
}

// Terminal reports whether the step will never move again. StepError is not
// terminal: a failed step still waits for an operator retry or resolution,
// and its task decides (failure policy) whether to give up.
func (s StepState) Terminal() bool {
	switch s {
	case StepComplete, StepCancelled, StepResolvedManually:
		return true
	}
	return false
}

// Satisfied reports whether a step in this state satisfies the dependencies
// of its children: a manually resolved step counts as done.
func (s StepState) Satisfied() bool {
	return s == StepComplete || s == StepResolvedManually
}

// InFlight reports whether the step is somewhere between dispatch and result
// processing; a task with in-flight steps is not finished and must wait for
// them rather than re-dispatch.
func (s StepState) InFlight() bool {
	switch s {
	case StepEnqueued, StepInProgress, StepEnqueuedForOrchestration, StepEnqueuedAsErrorForOrchestration:
		return true
	}
	return false
}

// Valid reports whether s is one of [StepStates].
func (s StepState) Valid() bool {
	switch s {
	case StepPending, StepEnqueued, StepInProgress, StepEnqueuedForOrchestration,
		StepEnqueuedAsErrorForOrchestration, StepWaitingForRetry, StepError,
		StepComplete, StepCancelled, StepResolvedManually:
		return true
	}
	return false
}

// ParseStepState converts a stored or user-supplied string to a StepState.
// The error wraps [ErrUnknownState]; the empty string ([StepCreatedState]) is
// refused because no step is ever in it.
func ParseStepState(s string) (StepState, error) {
	if st := StepState(s); st.Valid() {
		return st, nil
	}
	return "", fmt.Errorf("parse step state %q: %w", s, ErrUnknownState)
}

// StepTrigger is the reason for a step transition.
type StepTrigger string

// Step triggers. The comment on each gives the moves it allows.
const (
	StepEnqueue           StepTrigger = "enqueue"             // pending → enqueued
	StepClaim             StepTrigger = "claim"               // enqueued → in_progress
	StepHandlerSucceeded  StepTrigger = "handler_succeeded"   // in_progress → enqueued_for_orchestration
	StepHandlerFailed     StepTrigger = "handler_failed"      // in_progress → enqueued_as_error_for_orchestration
	StepResultProcessed   StepTrigger = "result_processed"    // enqueued_for_orchestration → complete
	StepRetryScheduled    StepTrigger = "retry_scheduled"     // enqueued_as_error_for_orchestration → waiting_for_retry
	StepFailedPermanently StepTrigger = "failed_permanently"  // enqueued_as_error_for_orchestration → error
	StepLeaseExpiredRetry StepTrigger = "lease_expired_retry" // in_progress → waiting_for_retry
	StepLeaseExpiredFail  StepTrigger = "lease_expired_fail"  // in_progress → error
	StepRetry             StepTrigger = "retry"               // waiting_for_retry | error → pending
	StepCancel            StepTrigger = "cancel"              // any non-terminal → cancelled
	StepResolve           StepTrigger = "resolve"             // any non-terminal → resolved_manually
)

// StepTriggers lists every step trigger.
var StepTriggers = []StepTrigger{
	StepEnqueue,
	StepClaim,
	StepHandlerSucceeded,
	StepHandlerFailed,
	StepResultProcessed,
	StepRetryScheduled,
	StepFailedPermanently,
	StepLeaseExpiredRetry,
	StepLeaseExpiredFail,
	StepRetry,
	StepCancel,
	StepResolve,
}

// stepMoves is the step state machine as data (DESIGN §3). Cancel and resolve
// are added for every non-terminal state in init so that a new state cannot
// forget them.
var stepMoves = map[StepState]map[StepTrigger]StepState{
	StepPending: {
		StepEnqueue: StepEnqueued,
	},
	StepEnqueued: {
		StepClaim: StepInProgress,
	},
	StepInProgress: {
		StepHandlerSucceeded:  StepEnqueuedForOrchestration,
		StepHandlerFailed:     StepEnqueuedAsErrorForOrchestration,
		StepLeaseExpiredRetry: StepWaitingForRetry,
		StepLeaseExpiredFail:  StepError,
	},
	StepEnqueuedForOrchestration: {
		StepResultProcessed: StepComplete,
	},
	StepEnqueuedAsErrorForOrchestration: {
		StepRetryScheduled:    StepWaitingForRetry,
		StepFailedPermanently: StepError,
	},
	StepWaitingForRetry: {
		StepRetry: StepPending,
	},
	StepError: {
		StepRetry: StepPending,
	},
}

func init() {
	for _, s := range StepStates {
		if s.Terminal() {
			continue
		}
		if stepMoves[s] == nil {
			stepMoves[s] = map[StepTrigger]StepState{}
		}
		stepMoves[s][StepCancel] = StepCancelled
		stepMoves[s][StepResolve] = StepResolvedManually
	}
}

// NextStepState returns the state a step in from moves to on trigger. A move
// the machine does not allow (including an unknown state or trigger) returns
// an error wrapping [ErrInvalidTransition] that names both.
func NextStepState(from StepState, trigger StepTrigger) (StepState, error) {
	if to, ok := stepMoves[from][trigger]; ok {
		return to, nil
	}
	return "", fmt.Errorf("step in state %q cannot take trigger %q: %w", from, trigger, ErrInvalidTransition)
}
