package domainevents

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/domainevents"
	"github.com/tasker/tasker/internal/lifecycle"
)

// TestPayloadIsWhatJSONMarshalGives: the payloads written by hand have
// json.Marshal's value, for names that need escaping, results and contexts
// with whitespace (jsonb's text form), HTML-sensitive characters or
// U+2028, empty and null ones, nil or partial step counts and tags, with
// and without a parent correlation id; a result or context is copied as it
// is, not compacted. The other payloads go through json.Marshal.
func TestPayloadIsWhatJSONMarshalGives(t *testing.T) {
	refs := []domainevents.TaskRef{{TaskName: "order_fulfillment", TaskVersion: "1.0.0"}, {TaskName: `q"<x>`, TaskVersion: "ü\n"}}
	results := []json.RawMessage{
		nil, json.RawMessage(`null`), json.RawMessage(`{"a": 1, "b": [1, 2, {"c": "d"}]}`), json.RawMessage(` "x" `),
		json.RawMessage(`{"html": "<tag> & more"}`), json.RawMessage(`{"ls": "` + "\u2028" + `"}`), json.RawMessage(`{"é": "ü"}`),
		json.RawMessage(`{"big": [` + string(bytes.Repeat([]byte(`[1, 2.50, -3e2], `), 1000)) + `3]}`),
	}
	var payloads []any
	for _, ref := range refs {
		for _, res := range results {
			for _, manual := range []bool{false, true} {
				payloads = append(payloads, domainevents.StepCompletedPayload{TaskRef: ref, StepName: "validate<1>", Handler: "h&x",
					Attempt: 2, MaxAttempts: -3, ResolvedManually: manual, Result: res})
			}
		}
		// Every state (as stepCounts builds them), every state but one with
		// another key in its place, and every state and one more.
		every, swapped, more := domainevents.StepCounts{}, domainevents.StepCounts{}, domainevents.StepCounts{"zz": 7}
		for i, s := range lifecycle.StepStates {
			every[string(s)], more[string(s)] = i*11, i
			if i > 0 {
				swapped[string(s)] = i
			}
		}
		swapped["a<b"] = 5
		for _, counts := range []domainevents.StepCounts{nil, {}, {"complete": 3, "pending": 0, "in_progress": 1, "error": -1, "z<": 9}, every, swapped, more} {
			payloads = append(payloads, domainevents.WorkflowProgressedPayload{TaskRef: ref, TaskState: "steps_in_process",
				StepCounts: counts, TotalSteps: 4, CompletedSteps: 3})
		}
		payloads = append(payloads, domainevents.TaskCompletedPayload{TaskRef: ref, StartedAt: time.Unix(1, 2).UTC(),
			CompletedAt: time.Unix(3, 4).UTC(), DurationMs: 2000, StepCounts: domainevents.StepCounts{"complete": 4}, TotalSteps: 4},
			domainevents.TaskCompletedPayload{TaskRef: ref, StartedAt: time.Date(2026, 11, 28, 13, 0, 0, 123456789, time.FixedZone("x", 5*3600+1800)),
				CompletedAt: time.Date(2026, 11, 28, 13, 0, 1, 0, time.UTC), DurationMs: -1})
		parent := uuid.MustParse("01a22211-fd46-7457-9e18-2da8b513ac22")
		for i, ctx := range results {
			for _, tags := range [][]string{nil, {}, {"a", `b"<`, "ü"}} {
				p := domainevents.TaskInitiatedPayload{TaskRef: ref, Initiator: "op<1>", SourceSystem: "s\n", Reason: "r&",
					Tags: tags, Priority: -7, StepCount: 5, Context: ctx}
				if i%2 == 0 {
					p.ParentCorrelationID = &parent
				}
				payloads = append(payloads, p)
			}
		}
	}
	for i, p := range payloads {
		want, werr := json.Marshal(p)
		got, err := encodePayload(p)
		if err != nil || werr != nil {
			t.Fatalf("payload %d (%T): %v; json.Marshal: %v", i, p, err, werr)
		}
		if g, w := decoded(t, got), decoded(t, want); !reflect.DeepEqual(g, w) {
			t.Errorf("payload %d (%T): got %.200s\njson.Marshal gives %.200s", i, p, got, want)
		}
		// Without results and contexts (copied as they are, where
		// json.Marshal compacts them) the bytes are json.Marshal's too:
		// keys in the same order.
		if _, ok := p.(domainevents.StepCompletedPayload); !ok && !bytes.Equal(got, want) {
			if ip, ok := p.(domainevents.TaskInitiatedPayload); !ok || ip.Context == nil {
				t.Errorf("payload %d (%T): got %.300s\njson.Marshal writes %.300s", i, p, got, want)
			}
		}
	}
	// Raw JSON is copied as it is.
	res := json.RawMessage(`{"a": 1, "b": [1, 2]}`)
	for _, p := range []any{domainevents.StepCompletedPayload{Result: res}, domainevents.TaskInitiatedPayload{Context: res}} {
		if got, _ := encodePayload(p); !bytes.Contains(got, res) {
			t.Errorf("%T: %s does not hold %s as it is", p, got, res)
		}
	}
}

// decoded is a JSON text's value, its numbers as written.
func decoded(t *testing.T, raw []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%.200s: %v", raw, err)
	}
	if d.More() {
		t.Fatalf("%.200s: more than one value", raw)
	}
	return v
}

// BenchmarkProgressPayload encodes a WorkflowProgressed payload with the
// counts stepCounts builds (every step state), as every result publishes.
func BenchmarkProgressPayload(b *testing.B) {
	counts := domainevents.StepCounts{}
	for i, s := range lifecycle.StepStates {
		counts[string(s)] = i % 3
	}
	p := domainevents.WorkflowProgressedPayload{TaskRef: domainevents.TaskRef{TaskName: "order_fulfillment", TaskVersion: "1.0.0"},
		TaskState: "steps_in_process", StepCounts: counts, TotalSteps: 4, CompletedSteps: 1}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encodePayload(p); err != nil {
			b.Fatal(err)
		}
	}
}
