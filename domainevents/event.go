package domainevents

import (
	_ "embed" // the envelope's JSON Schema
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// SchemaVersion is the version of the envelope and of the built-in payloads
// that this package writes and reads. It changes only for a change that
// breaks readers (a field removed, renamed or retyped); new optional fields
// keep the version.
const SchemaVersion = 1

// The built-in event types (DESIGN §7). Any other event_type is a business
// event that a template step declares (its `events:`), named by the
// template's author.
const (
	// TaskInitiated: a task was created (its request accepted and persisted).
	TaskInitiated = "TaskInitiated"
	// StepCompleted: a step's successful result was processed (the step is
	// complete), or an operator resolved the step with a result.
	StepCompleted = "StepCompleted"
	// StepFailed: an attempt of a step failed (the handler failed or its
	// worker stopped heartbeating); WillRetry says whether another attempt
	// follows.
	StepFailed = "StepFailed"
	// WorkflowProgressed: the task's steps moved on; counts of steps by
	// state. Published once per orchestration transaction that completed or
	// failed a step of the task.
	WorkflowProgressed = "WorkflowProgressed"
	// TaskCompleted: every step is complete (or resolved), or the task had
	// none.
	TaskCompleted = "TaskCompleted"
	// TaskFailed: the task gave up after a permanent step failure (→ error).
	TaskFailed = "TaskFailed"
	// TaskCancelled: a client or operator cancelled the task.
	TaskCancelled = "TaskCancelled"
)

// BuiltInTypes lists the built-in event types in lifecycle order.
var BuiltInTypes = []string{TaskInitiated, StepCompleted, StepFailed, WorkflowProgressed, TaskCompleted, TaskFailed, TaskCancelled}

// IsBuiltIn reports whether eventType is one of BuiltInTypes (otherwise it
// is a step's business event, with a StepEventPayload).
func IsBuiltIn(eventType string) bool { return slices.Contains(BuiltInTypes, eventType) }

// EnvelopeSchema is the JSON Schema (draft 2020-12) of an event as stored in
// a domain event queue: the envelope and, by event type, its payload.
//
//go:embed envelope.schema.json
var EnvelopeSchema []byte

// Event is a decoded domain event: the envelope, with its payload left as
// JSON (decode it with DecodePayload), and where the event was read from.
type Event struct {
	// EventID is unique per event (a UUIDv7: time-ordered). A consumer that
	// must not apply an event twice (delivery is at least once) can
	// remember the ids it has applied.
	EventID       uuid.UUID `json:"event_id"`
	EventType     string    `json:"event_type"`
	SchemaVersion int       `json:"schema_version"`
	Namespace     string    `json:"namespace"`
	TaskUUID      uuid.UUID `json:"task_uuid"`
	// StepUUID is set for step events (StepCompleted, StepFailed, business
	// events).
	StepUUID      *uuid.UUID `json:"step_uuid,omitempty"`
	CorrelationID uuid.UUID  `json:"correlation_id"`
	// OccurredAt is when the change happened in the orchestrator, which
	// committed it together with this event.
	OccurredAt time.Time       `json:"occurred_at"`
	Payload    json.RawMessage `json:"payload"`

	// Delivery facts, set by the Consumer (zero from Decode); not part of
	// the envelope.

	// MsgID is the message's id in its queue: increasing in the order the
	// events were written.
	MsgID int64 `json:"-"`
	// ReadCount is PGMQ's count of the message's reads, this one included
	// (1 on the first delivery). It also counts reads in which a consumer
	// held the event back behind an earlier event of its task.
	ReadCount int `json:"-"`
	// Headers are the message headers: "traceparent" (the W3C trace context
	// of the task's trace) and "event_type".
	Headers map[string]string `json:"-"`
}

// ErrMalformed is wrapped by Decode's errors for bodies that are not a
// domain event; ErrUnsupportedVersion for events of a newer schema version.
var (
	ErrMalformed          = errors.New("malformed domain event")
	ErrUnsupportedVersion = errors.New("unsupported domain event schema version")
)

// Decode parses a message body into an Event and checks the envelope's
// required fields. An event with a schema version above SchemaVersion is
// refused with ErrUnsupportedVersion.
func Decode(body []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case e.EventID == uuid.Nil:
		return e, fmt.Errorf("%w: event_id is missing", ErrMalformed)
	case e.EventType == "":
		return e, fmt.Errorf("%w: event_type is missing", ErrMalformed)
	case e.SchemaVersion < 1:
		return e, fmt.Errorf("%w: schema_version is missing", ErrMalformed)
	case e.SchemaVersion > SchemaVersion:
		return e, fmt.Errorf("%w: %d (this reader knows %d)", ErrUnsupportedVersion, e.SchemaVersion, SchemaVersion)
	case e.Namespace == "":
		return e, fmt.Errorf("%w: namespace is missing", ErrMalformed)
	case e.TaskUUID == uuid.Nil:
		return e, fmt.Errorf("%w: task_uuid is missing", ErrMalformed)
	case e.OccurredAt.IsZero():
		return e, fmt.Errorf("%w: occurred_at is missing", ErrMalformed)
	case len(e.Payload) == 0 || e.Payload[0] != '{':
		return e, fmt.Errorf("%w: payload is not a JSON object", ErrMalformed)
	}
	return e, nil
}

// DecodePayload unmarshals the payload into v: *TaskInitiatedPayload for
// TaskInitiated, *StepCompletedPayload for StepCompleted, and so on;
// *StepEventPayload for a business event.
func (e Event) DecodePayload(v any) error {
	if err := json.Unmarshal(e.Payload, v); err != nil {
		return fmt.Errorf("decode %s payload of event %s: %w", e.EventType, e.EventID, err)
	}
	return nil
}

// TaskRef names the task template (DESIGN §2) a task is an instance of; every
// built-in payload carries it.
type TaskRef struct {
	// TaskName and TaskVersion are the template's name and version.
	TaskName    string `json:"task_name"`
	TaskVersion string `json:"task_version"`
}

// TaskInitiatedPayload is the payload of TaskInitiated.
type TaskInitiatedPayload struct {
	TaskRef
	Initiator           string     `json:"initiator"`
	SourceSystem        string     `json:"source_system"`
	Reason              string     `json:"reason"`
	Tags                []string   `json:"tags"`
	Priority            int        `json:"priority"`
	ParentCorrelationID *uuid.UUID `json:"parent_correlation_id,omitempty"`
	StepCount           int        `json:"step_count"`
	// Context is the task's context, as submitted.
	Context json.RawMessage `json:"context"`
}

// StepCompletedPayload is the payload of StepCompleted.
type StepCompletedPayload struct {
	TaskRef
	StepName string `json:"step_name"`
	Handler  string `json:"handler"`
	// Attempt is the attempt that succeeded (1 for the first); for a step
	// resolved by an operator, the attempts it had used.
	Attempt     int `json:"attempt"`
	MaxAttempts int `json:"max_attempts"`
	// ResolvedManually is true when an operator resolved the step with a
	// result instead of a handler producing it.
	ResolvedManually bool `json:"resolved_manually"`
	// Result is the step's result (JSON null when the handler returned
	// none).
	Result json.RawMessage `json:"result"`
}

// StepError is a step failure as the worker reported it.
type StepError struct {
	Message string `json:"message"`
	// Kind is the worker's classification ("retryable", "permanent",
	// "error", "lease_expired" when the worker stopped heartbeating…).
	Kind string `json:"kind,omitempty"`
	// Retryable is the worker's opinion; the step's retry policy decides
	// (see WillRetry).
	Retryable *bool `json:"retryable,omitempty"`
}

// StepFailedPayload is the payload of StepFailed.
type StepFailedPayload struct {
	TaskRef
	StepName    string    `json:"step_name"`
	Handler     string    `json:"handler"`
	Attempt     int       `json:"attempt"`
	MaxAttempts int       `json:"max_attempts"`
	Error       StepError `json:"error"`
	// WillRetry is true when another attempt is scheduled; false when the
	// step failed for good.
	WillRetry bool `json:"will_retry"`
	// NextAttemptAt is when the next attempt may start, set exactly when
	// WillRetry (the failure's time when the retry is due at once).
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
}

// StepCounts counts a task's steps by step state; every step state is a key.
type StepCounts map[string]int

// WorkflowProgressedPayload is the payload of WorkflowProgressed: the task
// as the transaction that published it left it.
type WorkflowProgressedPayload struct {
	TaskRef
	// TaskState is the task's state (after the transaction).
	TaskState  string     `json:"task_state"`
	StepCounts StepCounts `json:"step_counts"`
	TotalSteps int        `json:"total_steps"`
	// CompletedSteps counts steps complete or resolved_manually.
	CompletedSteps int `json:"completed_steps"`
}

// TaskCompletedPayload is the payload of TaskCompleted.
type TaskCompletedPayload struct {
	TaskRef
	StartedAt   time.Time  `json:"started_at"`
	CompletedAt time.Time  `json:"completed_at"`
	DurationMs  int64      `json:"duration_ms"`
	StepCounts  StepCounts `json:"step_counts"`
	TotalSteps  int        `json:"total_steps"`
}

// FailedStep is a step that failed for good, in TaskFailedPayload.
type FailedStep struct {
	StepUUID uuid.UUID `json:"step_uuid"`
	StepName string    `json:"step_name"`
	Handler  string    `json:"handler"`
	Attempt  int       `json:"attempt"`
	Error    StepError `json:"error"`
}

// TaskFailedPayload is the payload of TaskFailed.
type TaskFailedPayload struct {
	TaskRef
	StartedAt   time.Time    `json:"started_at"`
	FailedAt    time.Time    `json:"failed_at"`
	DurationMs  int64        `json:"duration_ms"`
	StepCounts  StepCounts   `json:"step_counts"`
	TotalSteps  int          `json:"total_steps"`
	FailedSteps []FailedStep `json:"failed_steps"`
}

// TaskCancelledPayload is the payload of TaskCancelled.
type TaskCancelledPayload struct {
	TaskRef
	// Reason is the reason given with the cancellation.
	Reason      string     `json:"reason"`
	StartedAt   time.Time  `json:"started_at"`
	CancelledAt time.Time  `json:"cancelled_at"`
	DurationMs  int64      `json:"duration_ms"`
	StepCounts  StepCounts `json:"step_counts"`
	TotalSteps  int        `json:"total_steps"`
}

// Outcomes of a step, in StepEventPayload.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
)

// StepEventPayload is the payload of a business event a template step
// declares (`events: [{name, on}]`): published when the step completes
// (on: success or always) or fails for good (on: failure or always).
type StepEventPayload struct {
	TaskRef
	StepName string `json:"step_name"`
	Handler  string `json:"handler"`
	Attempt  int    `json:"attempt"`
	// Outcome is OutcomeSuccess or OutcomeFailure.
	Outcome string `json:"outcome"`
	// ResolvedManually is true when the success is an operator's resolution.
	ResolvedManually bool `json:"resolved_manually"`
	// Result is the step's result on success (absent on failure).
	Result json.RawMessage `json:"result,omitempty"`
	// Error is the step's error on failure.
	Error *StepError `json:"error,omitempty"`
}
