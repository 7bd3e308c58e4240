package domainevents_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/domainevents"
	ide "github.com/tasker/tasker/internal/domainevents"
	"github.com/tasker/tasker/internal/lifecycle"
)

func counts() domainevents.StepCounts {
	c := domainevents.StepCounts{}
	for _, s := range lifecycle.StepStates {
		c[string(s)] = 0
	}
	c["complete"] = 2
	return c
}

// fullPayloads has one payload per event type with every field set, so that
// the schema is checked against everything the Go types can produce.
func fullPayloads() map[string]any {
	ref := domainevents.TaskRef{TaskName: "t", TaskVersion: "1.0.0"}
	now := time.Now().UTC()
	parent := uuid.Must(uuid.NewV7())
	yes := true
	serr := domainevents.StepError{Message: "boom", Kind: "permanent", Retryable: &yes}
	return map[string]any{
		domainevents.TaskInitiated: domainevents.TaskInitiatedPayload{TaskRef: ref, Initiator: "i", SourceSystem: "s", Reason: "r",
			Tags: []string{"a"}, Priority: 3, ParentCorrelationID: &parent, StepCount: 2, Context: json.RawMessage(`{"k":1}`)},
		domainevents.StepCompleted: domainevents.StepCompletedPayload{TaskRef: ref, StepName: "s", Handler: "h", Attempt: 1, MaxAttempts: 3,
			ResolvedManually: true, Result: json.RawMessage(`[1,2]`)},
		domainevents.StepFailed: domainevents.StepFailedPayload{TaskRef: ref, StepName: "s", Handler: "h", Attempt: 1, MaxAttempts: 3,
			Error: serr, WillRetry: true, NextAttemptAt: &now},
		domainevents.WorkflowProgressed: domainevents.WorkflowProgressedPayload{TaskRef: ref, TaskState: "steps_in_process",
			StepCounts: counts(), TotalSteps: 2, CompletedSteps: 2},
		domainevents.TaskCompleted: domainevents.TaskCompletedPayload{TaskRef: ref, StartedAt: now, CompletedAt: now, DurationMs: 5,
			StepCounts: counts(), TotalSteps: 2},
		domainevents.TaskFailed: domainevents.TaskFailedPayload{TaskRef: ref, StartedAt: now, FailedAt: now, DurationMs: 5,
			StepCounts: counts(), TotalSteps: 2, FailedSteps: []domainevents.FailedStep{{StepUUID: parent, StepName: "s", Handler: "h", Attempt: 2, Error: serr}}},
		domainevents.TaskCancelled: domainevents.TaskCancelledPayload{TaskRef: ref, Reason: "r", StartedAt: now, CancelledAt: now,
			DurationMs: 5, StepCounts: counts(), TotalSteps: 2},
		"PaymentCaptured": domainevents.StepEventPayload{TaskRef: ref, StepName: "s", Handler: "h", Attempt: 1,
			Outcome: domainevents.OutcomeSuccess, Result: json.RawMessage(`{"id":"p"}`)},
		"PaymentDeclined": domainevents.StepEventPayload{TaskRef: ref, StepName: "s", Handler: "h", Attempt: 1,
			Outcome: domainevents.OutcomeFailure, Error: &serr},
	}
}

func envelope(t *testing.T, typ string, payload any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	ev := domainevents.Event{EventID: uuid.Must(uuid.NewV7()), EventType: typ, SchemaVersion: domainevents.SchemaVersion,
		Namespace: "ns", TaskUUID: uuid.Must(uuid.NewV7()), CorrelationID: uuid.Must(uuid.NewV7()),
		OccurredAt: time.Now().UTC(), Payload: raw}
	switch typ {
	case domainevents.TaskInitiated, domainevents.WorkflowProgressed, domainevents.TaskCompleted, domainevents.TaskFailed, domainevents.TaskCancelled:
	default:
		id := uuid.Must(uuid.NewV7())
		ev.StepUUID = &id
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func validate(t *testing.T, m map[string]any) error {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return ide.ValidateEvent(b)
}

// The schema accepts everything the Go types produce, and rejects events
// that break the envelope or a payload's contract.
func TestEnvelopeSchema(t *testing.T) {
	t.Parallel()
	for typ, p := range fullPayloads() {
		if err := validate(t, envelope(t, typ, p)); err != nil {
			t.Errorf("%s with every field set: %v", typ, err)
		}
		b, _ := json.Marshal(envelope(t, typ, p))
		if _, err := domainevents.Decode(b); err != nil {
			t.Errorf("Decode %s: %v", typ, err)
		}
	}

	bad := []struct {
		name   string
		typ    string
		mutate func(m map[string]any)
		want   string
	}{
		{"missing event_id", domainevents.TaskCompleted, func(m map[string]any) { delete(m, "event_id") }, "event_id"},
		{"unknown envelope field", domainevents.TaskCompleted, func(m map[string]any) { m["extra"] = 1 }, "extra"},
		{"schema version 2", domainevents.TaskCompleted, func(m map[string]any) { m["schema_version"] = 2 }, "schema_version"},
		{"bad namespace", domainevents.TaskCompleted, func(m map[string]any) { m["namespace"] = "Bad-NS" }, "namespace"},
		{"bad timestamp", domainevents.TaskCompleted, func(m map[string]any) { m["occurred_at"] = "yesterday" }, "occurred_at"},
		{"step event without step_uuid", domainevents.StepCompleted, func(m map[string]any) { delete(m, "step_uuid") }, "step_uuid"},
		{"task event with step_uuid", domainevents.TaskCompleted, func(m map[string]any) { m["step_uuid"] = uuid.NewString() }, ""},
		{"retry without its time", domainevents.StepFailed, func(m map[string]any) { delete(m["payload"].(map[string]any), "next_attempt_at") }, "next_attempt_at"},
		{"payload field missing", domainevents.StepFailed, func(m map[string]any) { delete(m["payload"].(map[string]any), "will_retry") }, "will_retry"},
		{"unknown payload field", domainevents.WorkflowProgressed, func(m map[string]any) { m["payload"].(map[string]any)["percent"] = 5 }, "percent"},
		{"step count missing", domainevents.TaskCompleted, func(m map[string]any) {
			delete(m["payload"].(map[string]any)["step_counts"].(map[string]any), "error")
		}, "error"},
		{"business success without result", "PaymentCaptured", func(m map[string]any) { delete(m["payload"].(map[string]any), "result") }, "result"},
		{"business failure with a result", "PaymentDeclined", func(m map[string]any) { m["payload"].(map[string]any)["result"] = 1 }, ""},
	}
	payloads := fullPayloads()
	for _, tc := range bad {
		m := envelope(t, tc.typ, payloads[tc.typ])
		tc.mutate(m)
		err := validate(t, m)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not mention %q", tc.name, err, tc.want)
		}
	}
}
