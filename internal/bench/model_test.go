package bench

import (
	"context"
	"strings"
	"testing"
	"time"

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
	elapsed, err := runModel(ctx, pool, kind, tasks, chain, 4, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if elapsed <= 0 {
		t.Errorf("elapsed = %v", elapsed)
	}
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
	err = pool.QueryRow(ctx, `SELECT
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
	if err := o.defaults(); err == nil || !strings.Contains(err.Error(), "--rate") {
		t.Errorf("--model with an open loop: %v, want an error naming --rate", err)
	}
}
