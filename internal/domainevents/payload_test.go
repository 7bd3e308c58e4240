package domainevents

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/tasker/tasker/domainevents"
)

// TestPayloadIsWhatJSONMarshalGives: the payloads written by hand are byte
// for byte json.Marshal's, for names that need escaping, results with
// whitespace (jsonb's text form), HTML-sensitive characters or U+2028,
// empty, null and invalid results, and nil or partial step counts; the
// other payloads go through json.Marshal.
func TestPayloadIsWhatJSONMarshalGives(t *testing.T) {
	refs := []domainevents.TaskRef{{TaskName: "order_fulfillment", TaskVersion: "1.0.0"}, {TaskName: `q"<x>`, TaskVersion: "ü\n"}}
	results := []json.RawMessage{
		nil, json.RawMessage(`null`), json.RawMessage(`{"a": 1, "b": [1, 2, {"c": "d"}]}`), json.RawMessage(` "x" `),
		json.RawMessage(`{"html": "<tag> & more"}`), json.RawMessage(`{"ls": "` + "\u2028" + `"}`), json.RawMessage(`{"é": "ü"}`),
		json.RawMessage(`{"big": ` + string(bytes.Repeat([]byte(`[1, 2], `), 1000)) + `3}`),
	}
	var payloads []any
	for _, ref := range refs {
		for _, res := range results {
			for _, manual := range []bool{false, true} {
				payloads = append(payloads, domainevents.StepCompletedPayload{TaskRef: ref, StepName: "validate<1>", Handler: "h&x",
					Attempt: 2, MaxAttempts: -3, ResolvedManually: manual, Result: res})
			}
		}
		for _, counts := range []domainevents.StepCounts{nil, {}, {"complete": 3, "pending": 0, "in_progress": 1, "error": -1, "z<": 9}} {
			payloads = append(payloads, domainevents.WorkflowProgressedPayload{TaskRef: ref, TaskState: "steps_in_process",
				StepCounts: counts, TotalSteps: 4, CompletedSteps: 3})
		}
		payloads = append(payloads, domainevents.TaskCompletedPayload{TaskRef: ref, StartedAt: time.Unix(1, 2).UTC(),
			CompletedAt: time.Unix(3, 4).UTC(), DurationMs: 2000, StepCounts: domainevents.StepCounts{"complete": 4}, TotalSteps: 4})
	}
	for i, p := range payloads {
		want, werr := json.Marshal(p)
		got, err := encodePayload(p)
		if !bytes.Equal(got, want) || (err == nil) != (werr == nil) {
			t.Errorf("payload %d (%T): got %.200s, %v\njson.Marshal gives %.200s, %v", i, p, got, err, want, werr)
		}
	}
	// An invalid result is json.Marshal's error.
	if _, err := encodePayload(domainevents.StepCompletedPayload{Result: json.RawMessage(`{"a":`)}); err == nil {
		t.Error("an invalid result encoded without an error")
	}
}
