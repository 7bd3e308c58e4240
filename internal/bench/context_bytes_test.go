package bench

import (
	"bytes"
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/config"
	"github.com/tasker/tasker/internal/enginetest"
)

// TestRunPadsContexts: --context-bytes gives every task a context of about
// that size, and the report says so.
func TestRunPadsContexts(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const pad = 6000
	var progress bytes.Buffer
	rep, err := Run(ctx, Options{
		DatabaseURL: serverURL(t), Config: config.Default(), Scenario: "linear4", Tasks: 6, ContextBytes: pad,
		Workers: 1, Concurrency: 4, Submitters: 2, Timeout: time.Minute, SkipFloor: true, Keep: true,
		Progress: &progress, Logger: enginetest.Logger(t),
	})
	if rep != nil && rep.Database != "" {
		t.Cleanup(func() {
			if err := (&freshDatabase{serverURL: serverURL(t), name: rep.Database}).drop(context.Background()); err != nil {
				t.Errorf("drop %s: %v", rep.Database, err)
			}
		})
	}
	if err != nil {
		t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
	}
	if rep.TasksCompleted != 6 || rep.ContextBytes != pad || !strings.Contains(rep.Label(), "contexts 6000B") {
		t.Errorf("%d tasks complete, context bytes %d, label %q; want 6, %d and the size in the label",
			rep.TasksCompleted, rep.ContextBytes, rep.Label(), pad)
	}
	u, err := url.Parse(serverURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + rep.Database
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var least, most int
	if err := conn.QueryRow(ctx, `SELECT min(length(context->>'pad')), max(length(context->>'pad')) FROM tasker.tasks`).Scan(&least, &most); err != nil {
		t.Fatal(err)
	}
	if least != pad || most != pad {
		t.Errorf("contexts padded with %d to %d bytes, want %d", least, most, pad)
	}
}
