package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestRunPadsContexts: --context-bytes gives every task a context of about
// that size, and the report says so.
func TestRunPadsContexts(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const pad = 6000
	rep, conn := runKept(t, ctx, Options{Scenario: "linear4", Tasks: 6, ContextBytes: pad, Workers: 1, Submitters: 2})
	if rep.TasksCompleted != 6 || rep.ContextBytes != pad || !strings.Contains(rep.Label(), "contexts 6000B") {
		t.Errorf("%d tasks complete, context bytes %d, label %q; want 6, %d and the size in the label",
			rep.TasksCompleted, rep.ContextBytes, rep.Label(), pad)
	}
	var least, most int
	if err := conn.QueryRow(ctx, `SELECT min(length(context->>'pad')), max(length(context->>'pad')) FROM tasker.tasks`).Scan(&least, &most); err != nil {
		t.Fatal(err)
	}
	if least != pad || most != pad {
		t.Errorf("contexts padded with %d to %d bytes, want %d", least, most, pad)
	}
}
