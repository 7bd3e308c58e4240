package bench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/config"
	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/testdb"
)

// TestDesignModelRunsEveryStepThroughItsStates runs the design model on a
// migrated database and checks what it left behind: every task complete,
// every step through pending, enqueued, in_progress,
// enqueued_for_orchestration and complete with one most_recent row, both
// queues empty. A model that skipped a move would measure less work than
// the design asks for.
func TestDesignModelRunsEveryStepThroughItsStates(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{ModelBare, ModelFull} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			testDesignModel(t, kind)
		})
	}
}

func testDesignModel(t *testing.T, kind string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := testdb.Pool(t, testdb.URL(t))
	const tasks, chain = 23, 3 // creation batches are not all full
	res, err := runModel(ctx, pool, modelParams{kind: kind, tasks: tasks, chain: chain, batch: 4, workers: 2, resultLoops: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.elapsed <= 0 {
		t.Errorf("elapsed = %v", res.elapsed)
	}
	checkModelRun(ctx, t, pool, kind, tasks, chain)
}

// checkModelRun checks what a model run of tasks chains of chain steps
// left behind, then drops the model.
func checkModelRun(ctx context.Context, t *testing.T, pool *pgxpool.Pool, kind string, tasks, chain int) {
	t.Helper()
	// The bare model's task goes from creation straight to complete; the
	// full model's passes through DESIGN §3's states for each result.
	taskHistory := []string{"steps_in_process:false", "complete:true"}
	wantEvents := 0
	if kind == ModelFull {
		taskHistory = []string{"steps_in_process:false"}
		for i := 1; i < chain; i++ {
			taskHistory = append(taskHistory, "evaluating_results:false", "enqueuing_steps:false", "steps_in_process:false")
		}
		taskHistory = append(taskHistory, "evaluating_results:false", "complete:true")
		wantEvents = tasks * (2 + 2*chain) // initiated, completed; per step completed, progressed
	}
	var complete, steps, stepsComplete, badHistories, badTasks, queued, events int
	err := pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM bench_model.tasks WHERE state = 'complete' AND completed_at IS NOT NULL),
		(SELECT count(*) FROM bench_model.steps),
		(SELECT count(*) FROM bench_model.steps WHERE state = 'complete' AND attempts = 1 AND results IS NOT NULL),
		(SELECT count(*) FROM bench_model.steps s WHERE
			(SELECT array_agg(to_state ORDER BY sort_key) FROM bench_model.step_transitions WHERE step_uuid = s.step_uuid)
				<> ARRAY['pending', 'enqueued', 'in_progress', 'enqueued_for_orchestration', 'complete']
			OR (SELECT array_agg(most_recent ORDER BY sort_key) FROM bench_model.step_transitions WHERE step_uuid = s.step_uuid)
				<> ARRAY[false, false, false, false, true]),
		(SELECT count(*) FROM bench_model.tasks t WHERE
			(SELECT array_agg(to_state || ':' || most_recent ORDER BY sort_key) FROM bench_model.task_transitions WHERE task_uuid = t.task_uuid)
				<> $1::text[]
			OR (SELECT array_agg(sort_key ORDER BY sort_key) FROM bench_model.task_transitions WHERE task_uuid = t.task_uuid)
				<> (SELECT array_agg(i) FROM generate_series(1, cardinality($1::text[])) AS i)),
		(SELECT count(*) FROM pgmq.q_bench_model_work) + (SELECT count(*) FROM pgmq.q_bench_model_results),
		(SELECT count(*) FROM pgmq.q_bench_model_events)`, taskHistory).
		Scan(&complete, &steps, &stepsComplete, &badHistories, &badTasks, &queued, &events)
	if err != nil {
		t.Fatal(err)
	}
	if complete != tasks || steps != tasks*chain || stepsComplete != tasks*chain {
		t.Errorf("%d of %d tasks complete, %d steps (%d complete once with a result), want %d", complete, tasks, steps, stepsComplete, tasks*chain)
	}
	if badHistories != 0 || badTasks != 0 {
		t.Errorf("%d steps and %d tasks with another transition history", badHistories, badTasks)
	}
	if queued != 0 {
		t.Errorf("%d messages left in the model's queues", queued)
	}
	if events != wantEvents {
		t.Errorf("%d domain events, want %d", events, wantEvents)
	}

	if err := dropModel(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_namespace WHERE nspname = 'bench_model'`).Scan(&left); err != nil || left != 0 {
		t.Errorf("schema bench_model left behind (%d, %v)", left, err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pgmq.meta WHERE queue_name LIKE 'bench_model%'`).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d model queues left behind (%v)", left, err)
	}
}

func TestScenarioChains(t *testing.T) {
	want := map[string]int{"single": 1, "linear4": 4, "diamond": 0, "fanout": 0}
	for _, sc := range Scenarios() {
		if got := sc.Chain(); got != want[sc.Name] {
			t.Errorf("%s: Chain() = %d, want %d", sc.Name, got, want[sc.Name])
		}
	}
	o := Options{DatabaseURL: "postgres://x", Scenario: "diamond", Model: ModelBare}
	if err := o.defaults(); err == nil || !strings.Contains(err.Error(), "diamond") {
		t.Errorf("--model with diamond: %v, want an error naming the scenario", err)
	}
}

func TestModelOptionsAreChecked(t *testing.T) {
	o := Options{DatabaseURL: "postgres://x", Scenario: "linear4", Model: "fast"}
	if err := o.defaults(); err == nil || !strings.Contains(err.Error(), `"fast"`) {
		t.Errorf("--model fast: %v, want an error naming the value", err)
	}
	o = Options{DatabaseURL: "postgres://x", Scenario: "single", Model: ModelBare, Rate: 100, Duration: time.Second}
	if err := o.defaults(); err != nil {
		t.Errorf("--model with an open loop: %v, want it accepted (the model then runs the same open loop)", err)
	}
}

// TestOpenLoopModelRunsOnScheduleAndWakesByNotify runs the design model as
// an open loop whose idle loops never poll (a fallback of an hour), so it
// can only finish if inserts into its queues wake them. The tasks must be
// created one per transaction and no faster than their schedule, and every
// task's latency must be read.
func TestOpenLoopModelRunsOnScheduleAndWakesByNotify(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{ModelBare, ModelFull} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			pool := testdb.Pool(t, testdb.URL(t))
			const tasks, chain, rate = 30, 2, 100.0
			res, err := runModel(ctx, pool, modelParams{kind: kind, tasks: tasks, chain: chain, batch: 4, workers: 2,
				resultLoops: 1, rate: rate, fallback: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			// The last task is created (tasks-1)/rate after the first.
			if minSpan := time.Duration(float64(tasks-1) / rate * float64(time.Second)); res.elapsed < minSpan {
				t.Errorf("elapsed %v, less than the schedule's %v", res.elapsed, minSpan)
			}
			// Each task in a transaction of its own (a task's created_at is
			// its transaction's start), not in a batch.
			var created, txs int
			if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT created_at) FROM bench_model.tasks`).Scan(&created, &txs); err != nil {
				t.Fatal(err)
			}
			if created != tasks || txs != tasks {
				t.Errorf("%d tasks created in %d transactions, want %d, one each", created, txs, tasks)
			}
			l := res.latency
			if l.N != tasks || l.P50 <= 0 || l.P50 > l.P95 || l.P95 > l.P99 || l.P99 > l.Max {
				t.Errorf("latency %+v: want %d tasks and 0 < p50 <= p95 <= p99 <= max", l, tasks)
			}
			checkModelRun(ctx, t, pool, kind, tasks, chain)
		})
	}
}

// TestOpenLoopRunReportsTheModelsLatency runs the engine's open loop with
// --model: the model runs the same schedule after it, and the report (its
// table, JSON and summary) gives the model's latencies beside the engine's
// and no throughput share, which an open loop cannot measure.
func TestOpenLoopRunReportsTheModelsLatency(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rep, err := Run(ctx, Options{
		DatabaseURL: serverURL(t), Config: config.Default(), Scenario: "single", Rate: 40, Duration: 500 * time.Millisecond,
		Workers: 1, Concurrency: 4, Timeout: time.Minute, Model: ModelBare, SkipFloor: true,
		Progress: &progress, Logger: enginetest.Logger(t),
	})
	if err != nil {
		t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
	}
	const tasks = 20 // 40/s for 0.5s
	md := rep.Model
	if md == nil || md.Latency == nil {
		t.Fatalf("model = %+v, want one with latencies", md)
	}
	if l := md.Latency; md.Tasks != tasks || md.RatePerSec != 40 || l.N != tasks || l.P50 <= 0 || l.P50 > l.P99 || l.P99 > l.Max {
		t.Errorf("model %+v, latency %+v: want %d tasks at 40/s, every task's latency, 0 < p50 <= p99 <= max", md, *l, tasks)
	}
	if md.Ratio != 0 || md.CPURatio != 0 {
		t.Errorf("model ratio %v, by CPU %v in an open loop, want none", md.Ratio, md.CPURatio)
	}
	var table bytes.Buffer
	rep.Print(&table)
	if want := fmt.Sprintf("open loop, %d tasks at 40/s: submit-to-complete p50 %s", tasks, ms(md.Latency.P50)); !strings.Contains(table.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, table.String())
	}
	back := savedAndRead(t, rep)
	sum := Summarize([]*Report{back, rep, back})
	if len(sum) != 1 || sum[0].ModelP50 != md.Latency.P50 || sum[0].ModelP99 != md.Latency.P99 || sum[0].ModelRatio != 0 {
		t.Fatalf("summary of three copies = %+v, want the model's own latencies and no ratio", sum)
	}
	var summary bytes.Buffer
	PrintSummaries(&summary, sum)
	if !strings.Contains(summary.String(), "design model in the open loop") || strings.Contains(summary.String(), "engine of model") {
		t.Errorf("summary should give the model's latencies and no throughput share:\n%s", summary.String())
	}
}

func TestCPURatioNeedsBothSidesMeasured(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	// In-process engine: Postgres 6 s + app 2 s for 10,000 steps (800 µs a
	// step); the model 3 s + 1 s for 10,000 (400 µs): half.
	engine := CPU{Postgres: f(6), InProcess: f(2)}
	model := CPU{Postgres: f(3), InProcess: f(1)}
	if got := cpuRatio(engine, 10000, model, 10000); math.Abs(got-0.5) > 1e-12 {
		t.Errorf("in-process: %v, want 0.5", got)
	}
	// Separate processes count every one of them.
	procs := CPU{Postgres: f(5), Orchestrator: f(1), Workers: f(1), Driver: f(1)}
	if got := cpuRatio(procs, 5000, model, 10000); math.Abs(got-0.25) > 1e-12 {
		t.Errorf("processes: %v, want 0.25 (model 400 µs a step, engine 1,600)", got)
	}
	for name, c := range map[string][2]CPU{
		"no postgres CPU for the engine":   {{InProcess: f(2)}, model},
		"no application CPU for the model": {engine, {Postgres: f(3)}},
		"nothing measured":                 {{}, {}},
	} {
		if got := cpuRatio(c[0], 10000, c[1], 10000); got != 0 {
			t.Errorf("%s: %v, want 0", name, got)
		}
	}
	if got := cpuRatio(engine, 0, model, 10000); got != 0 {
		t.Errorf("no engine steps: %v, want 0", got)
	}
}
