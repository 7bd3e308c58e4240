package orchestration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
)

// Concurrent submissions share creation transactions (a task's created_at is
// its transaction's start), one at a time unless one runs slow (then two),
// every one of them gets its own task, and concurrent submissions with one
// idempotency key get one task between them.
func TestConcurrentSubmissionsShareTransactions(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(linearTemplate("together"))
	ctx := context.Background()

	const n = 60
	ids, errs := submitBurst(ctx, h, n, func(i int) orchestration.TaskRequest {
		req := orchestration.TaskRequest{Namespace: "together", Name: "linear",
			Context: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
		if i%10 == 0 {
			req.IdempotencyKey = "same-key"
		}
		return req
	})
	var keyed uuid.UUID
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("submission %d: %v", i, errs[i])
		}
		if i%10 == 0 {
			if keyed == uuid.Nil {
				keyed = ids[i]
			} else if ids[i] != keyed {
				t.Errorf("submission %d with the shared key got task %s, another got %s", i, ids[i], keyed)
			}
		}
	}
	var tasks, txs, steps, enqueued int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT created_at) FROM tasker.tasks WHERE namespace = 'together'`).Scan(&tasks, &txs); err != nil {
		t.Fatal(err)
	}
	if err := h.Pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE s.state = 'enqueued')
		FROM tasker.workflow_steps s JOIN tasker.tasks t USING (task_uuid) WHERE t.namespace = 'together'`).Scan(&steps, &enqueued); err != nil {
		t.Fatal(err)
	}
	want := n - n/10 + 1
	if tasks != want {
		t.Fatalf("%d tasks, want %d (one for the shared key)", tasks, want)
	}
	if steps != 3*want || enqueued != want {
		t.Errorf("%d steps with %d enqueued; want %d with %d (each task's first step)", steps, enqueued, 3*want, want)
	}
	if txs >= tasks {
		t.Errorf("%d tasks were created in %d transactions: concurrent submissions did not share one", tasks, txs)
	}
	// At most two creation transactions run at once (the second only
	// beside a slow first), so that the submissions waiting meanwhile
	// gather in larger batches.
	if p := h.Engine.IntakePeak(); p < 1 || p > 2 {
		t.Errorf("%d creation transactions were in flight at once, want 1 or 2", p)
	}
	t.Logf("%d tasks created in %d transactions, at most %d at once", tasks, txs, h.Engine.IntakePeak())
	var msgs int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_worker_together_queue`).Scan(&msgs); err != nil {
		t.Fatal(err)
	}
	if msgs != want {
		t.Errorf("%d step messages, want %d", msgs, want)
	}
}

// A request that fails inside a shared creation transaction fails alone: the
// others are created in transactions of their own.
func TestFailedRequestInABatchFailsAlone(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(linearTemplate("alone"))
	ctx := context.Background()
	reqs := make([]orchestration.TaskRequest, 5)
	for i := range reqs {
		reqs[i] = orchestration.TaskRequest{Namespace: "alone", Name: "linear"}
	}
	tasks, errs := h.Engine.CreateTogether(ctx, reqs, 2)
	for i := range reqs {
		if i == 2 {
			if errs[i] == nil || !strings.Contains(errs[i].Error(), "alone/linear") {
				t.Errorf("the bad request: error %v, want one naming the template", errs[i])
			}
			continue
		}
		if errs[i] != nil || tasks[i].UUID == uuid.Nil {
			t.Errorf("request %d: task %s, error %v", i, tasks[i].UUID, errs[i])
		}
	}
	var n int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks WHERE namespace = 'alone' AND state = 'steps_in_process'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("%d tasks started, want the 4 good ones", n)
	}
}

// CreateTasks answers each request in its place: a bad request with its own
// error, two requests with one idempotency key with one task, and the valid
// ones created together in transactions of up to 100 tasks.
func TestCreateTasksAnswersEachRequest(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(linearTemplate("many"))
	ctx := context.Background()

	const n = 250
	reqs := make([]orchestration.TaskRequest, n)
	for i := range reqs {
		reqs[i] = orchestration.TaskRequest{Namespace: "many", Name: "linear",
			Context: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
	}
	reqs[7].Name = "no_such_template"
	reqs[120].Namespace = ""
	reqs[30].IdempotencyKey, reqs[230].IdempotencyKey = "twice", "twice"

	res := h.Engine.CreateTasks(ctx, reqs)
	if len(res) != n {
		t.Fatalf("%d results for %d requests", len(res), n)
	}
	if res[7].Err == nil || !errors.Is(res[7].Err, orchestration.ErrUnknownTarget) || !strings.Contains(res[7].Err.Error(), "no_such_template") {
		t.Errorf("request 7 (unknown template): %v, want ErrUnknownTarget naming it", res[7].Err)
	}
	var fe *orchestration.FieldError
	if !errors.As(res[120].Err, &fe) || fe.Field != "namespace" {
		t.Errorf("request 120 (no namespace): %v, want a FieldError on namespace", res[120].Err)
	}
	for i, r := range res {
		if i == 7 || i == 120 {
			continue
		}
		if r.Err != nil {
			t.Fatalf("request %d: %v", i, r.Err)
		}
		if i == 230 {
			if r.Created || r.Task.UUID != res[30].Task.UUID {
				t.Errorf("request 230 repeats 30's key: task %s created %v, want 30's %s, not created", r.Task.UUID, r.Created, res[30].Task.UUID)
			}
			continue
		}
		if !r.Created {
			t.Errorf("request %d: not created", i)
		}
		if want := fmt.Sprintf(`{"i":%d}`, i); strings.ReplaceAll(string(r.Task.Context), " ", "") != want {
			t.Errorf("request %d answered with the task of context %s, want %s", i, r.Task.Context, want)
		}
	}
	var tasks, txs int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT created_at) FROM tasker.tasks WHERE namespace = 'many'`).Scan(&tasks, &txs); err != nil {
		t.Fatal(err)
	}
	if tasks != n-3 {
		t.Errorf("%d tasks, want %d (two bad requests, one repeated key)", tasks, n-3)
	}
	if txs > 3 {
		t.Errorf("%d tasks were created in %d transactions, want at most 3 (100 per transaction)", tasks, txs)
	}
}

// With no slow transaction, the intake runs one creation transaction at a
// time: a burst of concurrent submissions goes in a few shared transactions,
// never two at once (the overlap is put off for the test's length).
func TestIntakeRunsOneCreationTransactionAtATime(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(linearTemplate("onebyone"))
	h.Engine.SetIntakeOverlapAfter(time.Hour)
	ctx := context.Background()
	const n = 60
	_, errs := submitBurst(ctx, h, n, func(i int) orchestration.TaskRequest {
		return orchestration.TaskRequest{Namespace: "onebyone", Name: "linear",
			Context: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("submission %d: %v", i, err)
		}
	}
	var tasks, txs int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT created_at) FROM tasker.tasks WHERE namespace = 'onebyone'`).Scan(&tasks, &txs); err != nil {
		t.Fatal(err)
	}
	if tasks != n || txs >= n {
		t.Errorf("%d tasks in %d transactions, want %d sharing fewer", tasks, txs, n)
	}
	if p := h.Engine.IntakePeak(); p != 1 {
		t.Errorf("%d creation transactions were in flight at once, want 1", p)
	}
	t.Logf("%d tasks created in %d transactions", tasks, txs)
}

// A creation transaction that hangs (here on a lock another session holds on
// its template's row) does not stop the intake: once it has run for the
// overlap time, a second transaction starts beside it and creates the
// requests that came in meanwhile.
func TestASlowCreationDoesNotStopTheIntake(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(linearTemplate("slowintake"))
	h.Register(linearTemplate("fastintake"))
	h.Engine.SetIntakeOverlapAfter(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Hold the slow template's row: the task insert's foreign-key check
	// (FOR KEY SHARE) waits for it.
	holder, err := h.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Rollback(context.Background()) }()
	if _, err := holder.Exec(ctx, `SELECT 1 FROM tasker.task_templates WHERE namespace = 'slowintake' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	slow := make(chan error, 1)
	go func() {
		_, _, err := h.Engine.CreateTask(ctx, orchestration.TaskRequest{Namespace: "slowintake", Name: "linear"})
		slow <- err
	}()
	enginetest.Eventually(t, 30*time.Second, "the slow creation waits on its template's row", func() bool {
		var waiting bool
		err := h.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO tasker.tasks%')`).Scan(&waiting)
		return err == nil && waiting
	})
	task, _, err := h.Engine.CreateTask(ctx, orchestration.TaskRequest{Namespace: "fastintake", Name: "linear"})
	if err != nil {
		t.Fatalf("a creation behind a hung one: %v", err)
	}
	select {
	case err := <-slow:
		t.Fatalf("the slow creation returned (%v) while its template's row was still held", err)
	default:
	}
	if p := h.Engine.IntakePeak(); p != 2 {
		t.Errorf("%d creation transactions were in flight at once, want 2 (the hung one and the one beside it)", p)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-slow; err != nil {
		t.Fatalf("the slow creation, once the row was free: %v", err)
	}
	var n int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM tasker.tasks WHERE task_uuid = $1 OR namespace = 'slowintake'`, task.UUID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("%d of the 2 tasks exist", n)
	}
}

// submitBurst submits n requests at once, from n goroutines released
// together, and returns each one's task and error.
func submitBurst(ctx context.Context, h *enginetest.Harness, n int, req func(i int) orchestration.TaskRequest) ([]uuid.UUID, []error) {
	ids := make([]uuid.UUID, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			task, _, err := h.Engine.CreateTask(ctx, req(i))
			ids[i], errs[i] = task.UUID, err
		}()
	}
	close(start)
	wg.Wait()
	return ids, errs
}
