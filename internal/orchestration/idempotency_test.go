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
		// Numbers compare by value, to the last digit, however written.
		{orchestration.TaskRequest{Context: json.RawMessage(`{"a":1e0,"b":[10e-1,0.2e1]}`)}, ""},
		{orchestration.TaskRequest{Context: json.RawMessage(`{"a":1.0001,"b":[1,2]}`)}, "context"},
		{orchestration.TaskRequest{Context: json.RawMessage(`{"a":-1,"b":[1,2]}`)}, "context"},
		// Zero values count when the request gave them.
		{orchestration.TaskRequest{Context: first.Context, Given: map[string]bool{"priority": true}}, "priority"},
		{orchestration.TaskRequest{Context: first.Context, Given: map[string]bool{"tags": true}}, "tags"},
		{orchestration.TaskRequest{Context: first.Context, Tags: []string{}, Given: map[string]bool{"tags": true}}, "tags"},
	} {
		if got := tc.req.DiffersFrom(first); got != tc.want {
			t.Errorf("%+v: differs in %q, want %q", tc.req, got, tc.want)
		}
	}
}

// TestRequestDiffersFromComparesLargeIntegersExactly: two integers beyond
// float64's precision that differ are different contexts (they compared
// equal as float64); the same one written differently is not.
func TestRequestDiffersFromComparesLargeIntegersExactly(t *testing.T) {
	first := store.Task{Context: json.RawMessage(`{"n":12345678901234567890}`)}
	for ctx, want := range map[string]string{
		`{"n":12345678901234567891}`:      "context",
		`{"n":12345678901234567890}`:      "",
		`{"n":1.2345678901234567890e19}`:  "",
		`{"n":123456789012345678900e-1}`:  "",
		`{"n":1.23456789012345678901e19}`: "context",
	} {
		if got := (&orchestration.TaskRequest{Context: json.RawMessage(ctx)}).DiffersFrom(first); got != want {
			t.Errorf("context %s against %s: differs in %q, want %q", ctx, first.Context, got, want)
		}
	}
}
