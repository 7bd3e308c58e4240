package orchestration_test

import (
	"context"
	"encoding/json"
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
	"github.com/tasker/tasker/internal/wait"
	"github.com/tasker/tasker/worker"
)

// ledger records every handler execution, to prove each step ran exactly
// once (or as many times as it was meant to).
type ledger struct {
	mu   sync.Mutex
	runs map[string]int // task_uuid/step_name -> executions
}

func newLedger() *ledger { return &ledger{runs: map[string]int{}} }

func (l *ledger) record(s *worker.Step) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs[s.TaskUUID.String()+"/"+s.Name]++
}

func (l *ledger) count(task uuid.UUID, step string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.runs[task.String()+"/"+step]
}

// echo returns a handler that records the run and returns the step name and
// the sum of its parents' "n" plus one, so children can check they saw their
// parents' results.
func echo(l *ledger) worker.Handler {
	return func(ctx context.Context, s *worker.Step) (any, error) {
		l.record(s)
		n := 1
		for name := range s.DependencyResults {
			var r struct {
				N int `json:"n"`
			}
			if err := s.DependencyResult(name, &r); err != nil {
				return nil, worker.Permanent(err)
			}
			if r.N == 0 {
				return nil, worker.Permanent(fmt.Errorf("parent %s has no result", name))
			}
			n += r.N
		}
		return map[string]any{"step": s.Name, "n": n}, nil
	}
}

func linearTemplate(ns string) string {
	return fmt.Sprintf(`
namespace: %s
name: linear
version: 1.0.0
steps:
  - name: first
    handler: t.echo
  - name: second
    handler: t.echo
    depends_on: [first]
  - name: third
    handler: t.echo
    depends_on: [second]
`, ns)
}

func fanTemplate(ns string, width int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "namespace: %s\nname: fan\nversion: 1.0.0\nsteps:\n  - name: root\n    handler: t.echo\n", ns)
	var mids []string
	for i := 0; i < width; i++ {
		name := fmt.Sprintf("mid_%02d", i)
		mids = append(mids, name)
		fmt.Fprintf(&b, "  - name: %s\n    handler: t.echo\n    depends_on: [root]\n", name)
	}
	fmt.Fprintf(&b, "  - name: join\n    handler: t.echo\n    depends_on: [%s]\n", strings.Join(mids, ", "))
	return b.String()
}

func stepResult(t *testing.T, h *enginetest.Harness, task uuid.UUID, name string) map[string]any {
	t.Helper()
	steps, err := h.Store.TaskSteps(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if s.Name == name {
			var m map[string]any
			if err := json.Unmarshal(s.Results, &m); err != nil {
				t.Fatalf("step %s results %s: %v", name, s.Results, err)
			}
			return m
		}
	}
	t.Fatalf("no step %s", name)
	return nil
}

// assertTransitionsOnce checks from the transition table that every step
// of the task was claimed exactly `claims` times and completed exactly once.
func assertTransitionsOnce(t *testing.T, h *enginetest.Harness, task uuid.UUID) {
	t.Helper()
	rows, err := h.Pool.Query(context.Background(), `
		SELECT s.name,
		       count(*) FILTER (WHERE tr.to_state = 'in_progress'),
		       count(*) FILTER (WHERE tr.to_state = 'complete')
		  FROM tasker.workflow_steps s
		  JOIN tasker.workflow_step_transitions tr ON tr.step_uuid = s.step_uuid
		 WHERE s.task_uuid = $1
		 GROUP BY s.name`, task)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var claimed, completed int
		if err := rows.Scan(&name, &claimed, &completed); err != nil {
			t.Fatal(err)
		}
		if claimed != 1 || completed != 1 {
			t.Errorf("step %s: claimed %d times, completed %d times; want 1 and 1", name, claimed, completed)
		}
	}
}

func TestWorkflowShapesCompleteWithEveryStepOnce(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		template string
		tplName  string
		last     string
		wantN    float64 // the last step's n: 1 + sum of parents' n
	}{
		{"linear", linearTemplate("shapes_linear"), "linear", "third", 3},
		{"diamond", `
namespace: shapes_diamond
name: diamond
version: 1.0.0
steps:
  - {name: top, handler: t.echo}
  - {name: left, handler: t.echo, depends_on: [top]}
  - {name: right, handler: t.echo, depends_on: [top]}
  - {name: bottom, handler: t.echo, depends_on: [left, right]}
`, "diamond", "bottom", 5},
		{"fan_out_fan_in_20", fanTemplate("shapes_fan", 20), "fan", "join", 41},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := enginetest.New(t, enginetest.Options{})
			tpl := h.Register(tc.template)
			l := newLedger()
			h.Worker(worker.Config{Namespaces: []string{tpl.Namespace}, Concurrency: 8}, map[string]worker.Handler{"t.echo": echo(l)})
			var ids []uuid.UUID
			for i := 0; i < 3; i++ {
				task := h.Submit(orchestration.TaskRequest{Namespace: tpl.Namespace, Name: tc.tplName, Context: json.RawMessage(`{"i":` + fmt.Sprint(i) + `}`)})
				ids = append(ids, task.UUID)
			}
			for _, id := range ids {
				h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
				for _, s := range tpl.Steps {
					if n := l.count(id, s.Name); n != 1 {
						t.Errorf("task %s step %s ran %d times, want 1", id, s.Name, n)
					}
				}
				if got := stepResult(t, h, id, tc.last)["n"]; got != tc.wantN {
					t.Errorf("last step n = %v, want %v (children must see their parents' results)", got, tc.wantN)
				}
				assertTransitionsOnce(t, h, id)
			}
		})
	}
}

func TestRetryThenSuccessObservesBackoff(t *testing.T) {
	t.Parallel()
	// Jitter pinned to the bottom of the window: each retry waits exactly
	// half of min(cap, base*2^(n-1)).
	h := enginetest.New(t, enginetest.Options{EngineOptions: []orchestration.EngineOption{orchestration.WithJitter(func() float64 { return 0 })}})
	h.Register(`
namespace: retries
name: flaky
version: 1.0.0
steps:
  - name: flaky
    handler: t.flaky
    retry: {max_attempts: 3, backoff: {base_ms: 400, cap_ms: 10000}}
`)
	var mu sync.Mutex
	var starts []time.Time
	h.Worker(worker.Config{Namespaces: []string{"retries"}}, map[string]worker.Handler{
		"t.flaky": func(ctx context.Context, s *worker.Step) (any, error) {
			mu.Lock()
			starts = append(starts, time.Now())
			mu.Unlock()
			if s.Attempt < 3 {
				return nil, fmt.Errorf("transient failure on attempt %d", s.Attempt)
			}
			return map[string]int{"attempt": s.Attempt}, nil
		},
	})
	task := h.Submit(orchestration.TaskRequest{Namespace: "retries", Name: "flaky"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
	if got := stepResult(t, h, task.UUID, "flaky")["attempt"]; got != float64(3) {
		t.Fatalf("completed on attempt %v, want 3", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(starts) != 3 {
		t.Fatalf("handler ran %d times, want 3", len(starts))
	}
	// Backoff after attempt 1: 200ms (half of 400); after attempt 2: 400ms.
	for i, min := range []time.Duration{200 * time.Millisecond, 400 * time.Millisecond} {
		if gap := starts[i+1].Sub(starts[i]); gap < min {
			t.Errorf("attempt %d started %v after attempt %d; backoff is at least %v", i+2, gap, i+1, min)
		}
	}
}

func TestPermanentErrorFailsTaskWithMessage(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(linearTemplate("permanent"))
	l := newLedger()
	h.Worker(workerConfig("permanent"), failingSecond(l))
	task := h.Submit(orchestration.TaskRequest{Namespace: "permanent", Name: "linear"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskError)
	steps, err := h.Store.TaskSteps(context.Background(), task.UUID)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]lifecycle.StepState{}
	for _, s := range steps {
		states[s.Name] = s.State
		if s.Name == "second" {
			if !strings.Contains(string(s.LastError), "card declined") {
				t.Errorf("last_error = %s, want the handler's message", s.LastError)
			}
			if s.Attempts != 1 {
				t.Errorf("a permanent error was retried: %d attempts", s.Attempts)
			}
		}
	}
	want := map[string]lifecycle.StepState{"first": lifecycle.StepComplete, "second": lifecycle.StepError, "third": lifecycle.StepPending}
	for k, v := range want {
		if states[k] != v {
			t.Errorf("step %s is %s, want %s", k, states[k], v)
		}
	}
	if l.count(task.UUID, "third") != 0 {
		t.Error("a step after a permanent failure ran")
	}
}

func workerConfig(ns string) worker.Config { return worker.Config{Namespaces: []string{ns}} }

// failingSecond fails the step named "second" permanently.
func failingSecond(l *ledger) map[string]worker.Handler {
	return map[string]worker.Handler{
		"t.echo": func(ctx context.Context, s *worker.Step) (any, error) {
			if s.Name == "second" {
				l.record(s)
				return nil, worker.Permanent(errors.New("card declined: insufficient funds"))
			}
			return echo(l)(ctx, s)
		},
	}
}

func TestCancelStopsDispatchAndCancelsSteps(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{})
	h.Register(linearTemplate("cancels"))
	started := make(chan struct{}, 1)
	var ranAfter atomic.Int32
	h.Worker(worker.Config{Namespaces: []string{"cancels"}, LeaseDuration: 3 * time.Second}, map[string]worker.Handler{
		"t.echo": func(ctx context.Context, s *worker.Step) (any, error) {
			if s.Name != "first" {
				ranAfter.Add(1)
				return map[string]int{"n": 1}, nil
			}
			started <- struct{}{}
			<-ctx.Done() // runs until the cancellation reaches it via heartbeat
			return nil, ctx.Err()
		},
	})
	task := h.Submit(orchestration.TaskRequest{Namespace: "cancels", Name: "linear"})
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("first step never started")
	}
	got, err := h.Engine.CancelTask(context.Background(), task.UUID, "customer withdrew")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != lifecycle.TaskCancelled {
		t.Fatalf("task is %s, want cancelled", got.State)
	}
	steps, _ := h.Store.TaskSteps(context.Background(), task.UUID)
	for _, s := range steps {
		if s.State != lifecycle.StepCancelled {
			t.Errorf("step %s is %s, want cancelled", s.Name, s.State)
		}
	}
	if _, err := h.Engine.CancelTask(context.Background(), task.UUID, "again"); !errors.Is(err, orchestration.ErrWrongState) {
		t.Errorf("second cancel: %v, want ErrWrongState", err)
	}
	// The running handler is stopped by its next heartbeat (lease/3 = 1s);
	// its late result must change nothing and nothing else may run.
	enginetest.Eventually(t, 10*time.Second, "running step abandoned", func() bool {
		var n int
		_ = h.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pgmq.q_worker_cancels_queue`).Scan(&n)
		return n == 0
	})
	final := h.WaitTask(task.UUID, time.Second, lifecycle.TaskCancelled)
	if final.State != lifecycle.TaskCancelled || ranAfter.Load() != 0 {
		t.Errorf("after cancel: task %s, %d later steps ran", final.State, ranAfter.Load())
	}
}

func TestInvalidRequestsChangeNothing(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(`
namespace: invalids
name: typed
version: 1.0.0
context_schema:
  type: object
  required: [order_id]
  properties:
    order_id: {type: integer}
steps:
  - {name: only, handler: t.echo}
`)
	cases := []struct {
		req       orchestration.TaskRequest
		wantField string
		wantErr   error
		wantText  string
	}{
		{orchestration.TaskRequest{Name: "typed"}, "namespace", orchestration.ErrInvalid, "required"},
		{orchestration.TaskRequest{Namespace: "Bad-NS", Name: "typed"}, "namespace", orchestration.ErrInvalid, "Bad-NS"},
		{orchestration.TaskRequest{Namespace: "invalids"}, "name", orchestration.ErrInvalid, "required"},
		{orchestration.TaskRequest{Namespace: "nowhere", Name: "typed"}, "", orchestration.ErrUnknownTarget, "nowhere"},
		{orchestration.TaskRequest{Namespace: "invalids", Name: "missing"}, "", orchestration.ErrUnknownTarget, "invalids/missing"},
		{orchestration.TaskRequest{Namespace: "invalids", Name: "typed", Context: json.RawMessage(`[1,2]`)}, "context", orchestration.ErrInvalid, "object"},
		{orchestration.TaskRequest{Namespace: "invalids", Name: "typed", Context: json.RawMessage(`{}`)}, "context", orchestration.ErrInvalid, "order_id"},
		{orchestration.TaskRequest{Namespace: "invalids", Name: "typed", Context: json.RawMessage(`{"order_id":"x"}`)}, "context", orchestration.ErrInvalid, "order_id"},
		{orchestration.TaskRequest{Namespace: "invalids", Name: "typed", Tags: make([]string, 40)}, "tags", orchestration.ErrInvalid, "limit"},
		{orchestration.TaskRequest{Namespace: "invalids", Name: "typed", Priority: 5000}, "priority", orchestration.ErrInvalid, "between"},
		// Postgres stores no NUL character: refused up front, not as a
		// database error (and never failing the other tasks of a batch).
		{orchestration.TaskRequest{Namespace: "invalids", Name: "typed", Context: json.RawMessage(`{"order_id":1,"note":"a\u0000b"}`)}, "context", orchestration.ErrInvalid, `\u0000`},
		{orchestration.TaskRequest{Namespace: "invalids", Name: "typed", Tags: []string{"ok", "a\x00b"}}, "tags[1]", orchestration.ErrInvalid, "NUL"},
		{orchestration.TaskRequest{Namespace: "invalids", Name: "typed", Reason: "why\x00"}, "reason", orchestration.ErrInvalid, "NUL"},
	}
	for _, tc := range cases {
		_, _, err := h.Engine.CreateTask(context.Background(), tc.req)
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("%+v: error %v, want %v", tc.req, err, tc.wantErr)
			continue
		}
		var fe *orchestration.FieldError
		if tc.wantField != "" && (!errors.As(err, &fe) || fe.Field != tc.wantField) {
			t.Errorf("%+v: error %v does not name field %s", tc.req, err, tc.wantField)
		}
		if !strings.Contains(err.Error(), tc.wantText) {
			t.Errorf("%+v: error %q does not mention %q", tc.req, err, tc.wantText)
		}
	}
	var n int
	if err := h.Pool.QueryRow(context.Background(), `SELECT count(*) FROM tasker.tasks`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d tasks exist after only invalid requests", n)
	}
}

func TestIdempotencyKeyReturnsExistingTask(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(linearTemplate("idem"))
	req := orchestration.TaskRequest{Namespace: "idem", Name: "linear", IdempotencyKey: "order-42"}
	a, created, err := h.Engine.CreateTask(context.Background(), req)
	if err != nil || !created {
		t.Fatalf("first: %v created=%v", err, created)
	}
	b, created, err := h.Engine.CreateTask(context.Background(), req)
	if err != nil || created {
		t.Fatalf("second: %v created=%v", err, created)
	}
	if a.UUID != b.UUID {
		t.Fatalf("duplicate submission created task %s besides %s", b.UUID, a.UUID)
	}
	c, created, err := h.Engine.CreateTask(context.Background(), orchestration.TaskRequest{Namespace: "idem", Name: "linear"})
	if err != nil || !created || c.UUID == a.UUID {
		t.Fatalf("a request without a key must create a new task: %v %v", err, created)
	}
}

// Several result loops in one process: with batches of two, the loops hold
// results of the same fan-out task at once, so one waits for the other's
// lock on the task; every step still runs and completes once, and the
// join sees every parent's result.
func TestResultLoopsSideBySide(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{Service: orchestration.ServiceConfig{ResultLoops: 4, BatchSize: 2}})
	tpl := h.Register(fanTemplate("loops_fan", 20))
	l := newLedger()
	h.Worker(worker.Config{Namespaces: []string{tpl.Namespace}, Concurrency: 16}, map[string]worker.Handler{"t.echo": echo(l)})
	var ids []uuid.UUID
	for i := 0; i < 4; i++ {
		ids = append(ids, h.Submit(orchestration.TaskRequest{Namespace: tpl.Namespace, Name: "fan", Context: json.RawMessage(`{"i":` + fmt.Sprint(i) + `}`)}).UUID)
	}
	for _, id := range ids {
		h.WaitTask(id, 60*time.Second, lifecycle.TaskComplete)
		for _, s := range tpl.Steps {
			if n := l.count(id, s.Name); n != 1 {
				t.Errorf("task %s step %s ran %d times, want 1", id, s.Name, n)
			}
		}
		if got := stepResult(t, h, id, "join")["n"]; got != float64(41) {
			t.Errorf("join n = %v, want 41", got)
		}
		assertTransitionsOnce(t, h, id)
	}
}

// At low load the helper result loops stay idle: with each notice read
// alone (the batch never fills), the first loop takes every one and the
// helpers make no read at all.
func TestHelperResultLoopsIdleAtLowLoad(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{Service: orchestration.ServiceConfig{ResultLoops: 3, BatchSize: 50}})
	tpl := h.Register(linearTemplate("loops_idle"))
	l := newLedger()
	h.Worker(worker.Config{Namespaces: []string{tpl.Namespace}}, map[string]worker.Handler{"t.echo": echo(l)})
	for i := 0; i < 4; i++ {
		task := h.Submit(orchestration.TaskRequest{Namespace: tpl.Namespace, Name: "linear"})
		h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
		assertTransitionsOnce(t, h, task.UUID)
	}
	if n := h.Orch.HelperReads(); n != 0 {
		t.Errorf("helper result loops made %d reads at one notice at a time, want 0", n)
	}
}

// Under a backlog the helper result loops join: with notices waiting when
// the loops start, the first loop's read comes back full and calls a
// helper in; every task still completes with every step run and applied
// once.
func TestHelperResultLoopsJoinUnderBacklog(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	tpl := h.Register(linearTemplate("loops_backlog"))
	l := newLedger()
	h.Worker(worker.Config{Namespaces: []string{tpl.Namespace}, Concurrency: 8}, map[string]worker.Handler{"t.echo": echo(l)})
	const tasks = 12
	var ids []uuid.UUID
	for i := 0; i < tasks; i++ {
		ids = append(ids, h.Submit(orchestration.TaskRequest{Namespace: tpl.Namespace, Name: "linear",
			Context: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}).UUID)
	}
	// The first steps run and their notices wait: no loop reads them yet.
	ctx := context.Background()
	var waiting int
	if err := wait.Poll(time.Now().Add(30*time.Second), 20*time.Millisecond, func() (bool, error) {
		err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.q_orchestration_step_results`).Scan(&waiting)
		return waiting == tasks, err
	}); err != nil {
		t.Fatalf("%d result notices waiting, want %d: %v", waiting, tasks, err)
	}
	o := orchestration.NewOrchestrator(h.Engine, orchestration.ServiceConfig{ResultLoops: 3, BatchSize: 2,
		PollInterval: 100 * time.Millisecond, TimerInterval: 100 * time.Millisecond}, nil, nil, h.Logger)
	if err := o.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer o.Stop()
	for _, id := range ids {
		h.WaitTask(id, 60*time.Second, lifecycle.TaskComplete)
		for _, s := range []string{"first", "second", "third"} {
			if n := l.count(id, s); n != 1 {
				t.Errorf("task %s step %s ran %d times, want 1", id, s, n)
			}
		}
		assertTransitionsOnce(t, h, id)
	}
	if n := o.HelperReads(); n == 0 {
		t.Error("no helper result loop read while 12 notices waited for batches of 2")
	}
}
