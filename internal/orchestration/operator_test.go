package orchestration_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/worker"
)

// pairTemplate is x -> y, x with a single attempt, under the given failure
// policy.
func pairTemplate(ns, policy string) string {
	return fmt.Sprintf(`
namespace: %s
name: pair
version: 1.0.0
failure_policy: %s
steps:
  - name: x
    handler: t.x
    retry: {max_attempts: 1}
  - name: y
    handler: t.y
    depends_on: [x]
`, ns, policy)
}

// failUntil returns handlers under which every step but y fails permanently
// until fixed is set; then every step succeeds.
func failUntil(fixed *atomic.Bool) map[string]worker.Handler {
	h := func(ctx context.Context, s *worker.Step) (any, error) {
		if !fixed.Load() && s.Name != "y" {
			return nil, worker.Permanent(errors.New("gateway down"))
		}
		return map[string]int{"n": 1}, nil
	}
	return map[string]worker.Handler{"t.x": h, "t.y": h, "t.a": h, "t.b": h}
}

func stepsByName(t *testing.T, h *enginetest.Harness, task uuid.UUID) map[string]store.Step {
	t.Helper()
	steps, err := h.Store.TaskSteps(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.Step{}
	for _, s := range steps {
		out[s.Name] = s
	}
	return out
}

// An operator who resolves a step the failure never reached leaves the task
// where the precedence of DESIGN §3 puts it (a failed step that cannot run
// wins): in error under fail_fast, held in blocked_by_failures under hold.
// It must not be revived into waiting_for_dependencies, where nothing can
// move it and task retry and resolve are refused. Resolving the failed step
// afterwards completes the task.
func TestStepResolveBesideAFailedStepKeepsTheTaskFailed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		policy string
		held   lifecycle.TaskState
	}{
		{"fail_fast", lifecycle.TaskError},
		{"hold", lifecycle.TaskBlockedByFailures},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			t.Parallel()
			h := enginetest.New(t, enginetest.Options{})
			ns := "resolve_beside_" + tc.policy
			h.Register(pairTemplate(ns, tc.policy))
			var fixed atomic.Bool
			h.Worker(workerConfig(ns), failUntil(&fixed))
			task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "pair"})
			h.WaitTask(task.UUID, 30*time.Second, tc.held)

			steps := stepsByName(t, h, task.UUID)
			st, got, err := h.Engine.StepOperate(context.Background(), steps["y"].UUID, orchestration.StepActionResolve, nil, "skip")
			if err != nil {
				t.Fatal(err)
			}
			if st.State != lifecycle.StepResolvedManually || got.State != tc.held {
				t.Fatalf("after resolving y: step %s, task %s; want resolved_manually and %s", st.State, got.State, tc.held)
			}
			if now, _ := h.Store.TaskGet(context.Background(), task.UUID); now.State != tc.held {
				t.Fatalf("stored task is %s, want %s", now.State, tc.held)
			}

			// Now the failed step: nothing is left to run, so the task
			// completes (through evaluation, not a rest in
			// waiting_for_dependencies).
			if _, _, err := h.Engine.StepOperate(context.Background(), steps["x"].UUID, orchestration.StepActionResolve, nil, "done by hand"); err != nil {
				t.Fatal(err)
			}
			h.WaitTask(task.UUID, 10*time.Second, lifecycle.TaskComplete)
		})
	}
}

// Resolving the only failed step of a task whose other steps are all done
// completes it: the revived task has nothing to wait for.
func TestStepResolveOfTheLastStepCompletesTheTask(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(`
namespace: resolve_last
name: single
version: 1.0.0
steps:
  - {name: x, handler: t.x, retry: {max_attempts: 1}}
`)
	var fixed atomic.Bool
	h.Worker(workerConfig("resolve_last"), failUntil(&fixed))
	task := h.Submit(orchestration.TaskRequest{Namespace: "resolve_last", Name: "single"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskError)
	_, got, err := h.Engine.StepOperate(context.Background(), stepsByName(t, h, task.UUID)["x"].UUID, orchestration.StepActionResolve, nil, "done by hand")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != lifecycle.TaskComplete {
		t.Fatalf("task is %s after its only step was resolved, want complete", got.State)
	}
}

// Two failed steps under fail_fast: retrying one leaves the task in error
// (the other still cannot run), retrying the second revives it and both
// run to completion.
func TestStepRetryRevivesTheTaskOnceNoStepIsFailed(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(`
namespace: retry_two
name: two
version: 1.0.0
steps:
  - {name: a, handler: t.a, retry: {max_attempts: 1}}
  - {name: b, handler: t.b, retry: {max_attempts: 1}}
`)
	var fixed atomic.Bool
	h.Worker(workerConfig("retry_two"), failUntil(&fixed))
	task := h.Submit(orchestration.TaskRequest{Namespace: "retry_two", Name: "two"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskError)
	enginetest.Eventually(t, 30*time.Second, "both steps failed", func() bool {
		s := stepsByName(t, h, task.UUID)
		return s["a"].State == lifecycle.StepError && s["b"].State == lifecycle.StepError
	})
	fixed.Store(true)
	steps := stepsByName(t, h, task.UUID)
	st, got, err := h.Engine.StepOperate(context.Background(), steps["a"].UUID, orchestration.StepActionRetry, nil, "gateway back")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != lifecycle.StepPending || got.State != lifecycle.TaskError {
		t.Fatalf("after retrying a: step %s, task %s; want pending and error (b is still failed)", st.State, got.State)
	}
	if _, got, err = h.Engine.StepOperate(context.Background(), steps["b"].UUID, orchestration.StepActionRetry, nil, "gateway back"); err != nil {
		t.Fatal(err)
	}
	if got.State.Terminal() {
		t.Fatalf("after retrying b the task is %s, want it running", got.State)
	}
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
}

// dlqEntry reads the task's only DLQ entry.
func dlqEntry(t *testing.T, h *enginetest.Harness, ns string) store.DLQEntry {
	t.Helper()
	entries, err := h.Store.DLQList(context.Background(), "", ns, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("DLQ entries of %s: %+v, want one", ns, entries)
	}
	return entries[0]
}

// An operator action that takes a task out of error closes the DLQ entry
// filed when it failed, in the same transaction: status resolved, the
// action and its author appended to the notes an investigator wrote. An
// action after which the task is still failed leaves the entry open.
func TestOperatorActionsCloseTheTasksDLQEntry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		act  func(t *testing.T, h *enginetest.Harness, task uuid.UUID, ns string)
		note string
	}{
		{"task retry", func(t *testing.T, h *enginetest.Harness, task uuid.UUID, _ string) {
			if _, err := h.Engine.RetryTask(context.Background(), task, "gateway back"); err != nil {
				t.Fatal(err)
			}
		}, "task retried: gateway back"},
		{"task resolve", func(t *testing.T, h *enginetest.Harness, task uuid.UUID, _ string) {
			if _, err := h.Engine.ResolveTask(context.Background(), task, "refunded"); err != nil {
				t.Fatal(err)
			}
		}, "task resolved: refunded"},
		{"step resolve then retry", func(t *testing.T, h *enginetest.Harness, task uuid.UUID, ns string) {
			steps := stepsByName(t, h, task)
			if _, _, err := h.Engine.StepOperate(context.Background(), steps["y"].UUID, orchestration.StepActionResolve, nil, "skip"); err != nil {
				t.Fatal(err)
			}
			if d := dlqEntry(t, h, ns); d.ResolutionStatus != "investigating" {
				t.Errorf("entry is %s while the task is still in error, want it left investigating", d.ResolutionStatus)
			}
			if _, _, err := h.Engine.StepOperate(context.Background(), steps["x"].UUID, orchestration.StepActionRetry, nil, "gateway back"); err != nil {
				t.Fatal(err)
			}
		}, "step x retried: gateway back"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := enginetest.New(t, enginetest.Options{})
			ns := "dlq_close_" + strings.ReplaceAll(tc.name, " ", "_")
			h.Register(pairTemplate(ns, "fail_fast"))
			var fixed atomic.Bool
			h.Worker(workerConfig(ns), failUntil(&fixed))
			task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "pair"})
			h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskError)
			notes, by := "looking at gateway logs", "alice"
			if _, err := h.Store.DLQUpdate(context.Background(), dlqEntry(t, h, ns).ID, "investigating", &notes, &by); err != nil {
				t.Fatal(err)
			}
			fixed.Store(true)
			tc.act(t, h, task.UUID, ns)
			d := dlqEntry(t, h, ns)
			if d.ResolutionStatus != "resolved" || d.ResolvedBy != "operator" ||
				!strings.HasPrefix(d.ResolutionNotes, notes+"\n") || !strings.Contains(d.ResolutionNotes, tc.note+" (by operator") {
				t.Errorf("after %s: entry %s by %q, notes %q; want resolved by operator, notes %q then %q",
					tc.name, d.ResolutionStatus, d.ResolvedBy, d.ResolutionNotes, notes, tc.note)
			}
		})
	}
}

// Under the hold policy a task waits in blocked_by_failures "for an
// operator to resolve or retry it": task retry gives its failed steps
// their attempts back and the task runs on from there.
func TestTaskRetryOfAHeldTask(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(pairTemplate("retry_held", "hold"))
	var fixed atomic.Bool
	h.Worker(workerConfig("retry_held"), failUntil(&fixed))
	task := h.Submit(orchestration.TaskRequest{Namespace: "retry_held", Name: "pair"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskBlockedByFailures)
	fixed.Store(true)
	got, err := h.Engine.RetryTask(context.Background(), task.UUID, "gateway back")
	if err != nil {
		t.Fatalf("retry of a held task: %v", err)
	}
	if got.State.Terminal() || got.State == lifecycle.TaskBlockedByFailures {
		t.Fatalf("retried task is %s, want it running", got.State)
	}
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
	if x := stepsByName(t, h, task.UUID)["x"]; x.Attempts != 2 {
		t.Errorf("x ran %d attempts, want 2 (the failed one and the retry)", x.Attempts)
	}
	// A task that is not failed cannot be retried.
	if _, err := h.Engine.RetryTask(context.Background(), task.UUID, "again"); !errors.Is(err, orchestration.ErrWrongState) {
		t.Errorf("retry of a complete task: %v, want ErrWrongState", err)
	}
}
