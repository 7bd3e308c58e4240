package queue

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
)

// StepMessage.AppendJSON writes json.Marshal's bytes, escapes included.
func TestStepMessageAppendJSON(t *testing.T) {
	for _, m := range []StepMessage{
		{},
		{TaskUUID: uuid.New(), StepUUID: uuid.Must(uuid.NewV7()), StepName: "validate", Handler: "orders.validate",
			Namespace: "ecommerce", CorrelationID: uuid.New(), Attempt: 3},
		{StepName: `q"<&>`, Handler: "tab\there", Namespace: "ü", Attempt: -2147483648},
	} {
		want, _ := json.Marshal(m)
		if got := m.AppendJSON([]byte("x")); !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Errorf("AppendJSON(%+v) = %s, json.Marshal gives %s", m, got[1:], want)
		}
	}
}

// DecodeStepMessage gives json.Unmarshal's message and error, whichever
// path it takes; the orchestrator's own bodies take the fast one.
func FuzzDecodeStepMessage(f *testing.F) {
	own := StepMessage{TaskUUID: uuid.New(), StepUUID: uuid.New(), StepName: "a", Handler: "h.a", Namespace: "ns",
		CorrelationID: uuid.New(), Attempt: 2}
	f.Add(string(own.AppendJSON(nil)))
	f.Add(`{"task_uuid": "` + own.TaskUUID.String() + `", "attempt": 1, "step_uuid": null}`)
	f.Add(`{"Attempt": 3, "step_name": "x\u00e9"}`)
	f.Add(`{"attempt": 1.0, "handler": 5}`)
	f.Add(`{"attempt": 99999999999999999999, "namespace": ""}`)
	f.Add(`{"step_uuid": "{` + own.StepUUID.String() + `}", "extra": [1]}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, body string) {
		got, err := DecodeStepMessage([]byte(body))
		var want StepMessage
		werr := json.Unmarshal([]byte(body), &want)
		if got != want || (err == nil) != (werr == nil) || (err != nil && err.Error() != werr.Error()) {
			t.Fatalf("%q: got %+v, %v; json.Unmarshal %+v, %v", body, got, err, want, werr)
		}
	})
}

func TestDecodeStepMessageFastPath(t *testing.T) {
	m := StepMessage{TaskUUID: uuid.New(), StepUUID: uuid.New(), StepName: "a", Handler: "h.a", Namespace: "ns",
		CorrelationID: uuid.New(), Attempt: 7}
	body := m.AppendJSON(nil)
	got, err := DecodeStepMessage(body)
	if err != nil || got != m {
		t.Fatalf("DecodeStepMessage(%s) = %+v, %v", body, got, err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = DecodeStepMessage(body) }); n > 3 {
		t.Errorf("%v allocations to decode an orchestrator's step message, want at most 3 (its strings)", n)
	}
}
