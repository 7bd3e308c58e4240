package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tasker/tasker/domainevents"
	ide "github.com/tasker/tasker/internal/domainevents"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lockedbuf"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/testdb"
)

func runEvents(ctx context.Context, args ...string) (string, string, error) {
	out, errb := &lockedbuf.Buffer{}, &lockedbuf.Buffer{}
	g := &globals{stdout: out, stderr: errb}
	cmd := eventsCmd(g)
	cmd.SetArgs(args)
	cmd.SetOut(out)
	cmd.SetErr(errb)
	err := cmd.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

// `events tail` prints a namespace's events: JSON lines when stdout is not a
// terminal, a table on request, and new events as they arrive.
func TestEventsTail(t *testing.T) {
	url := testdb.URL(t)
	st := store.New(testdb.Pool(t, url))
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true, DatabaseURL: url,
		EngineOptions: []orchestration.EngineOption{orchestration.WithBeforeCommit(ide.Hook(st, ide.StoreTemplates(st)))}})
	h.Register(`
namespace: clitail
name: job
version: 1.0.0
steps:
  - name: work
    handler: clitail.work
`)
	task := h.Submit(orchestration.TaskRequest{Namespace: "clitail", Name: "job", Initiator: "cli-test"})
	t.Setenv("DATABASE_URL", url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	out, stderr, err := runEvents(ctx, "tail", "--namespace", "clitail", "--from-start", "--no-follow")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one JSON line, got %q", out)
	}
	if err := ide.ValidateEvent([]byte(lines[0])); err != nil {
		t.Fatalf("printed event does not match the schema: %v\n%s", err, lines[0])
	}
	ev, err := domainevents.Decode([]byte(lines[0]))
	if err != nil || ev.EventType != domainevents.TaskInitiated || ev.TaskUUID != task.UUID {
		t.Fatalf("printed %s (%v)", lines[0], err)
	}

	out, _, err = runEvents(ctx, "tail", "-n", "clitail", "--from-start", "--no-follow", "--format", "table")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "TIME") || !strings.Contains(out, "TaskInitiated") || !strings.Contains(out, task.UUID.String()) ||
		!strings.Contains(out, "job@1.0.0, 1 steps, by cli-test") {
		t.Fatalf("table output:\n%s", out)
	}

	// Following: only new events of the requested type.
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	// Ends after one event is printed (--limit 1) or ctx expires.
	go func() {
		out, _, err := runEvents(ctx, "tail", "-n", "clitail", "--type", "TaskCancelled", "--limit", "1", "--poll-interval", "50ms")
		done <- result{out, err}
	}()
	// The tail starts from the queue's head when it connects; cancel tasks
	// until one of them is after it.
	var r result
	for got := false; !got; {
		if _, err := h.Engine.CancelTask(ctx, h.Submit(orchestration.TaskRequest{Namespace: "clitail", Name: "job"}).UUID, "from the test"); err != nil {
			t.Fatal(err)
		}
		select {
		case r = <-done:
			got = true
		case <-time.After(300 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("tail printed nothing")
		}
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	var printed map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.out)), &printed); err != nil || printed["event_type"] != "TaskCancelled" {
		t.Fatalf("followed output %q (%v)", r.out, err)
	}

	if _, _, err := runEvents(ctx, "tail"); err == nil || !strings.Contains(err.Error(), "--namespace is required") {
		t.Fatalf("tail without a namespace: %v", err)
	}
}
