package domainevents_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/telemetry"
	"github.com/tasker/tasker/worker"
)

// TestResultEventDataFromLockedRows: in every result transaction, the
// domain events' data comes from the rows the transaction locked and its
// own moves (store.LockedRowsKept), and equals what the database returns
// for the same request once those moves are written: the tasks' states,
// start and end and their steps' counts, and the steps' names, handlers,
// states, attempts, next attempt times, results (of completed steps) and
// errors (of failed ones). The workflows cover completion, a retry due at
// once, a retry after a backoff, a permanent failure, and two steps in
// flight at once, where a worker may move the other step between the lock
// and the read: the counts of the states workers move steps through may
// then differ, never their sum nor any other count.
func TestResultEventDataFromLockedRows(t *testing.T) {
	t.Parallel()
	var checked, answered atomic.Int32
	var mu sync.Mutex
	var failures []string
	var st *store.Store
	check := func(ctx context.Context, tx store.Tx, j *telemetry.Journal) error {
		var brief, steps []uuid.UUID
		seenTask, seenStep := map[uuid.UUID]bool{}, map[uuid.UUID]bool{}
		for _, r := range j.Records {
			if r.Kind != telemetry.KindStepTransition || r.Step == nil {
				continue
			}
			from := lifecycle.StepState(r.From)
			if from != lifecycle.StepEnqueuedForOrchestration && from != lifecycle.StepEnqueuedAsErrorForOrchestration {
				continue
			}
			if !seenTask[r.Task.UUID] {
				seenTask[r.Task.UUID] = true
				brief = append(brief, r.Task.UUID)
			}
			if !seenStep[r.Step.UUID] {
				seenStep[r.Step.UUID] = true
				steps = append(steps, r.Step.UUID)
			}
		}
		if len(steps) == 0 {
			return nil // not a result transaction
		}
		checked.Add(1)
		fail := func(format string, args ...any) {
			mu.Lock()
			failures = append(failures, fmt.Sprintf(format, args...))
			mu.Unlock()
		}
		if !store.LockedRowsKept(tx) {
			// A task that fails for good gets a dead-letter entry, a
			// statement of its own: its domain events read the database.
			for _, r := range j.Records {
				if r.Kind == telemetry.KindTaskTransition && lifecycle.TaskState(r.To) == lifecycle.TaskError {
					checked.Add(-1)
					return nil
				}
			}
			fail("a result transaction of %d steps does not keep its locked rows", len(steps))
			return nil
		}
		memTasks, memSteps, err := st.DomainEventDataTx(ctx, tx, nil, brief, steps, nil)
		if err != nil {
			return err
		}
		if !store.LockedRowsKept(tx) {
			return errors.New("answering from the locked rows dropped them")
		}
		// Any statement of the transaction's own drops them: the same
		// request then writes the buffered moves and reads the database.
		if _, err := st.TaskStepsTx(ctx, tx, brief[0]); err != nil {
			return err
		}
		if store.LockedRowsKept(tx) {
			return errors.New("a statement outside the buffer left the locked rows in use")
		}
		dbTasks, dbSteps, err := st.DomainEventDataTx(ctx, tx, nil, brief, steps, nil)
		if err != nil {
			return err
		}
		answered.Add(1)
		compareTasks(fail, memTasks, dbTasks)
		compareSteps(fail, memSteps, dbSteps)
		return nil
	}
	h := newHarness(t, enginetest.Options{}, check)
	st = h.Store
	h.Register(seqTemplate)
	h.Register(`
namespace: lr
name: wide
version: 1.0.0
steps:
  - name: start
    handler: lr.ok
  - name: left
    handler: lr.ok
    depends_on: [start]
  - name: right
    handler: lr.later
    depends_on: [start]
    retry:
      max_attempts: 3
      backoff: {base_ms: 50, cap_ms: 50}
  - name: join
    handler: lr.ok
    depends_on: [left, right]
`)
	h.Register(`
namespace: lr
name: doomed
version: 1.0.0
steps:
  - name: only
    handler: lr.fatal
`)
	startWorker(h, "seq", map[string]worker.Handler{
		"seq.ok": okHandler,
		"seq.flaky": func(ctx context.Context, s *worker.Step) (any, error) {
			if s.Attempt == 1 {
				return nil, errors.New("transient trouble")
			}
			return okHandler(ctx, s)
		},
	})
	startWorker(h, "lr", map[string]worker.Handler{
		"lr.ok": okHandler,
		"lr.later": func(ctx context.Context, s *worker.Step) (any, error) {
			if s.Attempt == 1 {
				return nil, errors.New("not yet")
			}
			return map[string]any{"big": strings.Repeat("x", 3000), "attempt": s.Attempt}, nil
		},
		"lr.fatal": func(context.Context, *worker.Step) (any, error) {
			return nil, worker.Permanent(errors.New("no way"))
		},
	})
	var tasks []uuid.UUID
	for range 4 {
		tasks = append(tasks, h.Submit(orchestration.TaskRequest{Namespace: "seq", Name: "seq"}).UUID)
		tasks = append(tasks, h.Submit(orchestration.TaskRequest{Namespace: "lr", Name: "wide"}).UUID)
	}
	doomed := h.Submit(orchestration.TaskRequest{Namespace: "lr", Name: "doomed"}).UUID
	for _, id := range tasks {
		h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
	}
	h.WaitTask(doomed, 30*time.Second, lifecycle.TaskError)
	mu.Lock()
	defer mu.Unlock()
	for _, f := range failures {
		t.Error(f)
	}
	// 4 × (3 results + a retry) + 4 × (4 results + a retry) + 1, in as
	// many transactions or fewer.
	if checked.Load() < 5 || answered.Load() != checked.Load() {
		t.Fatalf("%d result transactions checked, %d compared", checked.Load(), answered.Load())
	}
}

// workerMoved are the step states a worker moves a step into or out of
// without the task's lock.
var workerMoved = map[string]bool{
	string(lifecycle.StepEnqueued): true, string(lifecycle.StepInProgress): true,
	string(lifecycle.StepEnqueuedForOrchestration): true, string(lifecycle.StepEnqueuedAsErrorForOrchestration): true,
}

// indexDB indexes the database's answer by uuid, and reports a count that
// differs from the locked rows'.
func indexDB[T any](fail func(string, ...any), what string, mem, db []T, id func(T) uuid.UUID) map[uuid.UUID]T {
	if len(mem) != len(db) {
		fail("%d %s from the locked rows, %d from the database", len(mem), what, len(db))
	}
	byID := make(map[uuid.UUID]T, len(db))
	for _, d := range db {
		byID[id(d)] = d
	}
	return byID
}

func compareTasks(fail func(string, ...any), mem, db []store.DomainEventTask) {
	byID := indexDB(fail, "tasks", mem, db, func(d store.DomainEventTask) uuid.UUID { return d.UUID })
	for _, m := range mem {
		d, ok := byID[m.UUID]
		switch {
		case !ok:
			fail("task %s: not in the database's answer", m.UUID)
			continue
		case !m.Brief || !d.Brief:
			fail("task %s: brief %v from the locked rows, %v from the database", m.UUID, m.Brief, d.Brief)
		case m.State != d.State:
			fail("task %s: state %s from the locked rows, %s in the database", m.UUID, m.State, d.State)
		case !m.CreatedAt.Equal(d.CreatedAt):
			fail("task %s: created_at %v, database %v", m.UUID, m.CreatedAt, d.CreatedAt)
		case (m.CompletedAt == nil) != (d.CompletedAt == nil) || m.CompletedAt != nil && !m.CompletedAt.Equal(*d.CompletedAt):
			fail("task %s (%s): completed_at %v, database %v", m.UUID, m.State, m.CompletedAt, d.CompletedAt)
		case m.StepCount != d.StepCount:
			fail("task %s: %d steps, database %d", m.UUID, m.StepCount, d.StepCount)
		}
		memMoved, dbMoved := 0, 0
		for _, state := range lifecycle.StepStates {
			s := string(state)
			if workerMoved[s] {
				memMoved += m.StepCounts[s]
				dbMoved += d.StepCounts[s]
			} else if m.StepCounts[s] != d.StepCounts[s] {
				fail("task %s: %d steps %s from the locked rows, %d in the database (%v against %v)", m.UUID, m.StepCounts[s], s, d.StepCounts[s], m.StepCounts, d.StepCounts)
			}
		}
		if memMoved != dbMoved {
			fail("task %s: %d steps in worker-moved states from the locked rows, %d in the database (%v against %v)", m.UUID, memMoved, dbMoved, m.StepCounts, d.StepCounts)
		}
	}
}

func compareSteps(fail func(string, ...any), mem, db []store.DomainEventStep) {
	byID := indexDB(fail, "steps", mem, db, func(d store.DomainEventStep) uuid.UUID { return d.UUID })
	for _, m := range mem {
		d, ok := byID[m.UUID]
		if !ok {
			fail("step %s: not in the database's answer", m.UUID)
			continue
		}
		timeEq := func(a, b *time.Time) bool { return a == nil && b == nil || a != nil && b != nil && a.Equal(*b) }
		if m.TaskUUID != d.TaskUUID || m.Name != d.Name || m.Handler != d.Handler || m.State != d.State ||
			m.Position != d.Position || m.Attempts != d.Attempts || m.MaxAttempts != d.MaxAttempts || !timeEq(m.NextAttemptAt, d.NextAttemptAt) {
			fail("step %s differs:\n locked rows %+v\n database    %+v", m.UUID, m, d)
		}
		// The columns payloads show: a completed step's result, a failed
		// one's error.
		if m.State == string(lifecycle.StepComplete) && string(m.Results) != string(d.Results) {
			fail("step %s (%s): result %s from the locked rows, %s in the database", m.Name, m.State, m.Results, d.Results)
		}
		if m.State != string(lifecycle.StepComplete) && string(m.LastError) != string(d.LastError) {
			fail("step %s (%s): error %s from the locked rows, %s in the database", m.Name, m.State, m.LastError, d.LastError)
		}
	}
}
