package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/testdb"
)

// TestPruneCommand: a dry run counts and deletes nothing, the real run
// deletes the task finished before the cut-off and nothing else, and a
// policy that keeps everything says so. Not parallel: DATABASE_URL.
func TestPruneCommand(t *testing.T) {
	url := testdb.URL(t)
	t.Setenv("DATABASE_URL", url)
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{DatabaseURL: url, NoOrchestrator: true})
	h.Register(`
namespace: pruning
name: one
version: 1.0.0
steps:
  - {name: only, handler: nobody.home}
`)
	var ids []string
	for range 2 {
		task, _, err := h.Engine.CreateTask(ctx, orchestration.TaskRequest{Namespace: "pruning", Name: "one", Context: json.RawMessage(fmt.Sprintf(`{"n":%d}`, len(ids)))})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Engine.CancelTask(ctx, task.UUID, "prune test"); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.UUID.String())
	}
	if _, err := h.Pool.Exec(ctx, `UPDATE tasker.tasks SET completed_at = now() - interval '3 days' WHERE task_uuid = $1`, ids[0]); err != nil {
		t.Fatal(err)
	}
	tasks := func() int {
		var n int
		if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	out, errOut, code := run(t, "prune", "--tasks", "48h", "--dry-run")
	if code != 0 || !strings.Contains(out, "would delete: 1 finished tasks") || tasks() != 2 {
		t.Errorf("dry run: exit %d, %d tasks left\n%s%s", code, tasks(), out, errOut)
	}
	out, errOut, code = run(t, "--json", "prune", "--tasks", "48h", "--archives", "0")
	var res store.PruneResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res != (store.PruneResult{Tasks: 1}) {
		t.Errorf("prune --json: exit %d, printed %q %s", code, out, errOut)
	}
	var left string
	if err := h.Pool.QueryRow(ctx, `SELECT task_uuid::text FROM tasker.tasks`).Scan(&left); err != nil || left != ids[1] {
		t.Errorf("left %q (%v), want the young task %s", left, err, ids[1])
	}
	if out, _, code := run(t, "prune", "--archives", "0"); code != 0 || !strings.Contains(out, "nothing to do") {
		t.Errorf("prune with every cut-off 0: exit %d\n%s", code, out)
	}
	if _, errOut, code := run(t, "prune", "--tasks", "10m"); code != 2 || !strings.Contains(errOut, "retention.tasks_after") {
		t.Errorf("prune --tasks 10m: exit %d\n%s", code, errOut)
	}
}

// TestPruneHelpShowsTheDefaults: --help names each cut-off's default as
// the config file writes it.
func TestPruneHelpShowsTheDefaults(t *testing.T) {
	t.Parallel()
	out, _, code := run(t, "prune", "--help")
	for _, want := range []string{"retention.archive_after: 168h)", "retention.tasks_after: 0)", "retention.batch_size: 1000)"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("prune --help lacks %q:\n%s", want, out)
		}
	}
	for d, want := range map[time.Duration]string{0: "0", 168 * time.Hour: "168h", 90 * time.Minute: "1h30m",
		10 * time.Minute: "10m", 90 * time.Second: "1m30s", 1500 * time.Millisecond: "1.5s"} {
		if got := keep(d); got != want {
			t.Errorf("keep(%s) = %q, want %q", d, got, want)
		}
	}
}
