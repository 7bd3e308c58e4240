package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/internal/wait"
	"github.com/tasker/tasker/worker"
)

// These tests pin down, deterministically and in-process, defects that the
// process-level chaos runs found by chance.

// TestRetryDueDuringEvaluationKeepsTaskAwake: a step fails (or its lease is
// reaped) with a short retry backoff. The task moves to waiting_for_retry
// with a wake-up time; if the backoff elapses before the same transaction
// reaches its resting-state bookkeeping, the step counts as "due" rather
// than "in backoff" there, the earliest wake-up comes out nil, and the
// task's wake_at is cleared: nothing ever looks at the task again. Found by
// TestChaos (a lease reap with a 100ms backoff on a loaded machine); a 2ms
// backoff makes the window wide enough to hit on most tasks.
func TestRetryDueDuringEvaluationKeepsTaskAwake(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	// The window is a few database round trips wide and its position
	// depends on the machine, so the backoffs cover 1ms to 24ms.
	const perTemplate = 4
	var names []string
	for base := 2; base <= 24; base++ {
		name := fmt.Sprintf("flaky_%d", base)
		names = append(names, name)
		h.Register(fmt.Sprintf(`
namespace: chaos
name: %s
version: 1.0.0
steps:
  - name: only
    handler: chaos.flaky
    retry:
      max_attempts: 3
      backoff:
        base_ms: %d
        cap_ms: %d
`, name, base, base))
	}
	h.Worker(worker.Config{Namespaces: []string{"chaos"}, Concurrency: 8, LeaseDuration: 3 * time.Second},
		map[string]worker.Handler{"chaos.flaky": func(_ context.Context, s *worker.Step) (any, error) {
			if s.Attempt == 1 {
				return nil, errors.New("first attempt fails (retryable)")
			}
			return map[string]int{"n": 1}, nil
		}})
	for _, name := range names {
		for i := 0; i < perTemplate; i++ {
			h.Submit(orchestration.TaskRequest{Namespace: "chaos", Name: name, Context: json.RawMessage(`{}`)})
		}
	}
	tasks := len(names) * perTemplate
	ctx := context.Background()
	// Stranded: resting in waiting_for_retry with no wake-up time for 2s,
	// far past a backoff of at most 24ms.
	var done, stranded int
	var which []string
	err := wait.Poll(time.Now().Add(30*time.Second), 100*time.Millisecond, func() (bool, error) {
		if err := h.Pool.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE state = 'complete'),
			       count(*) FILTER (WHERE state = 'waiting_for_retry' AND wake_at IS NULL
			                          AND state_entered_at < now() - interval '2 seconds'),
			       coalesce(array_agg(name) FILTER (WHERE state = 'waiting_for_retry' AND wake_at IS NULL
			                          AND state_entered_at < now() - interval '2 seconds'), '{}')
			  FROM tasker.tasks`).Scan(&done, &stranded, &which); err != nil {
			return false, err
		}
		// Every task either complete or stranded: no point waiting longer.
		return done == tasks || done+stranded == tasks, nil
	})
	if err != nil && !errors.Is(err, wait.ErrTimeout) {
		t.Fatal(err)
	}
	if done != tasks {
		t.Fatalf("%d of %d tasks complete; %d rest in waiting_for_retry with no wake-up time "+
			"although their step's backoff elapsed long ago (templates %v)", done, tasks, stranded, which)
	}
}

// TestTaskRequestReadTwiceCreatesOneTask: a replica reads a batch of task
// requests and creates their tasks one transaction at a time; when the batch
// takes longer than the visibility timeout, another replica reads the
// requests not yet done and creates their tasks. The first replica then
// reaches those requests, finds their messages already deleted — and must
// not create the task again. Found by TestChaos (25 duplicated tasks: one
// whole batch of requests).
func TestTaskRequestReadTwiceCreatesOneTask(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(`
namespace: chaos
name: one
version: 1.0.0
steps:
  - name: only
    handler: chaos.step
`)
	ctx := context.Background()
	// Replica A is slow: its first task creation holds its transaction
	// open past the 1s visibility timeout of the batch it read, until
	// replica B has handled what it read (bounded, should B ever wait on A
	// instead of skipping A's locked message).
	var first atomic.Bool
	bDone := make(chan struct{})
	slowA := orchestration.NewEngine(store.New(h.Pool), nil, h.Logger,
		orchestration.WithBeforeCommit(func(context.Context, store.Tx, *telemetry.Journal) error {
			if first.CompareAndSwap(false, true) {
				select {
				case <-bDone:
				case <-time.After(30 * time.Second):
				}
			}
			return nil
		}))
	svc := orchestration.ServiceConfig{VisibilityTimeout: time.Second, BatchSize: 10}
	replicaA := orchestration.NewOrchestrator(slowA, svc, nil, nil, h.Logger)
	replicaB := orchestration.NewOrchestrator(h.Engine, svc, nil, nil, h.Logger)

	if err := sendTaskRequests(ctx, h.Pool, 0, 2, "chaos", "one"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	var errA error
	// Ends when replica A has handled its batch (both requests).
	go func() {
		defer wg.Done()
		_, errA = replicaA.RequestsOnce(ctx)
	}()
	// B reads after the visibility timeout, while A is still on its first
	// request (whose message row A's open transaction keeps locked, so B
	// skips it): B gets the second request and creates its task. A's batch
	// was read once and its timeout has run out when a read message is
	// visible again; A holds its first commit until B is done.
	enginetest.Eventually(t, 10*time.Second, "replica A's batch visible again", func() bool {
		var n int
		err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_orchestration_task_requests
			WHERE read_ct >= 1 AND vt <= clock_timestamp()`).Scan(&n)
		return err == nil && n > 0
	})
	_, errB := replicaB.RequestsOnce(ctx)
	close(bDone)
	wg.Wait()
	if errB != nil {
		t.Fatal(errB)
	}
	if errA != nil {
		t.Fatal(errA)
	}
	var n int
	var perSeq []int
	if err := h.Pool.QueryRow(ctx, `
		SELECT count(*), array_agg(c ORDER BY seq) FROM (
			SELECT context->>'seq' AS seq, count(*) AS c FROM tasker.tasks GROUP BY 1) x`).Scan(&n, &perSeq); err != nil {
		t.Fatal(err)
	}
	if len(perSeq) != 2 || perSeq[0] != 1 || perSeq[1] != 1 {
		t.Fatalf("tasks per request = %v, want [1 1]: a request read by two replicas created two tasks", perSeq)
	}
	if ms, err := queue.QueueMetrics(ctx, h.Pool, queue.TaskRequestsQueue); err != nil || ms.Length != 0 {
		t.Fatalf("task request queue: %+v, %v; want empty", ms, err)
	}
}
