package bench

// Benchmarks of the hot SQL paths, each on a fresh database with real data
// made by the engine itself. They set up b.N batches before the timer
// starts, so run them with a fixed count, for example
//
//	go test -run='^$' -bench=. -benchtime=20x ./internal/bench/
//
// (scripts/bench.sh does). Besides ns/op they report ns/step: the cost per
// step of a batch of n.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	internaldomainevents "github.com/tasker/tasker/internal/domainevents"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/testdb"
	"github.com/tasker/tasker/worker"
)

// batchSizes are the n of each benchmark: one step, and the orchestrator's
// and the workers' default batch.
var batchSizes = []int{1, 50}

const benchWorkerID = "bench-sql"

type fixture struct {
	b      *testing.B
	ctx    context.Context
	pool   *pgxpool.Pool
	store  *store.Store
	engine *orchestration.Engine
	sc     Scenario
	queue  string
	// pg reads the server's CPU time (nil when the server is not on this
	// machine); pgStart and goStart are the readings at startTimer.
	pg               *pgCPU
	pgStart, goStart float64
}

func newFixture(b *testing.B, scenario string) *fixture {
	b.Helper()
	f := &fixture{b: b, ctx: context.Background()}
	// Two pools on one database, configured as deployed: the worker
	// protocol's calls go through a worker's pool (binary uuids), the
	// engine through the orchestrator's (binary uuids, wake-ups after
	// commit).
	url := testdb.URL(b)
	f.pool = testdb.Pool(b, url, worker.ConfigurePool)
	f.store = store.New(testdb.Pool(b, url, store.WithNotifyAfterCommit, store.WithBinaryUUIDs))
	f.engine = orchestration.NewEngine(f.store, nil, quietLogger())
	var err error
	if f.sc, err = ScenarioByName(scenario); err != nil {
		b.Fatal(err)
	}
	tpl, err := f.sc.Template()
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := f.store.TemplateRegister(f.ctx, tpl); err != nil {
		b.Fatal(err)
	}
	f.queue, _ = queue.WorkerQueue(Namespace)
	if conn, err := f.pool.Acquire(f.ctx); err == nil {
		f.pg, _ = findPostgres(f.ctx, conn.Conn(), url)
		conn.Release()
	}
	return f
}

// startTimer starts the measured window: b's timer and the CPU readings.
func (f *fixture) startTimer() {
	f.b.ResetTimer()
	f.goStart = selfCPU()
	if f.pg != nil {
		f.pgStart, _ = f.pg.seconds()
	}
}

// stopTimer ends the measured window of b.N rounds of n steps and reports,
// per step, the wall time (ns/step), the server's CPU time (pg-µs/step, on
// a local server) and this process's (go-µs/step). On a shared machine the
// CPU times vary much less than the wall time: they do not count the time
// the work waited for a core.
func (f *fixture) stopTimer(n int) {
	f.b.StopTimer()
	steps := float64(f.b.N * n)
	goEnd := selfCPU()
	f.b.ReportMetric(float64(f.b.Elapsed().Nanoseconds())/steps, "ns/step")
	f.b.ReportMetric((goEnd-f.goStart)*1e6/steps, "go-µs/step")
	if f.pg != nil {
		if end, err := f.pg.seconds(); err == nil {
			f.b.ReportMetric((end-f.pgStart)*1e6/steps, "pg-µs/step")
		}
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// createTasks creates n tasks through the engine (each dispatches its first
// steps), eight at a time.
func (f *fixture) createTasks(n int) {
	f.b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if _, _, err := f.engine.CreateTask(f.ctx, orchestration.TaskRequest{Namespace: Namespace, Name: f.sc.Name,
					Context: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		f.b.Fatal(err)
	}
}

// stepMsg is a step message as a worker reads it.
type stepMsg struct {
	id      int64
	step    uuid.UUID
	attempt int32
}

// readSteps reads n step messages, hiding them long enough for the run.
func (f *fixture) readSteps(n int) []stepMsg {
	f.b.Helper()
	out := make([]stepMsg, 0, n)
	for len(out) < n {
		msgs, err := queue.Read(f.ctx, f.pool, f.queue, time.Hour, min(1000, n-len(out)))
		if err != nil {
			f.b.Fatal(err)
		}
		if len(msgs) == 0 {
			f.b.Fatalf("read %d of %d step messages", len(out), n)
		}
		for _, m := range msgs {
			var body struct {
				StepUUID uuid.UUID `json:"step_uuid"`
				Attempt  int32     `json:"attempt"`
			}
			if err := json.Unmarshal(m.Body, &body); err != nil {
				f.b.Fatal(err)
			}
			out = append(out, stepMsg{id: m.ID, step: body.StepUUID, attempt: body.Attempt})
		}
	}
	return out
}

// claim claims steps as the worker SDK does and returns how many it got.
func (f *fixture) claim(msgs []stepMsg) int {
	ids := make([]uuid.UUID, len(msgs))
	attempts := make([]int32, len(msgs))
	for i, m := range msgs {
		ids[i], attempts[i] = m.step, m.attempt
	}
	rows, err := f.pool.Query(f.ctx, `SELECT claimed, task_context, dependency_results
		FROM tasker.step_claim_batch($1::uuid[], $2::int[], $3::text, $4::int)`, ids, attempts, benchWorkerID, 300)
	if err != nil {
		f.b.Fatal(err)
	}
	defer rows.Close()
	claimed := 0
	for rows.Next() {
		var ok bool
		var taskCtx, deps []byte
		if err := rows.Scan(&ok, &taskCtx, &deps); err != nil {
			f.b.Fatal(err)
		}
		if ok {
			claimed++
		}
	}
	if err := rows.Err(); err != nil {
		f.b.Fatal(err)
	}
	return claimed
}

func (f *fixture) claimAll(msgs []stepMsg) {
	for i := 0; i < len(msgs); i += 50 {
		batch := msgs[i:min(i+50, len(msgs))]
		if got := f.claim(batch); got != len(batch) {
			f.b.Fatalf("claimed %d of %d steps", got, len(batch))
		}
	}
}

// submit posts a success as the worker SDK does.
func (f *fixture) submit(m stepMsg) {
	var accepted bool
	err := f.pool.QueryRow(f.ctx, `SELECT tasker.step_submit_result($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8::jsonb)`,
		m.step, m.attempt, benchWorkerID, true, `{"ok":true}`, nil, m.id,
		`{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`).Scan(&accepted)
	if err != nil {
		f.b.Fatal(err)
	}
	if !accepted {
		f.b.Fatalf("result for step %s refused", m.step)
	}
}

// BenchmarkStepClaimBatch: a worker claims n steps (tasker.step_claim_batch:
// the compare-and-swap, the transition rows, the task context and the
// dependency results).
func BenchmarkStepClaimBatch(b *testing.B) {
	for _, n := range batchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			f := newFixture(b, "single")
			f.createTasks(b.N * n)
			msgs := f.readSteps(b.N * n)
			b.ReportAllocs()
			f.startTimer()
			for i := 0; i < b.N; i++ {
				if got := f.claim(msgs[i*n : (i+1)*n]); got != n {
					b.Fatalf("claimed %d of %d", got, n)
				}
			}
			f.stopTimer(n)
		})
	}
}

// BenchmarkStepSubmitResult: a worker submits n results, one call each as
// the SDK does (tasker.step_submit_result: the compare-and-swap, the result,
// the transition row, the notice to orchestration_step_results and the
// deletion of the step message, in one transaction).
func BenchmarkStepSubmitResult(b *testing.B) {
	for _, n := range batchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			f := newFixture(b, "single")
			f.createTasks(b.N * n)
			msgs := f.readSteps(b.N * n)
			f.claimAll(msgs)
			b.ReportAllocs()
			f.startTimer()
			for i := 0; i < b.N*n; i++ {
				f.submit(msgs[i])
			}
			f.stopTimer(n)
		})
	}
}

// BenchmarkStepSubmitResults: a worker submits the results of n steps in one
// call of tasker.step_submit_results (what the Go SDK does with steps that
// finish together).
func BenchmarkStepSubmitResults(b *testing.B) {
	for _, n := range batchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			f := newFixture(b, "single")
			f.createTasks(b.N * n)
			msgs := f.readSteps(b.N * n)
			f.claimAll(msgs)
			const tp = `{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`
			b.ReportAllocs()
			f.startTimer()
			for i := 0; i < b.N; i++ {
				batch := msgs[i*n : (i+1)*n]
				steps := make([]uuid.UUID, n)
				attempts := make([]int32, n)
				success := make([]bool, n)
				results := make([]string, n)
				errs := make([]*string, n)
				ids := make([]int64, n)
				headers := make([]string, n)
				for k, m := range batch {
					steps[k], attempts[k], success[k], results[k], ids[k], headers[k] = m.step, m.attempt, true, `{"ok":true}`, m.id, tp
				}
				rows, err := f.pool.Query(f.ctx, `SELECT accepted FROM tasker.step_submit_results($1, $2, $3, $4, $5::jsonb[], $6::jsonb[], $7, $8::jsonb[])`,
					steps, attempts, benchWorkerID, success, results, errs, ids, headers)
				if err != nil {
					b.Fatal(err)
				}
				accepted, err := pgx.CollectRows(rows, pgx.RowTo[bool])
				if err != nil {
					b.Fatal(err)
				}
				for k, ok := range accepted {
					if !ok {
						b.Fatalf("result for step %s refused", batch[k].step)
					}
				}
			}
			f.stopTimer(n)
		})
	}
}

// BenchmarkProcessResults: the orchestrator's result loop takes n result
// notices of n linear4 tasks (Orchestrator.ResultsOnce: read the batch, then
// per task lock it, complete the step, evaluate the task, find the next
// step ready and dispatch it).
func BenchmarkProcessResults(b *testing.B) {
	for _, n := range batchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			f := newFixture(b, "linear4")
			f.submitted(b.N * n)
			f.processResults(n)
			// Each task's second step is now dispatched.
			if next := f.readSteps(b.N * n); len(next) != b.N*n {
				b.Fatalf("%d second steps dispatched, want %d", len(next), b.N*n)
			}
		})
	}
}

// BenchmarkProcessResultsDomainEvents: the result loop as in
// BenchmarkProcessResults, for n single-step tasks whose template publishes
// every domain event (the default), with the daemon's domain event hook: each
// result writes StepCompleted, WorkflowProgressed and TaskCompleted in the
// result transaction, and the hook reads what their payloads need and
// encodes them.
func BenchmarkProcessResultsDomainEvents(b *testing.B) {
	for _, n := range batchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			f := newFixture(b, "single")
			f.engine = orchestration.NewEngine(f.store, nil, quietLogger(),
				orchestration.WithBeforeCommit(internaldomainevents.Hook(f.store, internaldomainevents.StoreTemplates(f.store))))
			f.submitted(b.N * n)
			q, err := queue.DomainEventsQueue(Namespace)
			if err != nil {
				b.Fatal(err)
			}
			before := f.countMessages(q)
			f.processResults(n)
			// Three events per result.
			if got, want := f.countMessages(q)-before, 3*b.N*n; got != want {
				b.Fatalf("%d domain events published, want %d", got, want)
			}
		})
	}
}

// submitted creates n tasks and takes each first step through the worker
// protocol up to its submitted result: n result notices wait.
func (f *fixture) submitted(n int) {
	f.b.Helper()
	f.createTasks(n)
	msgs := f.readSteps(n)
	f.claimAll(msgs)
	for _, m := range msgs {
		f.submit(m)
	}
}

// processResults times b.N rounds of the result loop (ResultsOnce) taking n
// notices each.
func (f *fixture) processResults(n int) {
	f.b.Helper()
	orch := orchestration.NewOrchestrator(f.engine, orchestration.ServiceConfig{BatchSize: n}, nil, nil, quietLogger())
	f.b.ReportAllocs()
	f.startTimer()
	for i := 0; i < f.b.N; i++ {
		got, err := orch.ResultsOnce(f.ctx)
		if err != nil {
			f.b.Fatal(err)
		}
		if got != n {
			f.b.Fatalf("processed %d notices, want %d", got, n)
		}
	}
	f.stopTimer(n)
}

// countMessages counts the messages in a queue.
func (f *fixture) countMessages(q string) int {
	f.b.Helper()
	var n int
	if err := f.pool.QueryRow(f.ctx, fmt.Sprintf(`SELECT count(*) FROM pgmq.%s`, pgx.Identifier{"q_" + q}.Sanitize())).Scan(&n); err != nil {
		f.b.Fatal(err)
	}
	return n
}

// BenchmarkTransitionSteps: the orchestrator moves n steps in one statement
// (tasker.transition_steps, here enqueued_for_orchestration -> complete, in
// a transaction of its own).
func BenchmarkTransitionSteps(b *testing.B) {
	for _, n := range batchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			f := newFixture(b, "single")
			f.createTasks(b.N * n)
			msgs := f.readSteps(b.N * n)
			f.claimAll(msgs)
			for _, m := range msgs {
				f.submit(m)
			}
			moves := make([]store.StepMove, len(msgs))
			for i, m := range msgs {
				moves[i] = store.StepMove{UUID: m.step, From: lifecycle.StepEnqueuedForOrchestration, To: lifecycle.StepComplete,
					Meta: map[string]any{"trigger": string(lifecycle.StepResultProcessed)}}
			}
			b.ReportAllocs()
			f.startTimer()
			for i := 0; i < b.N; i++ {
				var moved []store.StepMoved
				err := f.store.InTx(f.ctx, func(tx store.Tx) error {
					var err error
					moved, err = f.store.StepsTransitionTx(f.ctx, tx, moves[i*n:(i+1)*n])
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				if len(moved) != n {
					b.Fatalf("moved %d of %d steps", len(moved), n)
				}
			}
			f.stopTimer(n)
		})
	}
}

// BenchmarkCreateTask: intake of one task (Engine.CreateTask: validate,
// insert the task, its steps, edges and transitions, initialize it and
// dispatch its first steps, in one transaction).
func BenchmarkCreateTask(b *testing.B) {
	for _, scenario := range []string{"single", "linear4"} {
		b.Run(scenario, func(b *testing.B) {
			f := newFixture(b, scenario)
			b.ReportAllocs()
			f.startTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := f.engine.CreateTask(f.ctx, orchestration.TaskRequest{Namespace: Namespace, Name: scenario,
					Context: json.RawMessage(`{"i":1}`)}); err != nil {
					b.Fatal(err)
				}
			}
			f.stopTimer(f.sc.StepsPerTask())
		})
	}
}
