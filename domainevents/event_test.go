package domainevents_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tasker/tasker/domainevents"
)

func TestDecode(t *testing.T) {
	t.Parallel()
	good := `{"event_id":"0190c6a4-59c2-7d5e-9c43-3f1a2b3c4d5e","event_type":"StepCompleted","schema_version":1,
		"namespace":"shop","task_uuid":"0190c6a4-59c2-7d5e-9c43-3f1a2b3c4d5f","step_uuid":"0190c6a4-59c2-7d5e-9c43-3f1a2b3c4d60",
		"correlation_id":"0190c6a4-59c2-7d5e-9c43-3f1a2b3c4d61","occurred_at":"2026-01-02T03:04:05.678Z",
		"payload":{"task_name":"t","task_version":"1","step_name":"s","handler":"h","attempt":2,"max_attempts":3,"resolved_manually":false,"result":{"ok":true}}}`
	ev, err := domainevents.Decode([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if ev.EventType != domainevents.StepCompleted || ev.StepUUID == nil || ev.Namespace != "shop" || ev.OccurredAt.Nanosecond() != 678000000 {
		t.Fatalf("decoded %+v", ev)
	}
	var p domainevents.StepCompletedPayload
	if err := ev.DecodePayload(&p); err != nil {
		t.Fatal(err)
	}
	if p.StepName != "s" || p.Attempt != 2 || string(p.Result) != `{"ok":true}` {
		t.Fatalf("payload %+v", p)
	}
	if !domainevents.IsBuiltIn(ev.EventType) || domainevents.IsBuiltIn("PaymentCaptured") {
		t.Fatal("IsBuiltIn")
	}

	for _, tc := range []struct {
		name, from, to string
		want           error
	}{
		{"not json", good, `{`, domainevents.ErrMalformed},
		{"no event id", `"event_id":"0190c6a4-59c2-7d5e-9c43-3f1a2b3c4d5e",`, ``, domainevents.ErrMalformed},
		{"no type", `"event_type":"StepCompleted",`, ``, domainevents.ErrMalformed},
		{"newer version", `"schema_version":1`, `"schema_version":2`, domainevents.ErrUnsupportedVersion},
		{"no version", `"schema_version":1,`, ``, domainevents.ErrMalformed},
		{"no task", `"task_uuid":"0190c6a4-59c2-7d5e-9c43-3f1a2b3c4d5f",`, ``, domainevents.ErrMalformed},
		{"payload not an object", `"payload":{`, `"payload":[{`, domainevents.ErrMalformed},
	} {
		body := strings.Replace(good, tc.from, tc.to, 1)
		if tc.name == "not json" {
			body = tc.to
		}
		if tc.name == "payload not an object" {
			body = strings.TrimSuffix(body, "}") + "]}"
		}
		if _, err := domainevents.Decode([]byte(body)); !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
}
