package orchestration_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/tasker/tasker/internal/orchestration"
)

// FuzzDecodeTaskRequest: any bytes either decode into a request (which then
// validates or fails with ErrInvalid naming a field) or fail with
// ErrInvalid; nothing panics.
func FuzzDecodeTaskRequest(f *testing.F) {
	for _, seed := range []string{
		`{"namespace":"ecommerce","name":"order_fulfillment","context":{"customer_id":"c"}}`,
		`{"namespace":"ecommerce","name":"x","tags":["a","b"],"priority":5,"idempotency_key":"k"}`,
		`{"namespace":"Bad NS","name":""}`, `{"context":[1,2]}`, `{"unknown":1}`, `[]`, `null`, `{`, `{"namespace":"a"} trailing`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := orchestration.DecodeTaskRequest(data)
		if err != nil {
			if !errors.Is(err, orchestration.ErrInvalid) {
				t.Fatalf("decode error not ErrInvalid: %v", err)
			}
			return
		}
		if err := req.Validate(); err != nil {
			var fe *orchestration.FieldError
			if !errors.As(err, &fe) || fe.Field == "" || !errors.Is(err, orchestration.ErrInvalid) {
				t.Fatalf("validation error does not name a field: %v", err)
			}
			return
		}
		// A valid request survives a round trip.
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := orchestration.DecodeTaskRequest(b)
		if err != nil || again.Validate() != nil {
			t.Fatalf("a valid request does not round-trip: %v", err)
		}
	})
}

// FuzzDecodeResultNotice: result notices from the queue never panic the
// decoder, and what it accepts names a task, a step and an attempt.
func FuzzDecodeResultNotice(f *testing.F) {
	for _, seed := range []string{
		`{"task_uuid":"01a21a1a-6905-7d33-8b68-ec8ffcfb9368","step_uuid":"01a21a1a-6905-7d33-8b68-ec8ffcfb9369","attempt":1,"success":true}`,
		`{"task_uuid":"x"}`, `{"attempt":-1}`, `"string"`, `{}`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := orchestration.DecodeResultNotice(data)
		if err != nil {
			return
		}
		if n.Attempt < 1 || n.TaskUUID.String() == "00000000-0000-0000-0000-000000000000" {
			t.Fatalf("accepted an incomplete notice: %+v", n)
		}
	})
}
