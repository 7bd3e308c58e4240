package domainevents

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/domainevents"
)

// TestEnvelopeIsWhatJSONMarshalGives: the envelope written by hand is byte
// for byte json.Marshal's, for payloads with HTML-sensitive characters,
// unicode, whitespace in results, with and without a step, and for event
// types and namespaces that need escaping, times in other zones and an
// empty payload.
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
			got := checkEnvelope(t, ev, fmt.Sprintf("payload %d (step %v)", i, sid != nil))
			back, err := domainevents.Decode(got)
			if err != nil || back.EventID != ev.EventID || !bytes.Equal(back.Payload, payload) {
				t.Errorf("payload %d: decoded %v, %v", i, back.EventID, err)
			}
		}
	}

	zone := time.FixedZone("x", -(3*3600 + 30*60))
	for _, tc := range []struct {
		typ, ns string
		at      time.Time
		payload json.RawMessage
	}{
		{"order.paid<&>", "ns", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), json.RawMessage(`{}`)},
		{"café \u2028 \"quoted\" back\\slash", "n_s", time.Date(2026, 1, 2, 3, 4, 5, 10, zone), json.RawMessage(`[1]`)},
		{"tab\there\x01", "ns", time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.Local), nil},
		{"bad utf8 \xff", "ns", time.Time{}, json.RawMessage(`null`)},
	} {
		ev := domainevents.Event{EventID: uuid.Must(uuid.NewV7()), EventType: tc.typ, SchemaVersion: 12, Namespace: tc.ns,
			TaskUUID: uuid.Must(uuid.NewV7()), CorrelationID: uuid.New(), OccurredAt: tc.at, Payload: tc.payload}
		checkEnvelope(t, ev, fmt.Sprintf("type %q", tc.typ))
	}
}

// checkEnvelope returns envelope(ev), failing the test (naming what) when
// it is not byte for byte json.Marshal(ev).
func checkEnvelope(t *testing.T, ev domainevents.Event, what string) []byte {
	t.Helper()
	want, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := envelope(ev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: envelope differs\n got %.300s\nwant %.300s", what, got, want)
	}
	return got
}

func BenchmarkEnvelope(b *testing.B) {
	step := uuid.Must(uuid.NewV7())
	payload, _ := json.Marshal(domainevents.StepCompletedPayload{StepName: "charge_card", Handler: "payments.charge", Attempt: 1, MaxAttempts: 3,
		Result: json.RawMessage(`{"charge_id": "ch_123", "amount_cents": 4200}`)})
	ev := domainevents.Event{EventID: uuid.Must(uuid.NewV7()), EventType: "StepCompleted", SchemaVersion: domainevents.SchemaVersion,
		Namespace: "ecommerce", TaskUUID: uuid.Must(uuid.NewV7()), StepUUID: &step, CorrelationID: uuid.Must(uuid.NewV7()),
		OccurredAt: time.Now().UTC(), Payload: payload}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := envelope(ev); err != nil {
			b.Fatal(err)
		}
	}
}
