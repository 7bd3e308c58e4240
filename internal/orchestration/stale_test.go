package orchestration_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/worker"
)

// TestStaleTaskMovesToErrorWithDLQEntry: no worker serves the namespace, so
// the task's first step waits in the queue; after the template's threshold
// the task is moved to error with a DLQ entry that says why.
func TestStaleTaskMovesToErrorWithDLQEntry(t *testing.T) {
	t.Parallel()
	h := orphanedHarness(t)
	// A second template without its own threshold uses the daemon default
	// (an hour here), so its task must not be touched.
	h.Register(linearTemplate("patient"))
	stale := h.Submit(orchestration.TaskRequest{Namespace: "orphaned", Name: "nobody_home"})
	patient := h.Submit(orchestration.TaskRequest{Namespace: "patient", Name: "linear"})

	got := h.WaitTask(stale.UUID, 20*time.Second, lifecycle.TaskError)
	if got.State != lifecycle.TaskError {
		t.Fatalf("stale task is %s", got.State)
	}
	entries, err := h.Store.DLQList(context.Background(), "", "orphaned", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Reason != "stale" || entries[0].TaskUUID != stale.UUID {
		t.Fatalf("DLQ entries: %+v", entries)
	}
	d := entries[0].Detail
	for _, want := range []string{"no progress", "stale_after_seconds", "lonely=enqueued", "worker for namespace orphaned"} {
		if !strings.Contains(d, want) {
			t.Errorf("DLQ detail %q does not mention %q", d, want)
		}
	}
	if !strings.Contains(string(entries[0].Snapshot), `"lonely"`) {
		t.Errorf("DLQ snapshot lacks the steps: %s", entries[0].Snapshot)
	}
	p, err := h.Store.TaskGet(context.Background(), patient.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if p.State.Terminal() {
		t.Errorf("a task within its threshold was moved to %s", p.State)
	}
	// The operator can revive it once a worker exists: retry puts the task
	// back to work. Its step's message is still queued and the retry sends
	// another; the step runs once and the spare message is dropped.
	retryStaleAndFinish(t, h, stale.UUID)
}

// orphanedHarness runs an orchestrator that looks for stale tasks every
// 100 ms, with template orphaned/nobody_home: one step, lonely, of a
// handler no worker has yet, stale after a second.
func orphanedHarness(t *testing.T) *enginetest.Harness {
	t.Helper()
	h := enginetest.New(t, enginetest.Options{Service: orchestration.ServiceConfig{
		StaleInterval: 100 * time.Millisecond, StaleAfter: time.Hour}})
	h.Register(`
namespace: orphaned
name: nobody_home
version: 1.0.0
stale_after_seconds: 1
steps:
  - {name: lonely, handler: nobody.home}
`)
	return h
}

// retryStaleAndFinish retries a task given up as stale, with its lonely
// step enqueued, starts a worker for it and checks that the task completes
// with the step run once and the worker queue left empty.
func retryStaleAndFinish(t *testing.T, h *enginetest.Harness, id uuid.UUID) {
	t.Helper()
	l := newLedger()
	h.Worker(workerConfig("orphaned"), map[string]worker.Handler{"nobody.home": echo(l)})
	if _, err := h.Engine.RetryTask(context.Background(), id, "worker deployed"); err != nil {
		t.Fatal(err)
	}
	h.WaitTask(id, 20*time.Second, lifecycle.TaskComplete)
	if n := l.count(id, "lonely"); n != 1 {
		t.Errorf("the stale step ran %d times, want once", n)
	}
	enginetest.Eventually(t, 10*time.Second, "worker queue empty", func() bool {
		m, err := queue.QueueMetrics(context.Background(), h.Pool, "worker_orphaned_queue")
		return err == nil && m.Length == 0
	})
}

// A stale task whose step's message is gone (here purged by hand) is not
// stranded: the operator's task retry sends the message again. Nothing
// else would: the step stays enqueued, and the lease reaper only looks at
// steps in progress.
func TestTaskRetryResendsALostStepMessage(t *testing.T) {
	t.Parallel()
	h := orphanedHarness(t)
	task := h.Submit(orchestration.TaskRequest{Namespace: "orphaned", Name: "nobody_home"})
	h.WaitTask(task.UUID, 20*time.Second, lifecycle.TaskError)
	if n, err := queue.Purge(context.Background(), h.Pool, "worker_orphaned_queue"); err != nil || n != 1 {
		t.Fatalf("purge the step's message: %d, %v", n, err)
	}
	retryStaleAndFinish(t, h, task.UUID)
	tr, _, err := h.Store.TaskTransitions(context.Background(), task.UUID)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, x := range tr {
		found = found || (x.From == string(lifecycle.TaskError) && strings.Contains(string(x.Metadata), `"resent_step_messages": 1`))
	}
	if !found {
		t.Errorf("the retry's transition does not count the message sent again: %+v", tr)
	}
}

func TestPermanentFailureFilesDLQEntry(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(linearTemplate("dlqfail"))
	l := newLedger()
	h.Worker(workerConfig("dlqfail"), failingSecond(l))
	task := h.Submit(orchestration.TaskRequest{Namespace: "dlqfail", Name: "linear"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskError)
	entries, err := h.Store.DLQList(context.Background(), "pending", "dlqfail", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Reason != "step_failed" || !strings.Contains(entries[0].Detail, "second") || !strings.Contains(entries[0].Detail, "card declined") {
		t.Fatalf("DLQ entries: %+v", entries)
	}
	notes, by := "refunded", "ops@example.com"
	upd, err := h.Store.DLQUpdate(context.Background(), entries[0].ID, "resolved", &notes, &by)
	if err != nil || upd.ResolutionStatus != "resolved" {
		t.Fatalf("update: %v %+v", err, upd)
	}
}
