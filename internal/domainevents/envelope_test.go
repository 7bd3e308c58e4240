package domainevents

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/domainevents"
)

// TestEnvelopeIsWhatJSONMarshalGives: the spliced envelope is byte for
// byte json.Marshal's, for payloads with HTML-sensitive characters,
// unicode, whitespace in results, and with and without a step.
func TestEnvelopeIsWhatJSONMarshalGives(t *testing.T) {
	step := uuid.Must(uuid.NewV7())
	results := []json.RawMessage{
		json.RawMessage(`{"a": 1, "b": [1, 2, {"c": "<tag> & \u2028 é"}]}`), // jsonb's text form has spaces
		json.RawMessage(`null`),
		json.RawMessage(`"x"`),
		json.RawMessage(`{"pad": "` + string(bytes.Repeat([]byte("y"), 20000)) + `"}`),
	}
	for i, res := range results {
		payload, err := json.Marshal(domainevents.StepCompletedPayload{StepName: "s<1>", Handler: "h&", Attempt: 1, MaxAttempts: 3, Result: res})
		if err != nil {
			t.Fatal(err)
		}
		for _, sid := range []*uuid.UUID{&step, nil} {
			ev := domainevents.Event{EventID: uuid.Must(uuid.NewV7()), EventType: "StepCompleted", SchemaVersion: domainevents.SchemaVersion,
				Namespace: "ns", TaskUUID: uuid.Must(uuid.NewV7()), StepUUID: sid, CorrelationID: uuid.Must(uuid.NewV7()),
				OccurredAt: time.Date(2026, 11, 27, 9, 0, 0, 123456789, time.UTC), Payload: payload,
				MsgID: 7, ReadCount: 2, Headers: map[string]string{"x": "y"}}
			want, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			got, err := envelope(ev)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("payload %d (step %v): envelope differs\n got %.300s\nwant %.300s", i, sid != nil, got, want)
			}
			back, err := domainevents.Decode(got)
			if err != nil || back.EventID != ev.EventID || !bytes.Equal(back.Payload, payload) {
				t.Errorf("payload %d: decoded %v, %v", i, back.EventID, err)
			}
		}
	}
}
