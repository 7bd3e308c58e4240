// Package lifecycle holds the pure state machines that every task and step
// moves through, and the catalog of the 35 system events those moves publish.
//
// It performs no I/O. The store persists what these functions decide, guarded
// by a compare-and-swap on the expected from-state, so the decision lives in
// one place and a lost race is a no-op rather than a corruption; the telemetry
// package publishes the events named here. Keeping both in one pure package
// lets a test walk every (state, trigger) pair and every (from, to) pair.
//
// # State machines
//
// [NextTaskState] and [NextStepState] map (state, trigger) to the next state
// or to an error wrapping [ErrInvalidTransition]. Every non-terminal state
// accepts cancel. Terminal states accept nothing, with one exception: a task
// in [TaskError] is terminal for the engine but an operator may still retry
// it ([TaskRetry]) or resolve it ([TaskResolve]). A step in [StepError] is not
// terminal: it waits for an operator retry or resolution.
//
// # Events
//
// [Catalog] lists every system event with who emits it, where it is published
// and which span it is recorded on. [TaskTransitionEvent] and
// [StepTransitionEvent] name the primary event for a state change;
// [AdditionalTaskEvents] names the few extra ones; [TaskMoveEvents] is what a
// task move publishes: those, unless the move is a retry backoff wake-up
// ([TaskBackoffExpired]), which publishes none. task.before_transition and
// step.before_transition are not returned by the mapping functions: they come
// just before those on every transition, whatever its states. Like every
// event they are published after the transition happened (after the
// commit), so a transition that did not happen publishes neither.
//
// docs/events.md is generated from the catalog by [CatalogMarkdown]; a test
// fails when it is stale. Regenerate it with:
//
//	go test ./internal/lifecycle -run TestEventsDoc -update
package lifecycle

//go:generate go test . -run TestEventsDoc -update
