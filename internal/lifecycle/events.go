package lifecycle

// EventName is the name of a system event (DESIGN §4), published as a span
// event and counted in tasker_events_total{event,namespace}.
type EventName string

// Task events (15).
const (
	EventTaskStartRequested          EventName = "task.start_requested"
	EventTaskInitializeRequested     EventName = "task.initialize_requested"
	EventTaskBeforeTransition        EventName = "task.before_transition"
	EventTaskStepsDiscoveryCompleted EventName = "task.steps_discovery_completed"
	EventTaskStepsEnqueued           EventName = "task.steps_enqueued"
	EventTaskStepResultsReceived     EventName = "task.step_results_received"
	EventTaskAwaitingDependencies    EventName = "task.awaiting_dependencies"
	EventTaskDependenciesSatisfied   EventName = "task.dependencies_satisfied"
	EventTaskRetryBackoffStarted     EventName = "task.retry_backoff_started"
	EventTaskBlockedByFailures       EventName = "task.blocked_by_failures"
	EventTaskCompleted               EventName = "task.completed"
	EventTaskFailed                  EventName = "task.failed"
	EventTaskCancelled               EventName = "task.cancelled"
	EventTaskResolvedManually        EventName = "task.resolved_manually"
	EventTaskRetryRequested          EventName = "task.retry_requested"
)

// onBehalf ends the publication point of the events the orchestrator
// publishes for workers that do not.
const onBehalf = " (no " + WorkerEventsHeader + " header on the result notice; see the README's worker protocol)"

// WorkerEventsHeader is the result-notice header by which a worker says
// that it published the worker-side events of the step itself (the Go SDK
// with an OTel observer sends WorkerEventsPublished). For a notice without
// it (a worker in another language, a Go worker without an observer) the
// orchestrator publishes them on the worker's behalf when it processes the
// result, from the claim and submission the step's transitions recorded.
const (
	WorkerEventsHeader    = "tasker-worker-events"
	WorkerEventsPublished = "published"
)

// Step events (12).
const (
	EventStepInitializeRequested EventName = "step.initialize_requested"
	EventStepEnqueueRequested    EventName = "step.enqueue_requested"
	EventStepExecutionRequested  EventName = "step.execution_requested"
	EventStepBeforeHandle        EventName = "step.before_handle"
	EventStepHandle              EventName = "step.handle"
	EventStepResultSubmitted     EventName = "step.result_submitted"
	EventStepCompleted           EventName = "step.completed"
	EventStepFailed              EventName = "step.failed"
	EventStepRetryRequested      EventName = "step.retry_requested"
	EventStepCancelled           EventName = "step.cancelled"
	EventStepResolvedManually    EventName = "step.resolved_manually"
	EventStepBeforeTransition    EventName = "step.before_transition"
)

// Workflow events (8).
const (
	EventWorkflowOrchestrationRequested EventName = "workflow.orchestration_requested"
	EventWorkflowTaskStarted            EventName = "workflow.task_started"
	EventWorkflowViableStepsDiscovered  EventName = "workflow.viable_steps_discovered"
	EventWorkflowNoViableSteps          EventName = "workflow.no_viable_steps"
	EventWorkflowStepCompleted          EventName = "workflow.step_completed"
	EventWorkflowStepFailed             EventName = "workflow.step_failed"
	EventWorkflowTaskCompleted          EventName = "workflow.task_completed"
	EventWorkflowTaskFailed             EventName = "workflow.task_failed"
)

// Category groups events; it is also the prefix of every event name.
type Category string

// Event categories.
const (
	CategoryTask     Category = "task"
	CategoryStep     Category = "step"
	CategoryWorkflow Category = "workflow"
)

// Emitter says which process publishes an event, so the worker SDK and the
// orchestrator each know which names are theirs. Use [EventInfo.EmittedBy]
// rather than comparing, because of [EmitterOrchestratorAndWorker].
type Emitter string

// Emitters.
const (
	EmitterOrchestrator Emitter = "orchestrator"
	EmitterWorker       Emitter = "worker"
	// EmitterOrchestratorAndWorker marks step.before_transition: step
	// transitions are made by both processes (the worker claims and submits,
	// the orchestrator does the rest), and each publishes it for its own.
	EmitterOrchestratorAndWorker Emitter = "orchestrator_and_worker"
)

// Span names from DESIGN §5 that events are recorded on.
const (
	spanTaskOrchestration   = "task_orchestration"
	spanTaskStateTransition = "task_state_transition"
	spanStepDiscovery       = "step_discovery"
	spanResultEvaluation    = "result_evaluation"
	spanStepExecution       = "step_execution"
	spanStepStateTransition = "step_state_transition"
	spanHandlerExecution    = "handler_execution"
	spanResultSubmission    = "result_submission"
)

// EventInfo describes one system event.
type EventInfo struct {
	Name     EventName
	Category Category
	Emitter  Emitter
	// Description says what happened, in one sentence.
	Description string
	// PublishedAt is the publication point in words: which component, and
	// relative to which commit.
	PublishedAt string
	// Span is the DESIGN §5 span the event is recorded on.
	Span string
}

// EmittedBy reports whether process who publishes the event.
func (i EventInfo) EmittedBy(who Emitter) bool {
	if i.Emitter == who {
		return true
	}
	return i.Emitter == EmitterOrchestratorAndWorker && (who == EmitterOrchestrator || who == EmitterWorker)
}

// catalog is in DESIGN §4 order. Events that a state change causes are
// recorded on that change's transition span, so a trace shows each event
// next to its from_state and to_state; events about work rather than a
// state change go on the span of that work.
var catalog = []EventInfo{
	// Task.
	{
		Name: EventTaskStartRequested, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "A task request was accepted and persisted in pending (the audit's task.started).",
		PublishedAt: "orchestrator intake, after the task row and its steps are committed",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskInitializeRequested, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "The orchestrator started a pending task (pending → initializing).",
		PublishedAt: "orchestrator, after pending → initializing commits",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskBeforeTransition, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "Marks every task transition that happened, with its from_state and to_state, on the transition's span just ahead of the transition's own events. Despite its name it is not published before the compare-and-swap: like every event it is published after the commit, so a transition that did not happen (a lost compare-and-swap, a rolled-back transaction) publishes none.",
		PublishedAt: "orchestrator, after the transaction that made the transition commits, with the transition's timestamp, before the transition's other events",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskStepsDiscoveryCompleted, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "Initialization finished discovering ready steps: some are ready (initializing → enqueuing_steps) or none yet (initializing → waiting_for_dependencies).",
		PublishedAt: "orchestrator, after the transition out of initializing into enqueuing_steps or waiting_for_dependencies commits",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskStepsEnqueued, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "The task's ready steps were sent to their worker queue (enqueuing_steps → steps_in_process).",
		PublishedAt: "orchestrator enqueuer, after the transition and the step messages commit in one transaction",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskStepResultsReceived, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "A step result arrived for a task with steps in process, a step's lease expired, or an operator resolved or retried a step (steps_in_process → evaluating_results on step_result_received; a retry backoff elapsing is backoff_expired, which publishes no task event).",
		PublishedAt: "orchestrator result processor (or lease reaper, or operator action), after steps_in_process → evaluating_results commits",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskAwaitingDependencies, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "The task has unfinished steps but none ready to dispatch (→ waiting_for_dependencies).",
		PublishedAt: "orchestrator, after a transition into waiting_for_dependencies commits (after task.steps_discovery_completed when it leaves initializing)",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskDependenciesSatisfied, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "A task waiting for dependencies has something to evaluate again: a step result arrived, a step's lease expired, or an operator resolved or retried a step (waiting_for_dependencies → evaluating_results on dependencies_satisfied; a retry backoff elapsing is backoff_expired, which publishes no task event).",
		PublishedAt: "orchestrator, after waiting_for_dependencies → evaluating_results commits",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskRetryBackoffStarted, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "Only steps in retry backoff remain (→ waiting_for_retry). A step that enters backoff while a sibling is in flight or ready leaves the task where it is (DESIGN §3 precedence: in flight before waiting), so this event does not fire for it; that retry shows as the step's transition to waiting_for_retry (tasker_step_state_transitions_total) and step.retry_requested when its backoff ends.",
		PublishedAt: "orchestrator result evaluation, after the transition into waiting_for_retry commits",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskBlockedByFailures, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "A step failed permanently (→ blocked_by_failures); the failure policy decides whether the task gives up at once or is held for an operator.",
		PublishedAt: "orchestrator result evaluation, after the transition into blocked_by_failures commits",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskCompleted, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "Every step is complete or resolved, or the task had no steps (→ complete).",
		PublishedAt: "orchestrator finalizer, after the transition into complete commits",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskFailed, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "The task gave up after a permanent step failure (→ error).",
		PublishedAt: "orchestrator finalizer, after the transition into error commits",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskCancelled, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "A client or operator cancelled the task (→ cancelled).",
		PublishedAt: "orchestrator, after the cancel transition commits",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskResolvedManually, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "An operator resolved a blocked or failed task (→ resolved_manually).",
		PublishedAt: "orchestrator, after the operator's resolve transition commits",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventTaskRetryRequested, Category: CategoryTask, Emitter: EmitterOrchestrator,
		Description: "An operator retried a failed task (error → pending).",
		PublishedAt: "orchestrator, after the operator's retry transition commits",
		Span:        spanTaskStateTransition,
	},

	// Step.
	{
		Name: EventStepInitializeRequested, Category: CategoryStep, Emitter: EmitterOrchestrator,
		Description: "A step was created in pending with its task (created → pending).",
		PublishedAt: "orchestrator intake, after the task row and its steps are committed, once per step",
		Span:        spanStepStateTransition,
	},
	{
		Name: EventStepEnqueueRequested, Category: CategoryStep, Emitter: EmitterOrchestrator,
		Description: "A ready step was dispatched to its namespace's worker queue (pending → enqueued).",
		PublishedAt: "orchestrator enqueuer, after the transition and the queue message commit in one transaction",
		Span:        spanStepStateTransition,
	},
	{
		Name: EventStepExecutionRequested, Category: CategoryStep, Emitter: EmitterWorker,
		Description: "A worker claimed the step, counting an attempt and taking a lease (enqueued → in_progress).",
		PublishedAt: "worker, after the claim function reports the step claimed; for a worker that publishes no events of its own, the orchestrator result processor, stamped with the claim's time" + onBehalf,
		Span:        spanStepStateTransition,
	},
	{
		Name: EventStepBeforeHandle, Category: CategoryStep, Emitter: EmitterWorker,
		Description: "The worker is about to call the step's handler.",
		PublishedAt: "worker, after the claim and before the handler is called; for a worker that publishes no events of its own, the orchestrator result processor, stamped with the claim's time" + onBehalf,
		Span:        spanStepExecution,
	},
	{
		Name: EventStepHandle, Category: CategoryStep, Emitter: EmitterWorker,
		Description: "The step's handler is running.",
		PublishedAt: "worker, as the handler is called; for a worker that publishes no events of its own, the orchestrator result processor, stamped with the claim's time (handler_execution then spans claim to submission)" + onBehalf,
		Span:        spanHandlerExecution,
	},
	{
		Name: EventStepResultSubmitted, Category: CategoryStep, Emitter: EmitterWorker,
		Description: "The worker posted the handler's outcome (in_progress → enqueued_for_orchestration or enqueued_as_error_for_orchestration).",
		PublishedAt: "worker, after the submit function commits the result, the transition and the notice to orchestration_step_results; for a worker that publishes no events of its own, the orchestrator result processor, stamped with the submission's time" + onBehalf,
		Span:        spanResultSubmission,
	},
	{
		Name: EventStepCompleted, Category: CategoryStep, Emitter: EmitterOrchestrator,
		Description: "The orchestrator accepted a successful result (→ complete).",
		PublishedAt: "orchestrator result processor, after enqueued_for_orchestration → complete commits",
		Span:        spanStepStateTransition,
	},
	{
		Name: EventStepFailed, Category: CategoryStep, Emitter: EmitterOrchestrator,
		Description: "The step failed for good: a permanent error, attempts exhausted, or a lease expired with no attempt left (→ error).",
		PublishedAt: "orchestrator result processor or lease reaper, after the transition into error commits",
		Span:        spanStepStateTransition,
	},
	{
		Name: EventStepRetryRequested, Category: CategoryStep, Emitter: EmitterOrchestrator,
		Description: "The step goes back to pending for another attempt: its backoff elapsed or an operator retried it (waiting_for_retry or error → pending).",
		PublishedAt: "orchestrator timer or operator retry, after the transition into pending commits",
		Span:        spanStepStateTransition,
	},
	{
		Name: EventStepCancelled, Category: CategoryStep, Emitter: EmitterOrchestrator,
		Description: "The step was cancelled, normally with its task (→ cancelled).",
		PublishedAt: "orchestrator, after the cancel transition commits",
		Span:        spanStepStateTransition,
	},
	{
		Name: EventStepResolvedManually, Category: CategoryStep, Emitter: EmitterOrchestrator,
		Description: "An operator resolved the step, optionally with a result; it now satisfies its dependants (→ resolved_manually).",
		PublishedAt: "orchestrator, after the operator's resolve transition commits",
		Span:        spanStepStateTransition,
	},
	{
		Name: EventStepBeforeTransition, Category: CategoryStep, Emitter: EmitterOrchestratorAndWorker,
		Description: "Marks every step transition that happened (not a step's creation), with its from_state and to_state: the first event on the transition's span, ahead of the transition's own event. Despite its name it is not published before the compare-and-swap: a transition that did not happen (a lost compare-and-swap, a rolled-back transaction, a refused submission) publishes none.",
		PublishedAt: "whichever process made the transition: the worker once its claim or submission is stored, the orchestrator after the transaction that made it commits; before the transition's other event",
		Span:        spanStepStateTransition,
	},

	// Workflow.
	{
		Name: EventWorkflowOrchestrationRequested, Category: CategoryWorkflow, Emitter: EmitterOrchestrator,
		Description: "The orchestrator received a command: a task request, a step result notice or a timer.",
		PublishedAt: "orchestrator, when it starts processing a command (for a task request, once intake has given the task its trace)",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventWorkflowTaskStarted, Category: CategoryWorkflow, Emitter: EmitterOrchestrator,
		Description: "The task was initialized and orchestration of its steps began.",
		PublishedAt: "orchestrator, after pending → initializing commits, next to task.initialize_requested",
		Span:        spanTaskStateTransition,
	},
	{
		Name: EventWorkflowViableStepsDiscovered, Category: CategoryWorkflow, Emitter: EmitterOrchestrator,
		Description: "Step discovery found at least one ready step.",
		PublishedAt: "orchestrator discovery, after the readiness query returns one or more steps",
		Span:        spanStepDiscovery,
	},
	{
		Name: EventWorkflowNoViableSteps, Category: CategoryWorkflow, Emitter: EmitterOrchestrator,
		Description: "Step discovery found no ready step.",
		PublishedAt: "orchestrator discovery, after the readiness query returns no step",
		Span:        spanStepDiscovery,
	},
	{
		Name: EventWorkflowStepCompleted, Category: CategoryWorkflow, Emitter: EmitterOrchestrator,
		Description: "The orchestrator finished processing a successful step result.",
		PublishedAt: "orchestrator result processor, after the step's completion commits",
		Span:        spanResultEvaluation,
	},
	{
		Name: EventWorkflowStepFailed, Category: CategoryWorkflow, Emitter: EmitterOrchestrator,
		Description: "The orchestrator finished processing a failed step result, whether a retry was scheduled or the step failed for good.",
		PublishedAt: "orchestrator result processor, after the failed result's transition commits",
		Span:        spanResultEvaluation,
	},
	{
		Name: EventWorkflowTaskCompleted, Category: CategoryWorkflow, Emitter: EmitterOrchestrator,
		Description: "The task finished successfully and was finalized.",
		PublishedAt: "orchestrator finalizer, after the task reaches complete, on the root span it then emits; at a later end of a task an operator revived, whose root was emitted at its first end, on a result_evaluation span under that root",
		Span:        spanTaskOrchestration,
	},
	{
		Name: EventWorkflowTaskFailed, Category: CategoryWorkflow, Emitter: EmitterOrchestrator,
		Description: "The task finished in error and was finalized.",
		PublishedAt: "orchestrator finalizer, after the task reaches error, on the root span it then emits; at a later end of a task an operator revived, whose root was emitted at its first end, on a result_evaluation span under that root",
		Span:        spanTaskOrchestration,
	},
}

var catalogByName = func() map[EventName]EventInfo {
	m := make(map[EventName]EventInfo, len(catalog))
	for _, e := range catalog {
		m[e.Name] = e
	}
	return m
}()

// Catalog returns every system event in DESIGN §4 order: 15 task, 12 step,
// 8 workflow. The slice is a copy; changing it changes nothing here.
func Catalog() []EventInfo {
	return append([]EventInfo(nil), catalog...)
}

// LookupEvent returns the catalog entry for name.
func LookupEvent(name EventName) (EventInfo, bool) {
	e, ok := catalogByName[name]
	return e, ok
}

// TaskTransitionEvent names the primary event published when a task moves
// from one state to another (the audit's Phase 1.2a mapping over the enum).
// It is defined for every pair of valid states, not only the moves
// [NextTaskState] allows, so that it stays a pure function of the states;
// it reports false for a pair with no event or a state that is not valid.
// Specific pairs take precedence over the "any → state" rules: leaving
// initializing for waiting_for_dependencies is discovery completing
// (task.steps_discovery_completed), and the caller also publishes
// [AdditionalTaskEvents].
func TaskTransitionEvent(from, to TaskState) (EventName, bool) {
	if !from.Valid() || !to.Valid() {
		return "", false
	}
	switch {
	case from == TaskPending && to == TaskInitializing:
		return EventTaskInitializeRequested, true
	case from == TaskInitializing && (to == TaskEnqueuingSteps || to == TaskWaitingForDependencies):
		return EventTaskStepsDiscoveryCompleted, true
	case from == TaskEnqueuingSteps && to == TaskStepsInProcess:
		return EventTaskStepsEnqueued, true
	case from == TaskStepsInProcess && to == TaskEvaluatingResults:
		return EventTaskStepResultsReceived, true
	case from == TaskWaitingForDependencies && to == TaskEvaluatingResults:
		return EventTaskDependenciesSatisfied, true
	case from == TaskError && to == TaskPending:
		return EventTaskRetryRequested, true
	}
	switch to {
	case TaskWaitingForDependencies:
		return EventTaskAwaitingDependencies, true
	case TaskWaitingForRetry:
		return EventTaskRetryBackoffStarted, true
	case TaskBlockedByFailures:
		return EventTaskBlockedByFailures, true
	case TaskComplete:
		return EventTaskCompleted, true
	case TaskError:
		return EventTaskFailed, true
	case TaskCancelled:
		return EventTaskCancelled, true
	case TaskResolvedManually:
		return EventTaskResolvedManually, true
	}
	return "", false
}

// AdditionalTaskEvents names the events published for a task transition
// beyond the one [TaskTransitionEvent] returns, in publication order, or nil.
// There is one: initializing → waiting_for_dependencies is both discovery
// completing and the task starting to wait, and a dashboard counting
// task.awaiting_dependencies must see every entry into the waiting state.
// task.before_transition is not listed: it comes before these on every
// transition.
func AdditionalTaskEvents(from, to TaskState) []EventName {
	if from == TaskInitializing && to == TaskWaitingForDependencies {
		return []EventName{EventTaskAwaitingDependencies}
	}
	return nil
}

// TaskMoveEvents names the events a task move publishes after
// task.before_transition, in publication order: [TaskTransitionEvent] then
// [AdditionalTaskEvents], except for a move on [TaskBackoffExpired], which
// publishes none. A backoff wake-up out of steps_in_process or
// waiting_for_dependencies shares its states with a result arriving
// (task.step_results_received) or dependencies being satisfied
// (task.dependencies_satisfied), and is neither; out of waiting_for_retry,
// where DESIGN §3 puts it, the states map to no event either. The retry
// itself is published by the step, as step.retry_requested.
func TaskMoveEvents(from TaskState, trigger TaskTrigger, to TaskState) []EventName {
	if trigger == TaskBackoffExpired {
		return nil
	}
	var out []EventName
	if ev, ok := TaskTransitionEvent(from, to); ok {
		out = append(out, ev)
	}
	return append(out, AdditionalTaskEvents(from, to)...)
}

// StepTransitionEvent names the primary event published when a step moves
// from one state to another (the audit's Phase 1.2b mapping, restricted to
// the DESIGN's 12 step names: the audit's step.handle on → in_progress and
// step.enqueued_for_orchestration are replaced by step.execution_requested
// and step.result_submitted). from may be [StepCreatedState] for a step
// being created, which maps only to pending: a step is never created in
// another state. Like [TaskTransitionEvent] it is defined over every pair of
// valid states and reports false for a pair with no event.
func StepTransitionEvent(from, to StepState) (EventName, bool) {
	if from == StepCreatedState {
		if to == StepPending {
			return EventStepInitializeRequested, true
		}
		return "", false
	}
	if !from.Valid() || !to.Valid() {
		return "", false
	}
	switch {
	case from == StepPending && to == StepEnqueued:
		return EventStepEnqueueRequested, true
	case from == StepEnqueued && to == StepInProgress:
		return EventStepExecutionRequested, true
	case from == StepInProgress && (to == StepEnqueuedForOrchestration || to == StepEnqueuedAsErrorForOrchestration):
		return EventStepResultSubmitted, true
	case (from == StepError || from == StepWaitingForRetry) && to == StepPending:
		return EventStepRetryRequested, true
	}
	switch to {
	case StepComplete:
		return EventStepCompleted, true
	case StepError:
		return EventStepFailed, true
	case StepCancelled:
		return EventStepCancelled, true
	case StepResolvedManually:
		return EventStepResolvedManually, true
	}
	return "", false
}
