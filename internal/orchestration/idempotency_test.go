package orchestration_test

import (
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/store"
)

// TestRequestDiffersFrom: a repeat of the first request matches whatever
// it leaves out and however its JSON is spelt; a field it gives that the
// first task does not have is named.
func TestRequestDiffersFrom(t *testing.T) {
	parent := uuid.Must(uuid.NewV7())
	first := store.Task{Version: "1.0.0", Context: json.RawMessage(`{"a":1,"b":[1,2]}`), Tags: []string{"vip"},
		Priority: 3, Initiator: "shop", SourceSystem: "web", CorrelationID: uuid.Must(uuid.NewV7()), ParentCorrelationID: &parent}
	other := uuid.Must(uuid.NewV7())
	for _, tc := range []struct {
		req  orchestration.TaskRequest
		want string
	}{
		{orchestration.TaskRequest{Context: json.RawMessage(` { "b" : [1, 2], "a" : 1.0 } `)}, ""},
		{orchestration.TaskRequest{Context: first.Context, Version: "1.0.0", Tags: []string{"vip"}, Priority: 3,
			Initiator: "shop", SourceSystem: "web", CorrelationID: &first.CorrelationID, ParentCorrelationID: &parent}, ""},
		{orchestration.TaskRequest{Context: json.RawMessage(`{"a":2,"b":[1,2]}`)}, "context"},
		{orchestration.TaskRequest{Context: json.RawMessage(`{"a":1,"b":[2,1]}`)}, "context"},
		{orchestration.TaskRequest{}, "context"},
		{orchestration.TaskRequest{Context: first.Context, Version: "2.0.0"}, "version"},
		{orchestration.TaskRequest{Context: first.Context, Tags: []string{"vip", "new"}}, "tags"},
		{orchestration.TaskRequest{Context: first.Context, Priority: 7}, "priority"},
		{orchestration.TaskRequest{Context: first.Context, Reason: "again"}, "reason"},
		{orchestration.TaskRequest{Context: first.Context, CorrelationID: &other}, "correlation_id"},
		{orchestration.TaskRequest{Context: first.Context, ParentCorrelationID: &other}, "parent_correlation_id"},
	} {
		if got := tc.req.DiffersFrom(first); got != tc.want {
			t.Errorf("%+v: differs in %q, want %q", tc.req, got, tc.want)
		}
	}
}
