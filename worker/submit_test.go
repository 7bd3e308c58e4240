package worker_test

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
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/wait"
	"github.com/tasker/tasker/worker"
)

// submitCall is one submission statement the worker sent.
type submitCall struct {
	batch bool // tasker.step_submit_results, else tasker.step_submit_result
	steps int
	code  string // SQLSTATE of its error; "" when it succeeded
}

// submitTracer records the worker's submission statements as they go over
// the wire (a pgx query tracer on the worker's own pool). onSubmit, when
// set, runs before each of them.
type submitTracer struct {
	mu       sync.Mutex
	calls    []*submitCall
	onSubmit func()
}

type callKey struct{}

func (tr *submitTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	var c *submitCall
	switch {
	case strings.Contains(d.SQL, "tasker.step_submit_results("):
		ids, _ := d.Args[0].([]uuid.UUID)
		c = &submitCall{batch: true, steps: len(ids)}
	case strings.Contains(d.SQL, "tasker.step_submit_result("):
		c = &submitCall{steps: 1}
	default:
		return ctx
	}
	if tr.onSubmit != nil {
		tr.onSubmit()
	}
	tr.mu.Lock()
	tr.calls = append(tr.calls, c)
	tr.mu.Unlock()
	return context.WithValue(ctx, callKey{}, c)
}

func (tr *submitTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryEndData) {
	c, ok := ctx.Value(callKey{}).(*submitCall)
	if !ok || d.Err == nil {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var pgErr *pgconn.PgError
	if errors.As(d.Err, &pgErr) {
		c.code = pgErr.Code
	} else {
		c.code = d.Err.Error()
	}
}

// holdFirst makes the first submission call wait until n more results wait
// for the submitter, so that those form the next batch. release is closed
// when that first call starts.
func (tr *submitTracer) holdFirst(t *testing.T, w *atomic.Pointer[worker.Worker], n int) (release <-chan struct{}) {
	ch := make(chan struct{})
	var once sync.Once
	tr.onSubmit = func() {
		once.Do(func() {
			close(ch)
			err := wait.Poll(time.Now().Add(20*time.Second), 5*time.Millisecond, func() (bool, error) {
				return worker.QueuedSubmissions(w.Load()) == n, nil
			})
			if err != nil {
				t.Errorf("%d results did not reach the submitter: %v", n, err)
			}
		})
	}
	return ch
}

func (tr *submitTracer) snapshot() []submitCall {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := make([]submitCall, len(tr.calls))
	for i, c := range tr.calls {
		out[i] = *c
	}
	return out
}

// tracedPool opens a pool on the harness's database whose submission
// statements tr records.
func tracedPool(t *testing.T, h *enginetest.Harness, tr *submitTracer) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(h.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// outcomeObserver counts, per step, the submissions begun and the outcomes
// the worker reported.
type outcomeObserver struct {
	mu       sync.Mutex
	submits  map[uuid.UUID]int
	outcomes map[uuid.UUID][]worker.Outcome
}

func newOutcomeObserver() *outcomeObserver {
	return &outcomeObserver{submits: map[uuid.UUID]int{}, outcomes: map[uuid.UUID][]worker.Outcome{}}
}

func (o *outcomeObserver) StepClaimed(ctx context.Context, s *worker.Step) (context.Context, worker.StepSpan) {
	return ctx, &outcomeSpan{o: o, step: s.StepUUID, tp: s.TraceParent}
}

func (o *outcomeObserver) count(outcome worker.Outcome) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for id, outs := range o.outcomes {
		if o.submits[id] != 1 || len(outs) != 1 {
			return -1 // a step reported twice, or ended without a submission
		}
		if outs[0] == outcome {
			n++
		}
	}
	return n
}

type outcomeSpan struct {
	o    *outcomeObserver
	step uuid.UUID
	tp   string
}

func (s *outcomeSpan) BeforeHandle(ctx context.Context) context.Context { return ctx }
func (s *outcomeSpan) BeforeSubmit(ctx context.Context) context.Context {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	s.o.submits[s.step]++
	return ctx
}
func (s *outcomeSpan) TraceParent() string { return s.tp }
func (s *outcomeSpan) End(outcome worker.Outcome, _ time.Duration, _ error) {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	s.o.outcomes[s.step] = append(s.o.outcomes[s.step], outcome)
}

// barrier is released when n handlers have arrived.
type barrier struct {
	n       int32
	arrived atomic.Int32
	all     chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: int32(n), all: make(chan struct{})} }

func (b *barrier) wait(ctx context.Context) error {
	if b.arrived.Add(1) == b.n {
		close(b.all)
	}
	select {
	case <-b.all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func submitN(h *enginetest.Harness, ns, name string, n int, taskCtx string) []uuid.UUID {
	var ids []uuid.UUID
	for range n {
		ids = append(ids, h.Submit(orchestration.TaskRequest{Namespace: ns, Name: name, Context: json.RawMessage(taskCtx)}).UUID)
	}
	return ids
}

func stepStates(t *testing.T, h *enginetest.Harness, ns string) map[string]int {
	t.Helper()
	rows, err := h.Pool.Query(context.Background(), `SELECT ws.state, count(*) FROM tasker.workflow_steps ws
		JOIN tasker.tasks t USING (task_uuid) WHERE t.namespace = $1 GROUP BY ws.state`, ns)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	var state string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error { out[state] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestConcurrentStepsShareSubmitTransactions: steps that finish together
// are submitted together. The database's own function statistics count the
// transactions: fewer than the steps, and every step is applied once.
func TestConcurrentStepsShareSubmitTransactions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const ns, n = "sharedsubmit", 40
	h := setup(t, ns, 30, 1)
	// Count calls of the protocol functions in the worker's sessions (they
	// are opened after this).
	var db string
	if err := h.Pool.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Pool.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{db}.Sanitize()+` SET track_functions = 'pl'`); err != nil {
		t.Fatal(err)
	}
	tr := &submitTracer{}
	pool := tracedPool(t, h, tr)
	obs := newOutcomeObserver()
	w, err := worker.New(pool, worker.Config{Namespaces: []string{ns}, Concurrency: n, PollInterval: 200 * time.Millisecond,
		Logger: h.Logger, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	all := newBarrier(n)
	w.Handle("t.only", func(ctx context.Context, s *worker.Step) (any, error) {
		// Finish together, as a busy worker's steps do.
		if err := all.wait(ctx); err != nil {
			return nil, err
		}
		return map[string]string{"step": s.StepUUID.String()}, nil
	})
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	tasks := submitN(h, ns, "one", n, `{}`)
	for _, id := range tasks {
		h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
	}
	w.Stop()
	pool.Close() // a backend flushes its function statistics when it ends
	// Every step's handler and submission is over: the counts that decide
	// whether to wait for more results or slots are back to zero.
	if running, finishing := worker.StepCounts(w); running != 0 || finishing != 0 {
		t.Errorf("after Stop: %d steps counted running and %d finishing, want 0 and 0", running, finishing)
	}

	calls := tr.snapshot()
	batches, singles, steps := 0, 0, 0
	for _, c := range calls {
		if c.code != "" {
			t.Errorf("submission call failed: %+v", c)
			continue
		}
		if c.batch {
			batches++
		} else {
			singles++
		}
		steps += c.steps
	}
	t.Logf("%d steps submitted in %d transactions (%d batches)", steps, batches+singles, batches)
	if steps != n || batches == 0 || batches+singles >= n {
		t.Errorf("%d steps submitted in %d step_submit_results and %d step_submit_result calls; want %d steps in fewer calls",
			steps, batches, singles, n)
	}
	if got := obs.count("success"); got != n {
		t.Errorf("%d steps reported a success to the observer once each, want %d", got, n)
	}
	// The server's count of the calls agrees with what went over the wire.
	var serverBatches, serverSingles int64
	err = wait.Poll(time.Now().Add(15*time.Second), 50*time.Millisecond, func() (bool, error) {
		err := h.Pool.QueryRow(ctx, `SELECT coalesce(sum(calls) FILTER (WHERE funcname = 'step_submit_results'), 0),
			       coalesce(sum(calls) FILTER (WHERE funcname = 'step_submit_result'), 0)
			  FROM pg_stat_user_functions WHERE schemaname = 'tasker'`).Scan(&serverBatches, &serverSingles)
		return serverBatches == int64(batches) && serverSingles == int64(singles), err
	})
	if err != nil {
		t.Errorf("pg_stat_user_functions: %d step_submit_results and %d step_submit_result calls, want %d and %d (%v)",
			serverBatches, serverSingles, batches, singles, err)
	}
	// Each step's result was applied once.
	var transitions int
	if err := h.Pool.QueryRow(ctx, `SELECT count(*) FROM tasker.workflow_step_transitions st JOIN tasker.tasks t USING (task_uuid)
		WHERE t.namespace = $1 AND st.from_state = 'in_progress' AND st.to_state = 'enqueued_for_orchestration'`, ns).Scan(&transitions); err != nil {
		t.Fatal(err)
	}
	if transitions != n {
		t.Errorf("%d submit transitions for %d steps", transitions, n)
	}
}

// TestStopFlushesSubmissions: results of steps that finish while the worker
// stops are stored before Stop returns.
func TestStopFlushesSubmissions(t *testing.T) {
	t.Parallel()
	const ns, n = "stopflush", 20
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true}) // steps stay where the worker leaves them
	h.Register(fmt.Sprintf(oneStep, ns, 30, 1))
	obs := newOutcomeObserver()
	all := newBarrier(n)
	w := h.Worker(worker.Config{Namespaces: []string{ns}, Concurrency: n, ShutdownTimeout: 20 * time.Second, Observer: obs},
		map[string]worker.Handler{
			"t.only": func(ctx context.Context, s *worker.Step) (any, error) {
				if err := all.wait(ctx); err != nil {
					return nil, err
				}
				time.Sleep(300 * time.Millisecond) // work that outlasts the call to Stop
				return "done", nil
			},
		})
	submitN(h, ns, "one", n, `{}`)
	select {
	case <-all.all:
	case <-time.After(20 * time.Second):
		t.Fatal("the steps did not all start")
	}
	w.Stop()

	// No waiting from here on: Stop has returned.
	if got := stepStates(t, h, ns); got[string(lifecycle.StepEnqueuedForOrchestration)] != n {
		t.Errorf("after Stop the steps are %v, want all %d %s", got, n, lifecycle.StepEnqueuedForOrchestration)
	}
	if m, err := queue.QueueMetrics(context.Background(), h.Pool, queue.StepResultsQueue); err != nil || m.Length != n {
		t.Errorf("after Stop %d result notices (%v), want %d", m.Length, err, n)
	}
	q, _ := queue.WorkerQueue(ns)
	if m, err := queue.QueueMetrics(context.Background(), h.Pool, q); err != nil || m.Length != 0 {
		t.Errorf("after Stop %d step messages left (%v), want 0", m.Length, err)
	}
	if got := obs.count("success"); got != n {
		t.Errorf("after Stop %d steps reported a success once each, want %d", got, n)
	}
}

// TestBadResultDoesNotHoldUpItsBatch: a result the database refuses makes
// its whole batch fail; the other results of the batch are then stored one
// by one, and the bad one is given up at once instead of retried until its
// lease ends. (What jsonb cannot hold the SDK refuses before it submits; a
// trigger of this test's database stands for a refusal it cannot foresee,
// such as a constraint an operator added.)
func TestBadResultDoesNotHoldUpItsBatch(t *testing.T) {
	t.Parallel()
	const ns, n = "badbatch", 6
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	if _, err := h.Pool.Exec(context.Background(), `
		CREATE FUNCTION tasker.test_refuse_result() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
		    RAISE EXCEPTION 'this result is refused by the test' USING ERRCODE = 'check_violation';
		END $$;
		CREATE TRIGGER test_refuse_result BEFORE UPDATE OF results ON tasker.workflow_steps
		   FOR EACH ROW WHEN (NEW.results ? 'refuse') EXECUTE FUNCTION tasker.test_refuse_result();`); err != nil {
		t.Fatal(err)
	}
	h.Register(fmt.Sprintf(oneStep, ns, 30, 1))
	h.Register(fmt.Sprintf(`
namespace: %s
name: warm
version: 1.0.0
steps:
  - name: first
    handler: t.warm
`, ns))

	// The first submission (the warm-up step's, alone) is held until the n
	// other results wait for the submitter, so that they form one batch.
	var w atomic.Pointer[worker.Worker]
	tr := &submitTracer{}
	firstBatch := tr.holdFirst(t, &w, n)
	obs := newOutcomeObserver()
	ww, err := worker.New(tracedPool(t, h, tr), worker.Config{Namespaces: []string{ns}, Concurrency: n + 1,
		LeaseDuration: 60 * time.Second, PollInterval: 200 * time.Millisecond, ShutdownTimeout: 20 * time.Second,
		Logger: h.Logger, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	w.Store(ww)
	ww.Handle("t.warm", func(ctx context.Context, s *worker.Step) (any, error) { return "warm", nil })
	ww.Handle("t.only", func(ctx context.Context, s *worker.Step) (any, error) {
		select {
		case <-firstBatch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		var c struct{ Bad bool }
		_ = s.DecodeContext(&c)
		if c.Bad {
			// The test's trigger refuses it: the whole batch fails.
			return map[string]bool{"refuse": true}, nil
		}
		return "ok", nil
	})
	submitN(h, ns, "warm", 1, `{}`)
	good := submitN(h, ns, "one", n-1, `{}`)
	bad := submitN(h, ns, "one", 1, `{"bad":true}`)[0]
	if err := ww.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ww.Stop)

	enginetest.Eventually(t, 20*time.Second, "every step submitted or given up", func() bool {
		return obs.count("success")+obs.count("lost") == n+1
	})
	start := time.Now()
	ww.Stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %s", d)
	}

	if got := obs.count("success"); got != n {
		t.Errorf("%d successes reported, want %d (the warm-up step and the good ones)", got, n)
	}
	for _, id := range good {
		steps, _ := h.Store.TaskSteps(context.Background(), id)
		if steps[0].State != lifecycle.StepEnqueuedForOrchestration {
			t.Errorf("a good step next to a bad one is %s", steps[0].State)
		}
	}
	steps, _ := h.Store.TaskSteps(context.Background(), bad)
	if steps[0].State != lifecycle.StepInProgress {
		t.Errorf("the step whose result cannot be stored is %s; want it left in_progress for its lease to expire", steps[0].State)
	}

	var failedBatch bool
	singles := 0
	for _, c := range tr.snapshot() {
		switch {
		case c.batch && c.steps == n && c.code == "23514":
			failedBatch = true
		case !c.batch:
			singles++
		}
	}
	// The warm-up step alone, the batch, then its results one by one.
	if !failedBatch || singles != n+1 {
		t.Errorf("submission calls %+v; want a batch of %d failing with 23514 (the trigger), then %d single calls", tr.snapshot(), n, n)
	}
}

// TestSubmitsOneByOneWithoutTheBatchFunction: against a database without
// tasker.step_submit_results (a schema older than the SDK), the worker
// notices once and submits every result with tasker.step_submit_result.
func TestSubmitsOneByOneWithoutTheBatchFunction(t *testing.T) {
	t.Parallel()
	const ns, n = "oldschema", 8
	h := setup(t, ns, 30, 1)
	if _, err := h.Pool.Exec(context.Background(), `DROP FUNCTION tasker.step_submit_results`); err != nil {
		t.Fatal(err)
	}
	// One step finishes first; its submission is held until the others'
	// results wait, so that they form a batch.
	var wp atomic.Pointer[worker.Worker]
	tr := &submitTracer{}
	release := tr.holdFirst(t, &wp, n-1)
	var first atomic.Bool
	w, err := worker.New(tracedPool(t, h, tr), worker.Config{Namespaces: []string{ns}, Concurrency: n,
		PollInterval: 200 * time.Millisecond, Logger: h.Logger})
	if err != nil {
		t.Fatal(err)
	}
	wp.Store(w)
	w.Handle("t.only", func(ctx context.Context, s *worker.Step) (any, error) {
		if first.CompareAndSwap(false, true) {
			return "ok", nil
		}
		select {
		case <-release:
			return "ok", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	for _, id := range submitN(h, ns, "one", n, `{}`) {
		h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
	}
	// Once noticed, the worker does not try again.
	for _, id := range submitN(h, ns, "one", n, `{}`) {
		h.WaitTask(id, 30*time.Second, lifecycle.TaskComplete)
	}
	w.Stop()
	batches, singles := 0, 0
	for _, c := range tr.snapshot() {
		if c.batch {
			batches++
			if c.code != "42883" {
				t.Errorf("batch call %+v, want undefined_function", c)
			}
		} else if c.code == "" {
			singles++
		}
	}
	if batches != 1 || singles != 2*n {
		t.Errorf("%d batch calls and %d successful single calls, want 1 and %d", batches, singles, 2*n)
	}
}

// A result Postgres cannot store (a NUL character, a number beyond
// numeric's range) fails the step for good, with an error that says why,
// instead of a submission rejected on every attempt until the lease runs
// out; a NUL in an error message is replaced.
func TestUnstorableResultFailsTheStepPermanently(t *testing.T) {
	t.Parallel()
	const ns = "nulresult"
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(fmt.Sprintf(oneStep, ns, 30, 3))
	w := h.Worker(worker.Config{Namespaces: []string{ns}, Concurrency: 2},
		map[string]worker.Handler{
			"t.only": func(ctx context.Context, s *worker.Step) (any, error) {
				var c struct{ Err, Big bool }
				_ = s.DecodeContext(&c)
				if c.Err {
					return nil, worker.Permanent(errors.New("bad\x00byte"))
				}
				if c.Big {
					return map[string]json.RawMessage{"v": json.RawMessage(`1e1000000`)}, nil
				}
				return map[string]string{"v": "a\x00b"}, nil
			},
		})
	defer w.Stop()
	res := submitN(h, ns, "one", 1, `{}`)[0]
	errTask := submitN(h, ns, "one", 1, `{"err":true}`)[0]
	bigTask := submitN(h, ns, "one", 1, `{"big":true}`)[0]
	for id, want := range map[uuid.UUID]string{res: `\u0000`, errTask: "bad\uFFFDbyte", bigTask: "handler result contains a number that Postgres cannot store"} {
		var steps []store.Step
		enginetest.Eventually(t, 20*time.Second, "the step's failure stored", func() bool {
			steps, _ = h.Store.TaskSteps(context.Background(), id)
			return len(steps) == 1 && steps[0].State == lifecycle.StepEnqueuedAsErrorForOrchestration
		})
		var e struct {
			Message   string `json:"message"`
			Retryable bool   `json:"retryable"`
		}
		if err := json.Unmarshal(steps[0].LastError, &e); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(e.Message, want) || e.Retryable || steps[0].Attempts != 1 {
			t.Errorf("task %s: error %+v after %d attempts; want a permanent error containing %q on attempt 1", id, e, steps[0].Attempts, want)
		}
	}
}
