package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/queue"
)

// The design model is the bare SQL of DESIGN's per-step protocol, with no
// engine around it: its own task and step tables with the state column, the
// append-only transition tables with their most_recent flag and partial
// unique index (DESIGN §2), and two PGMQ queues tuned as the engine's are.
// Per step it runs what the design cannot do without, in batches:
//
//   - dispatch: the step pending → enqueued (a compare-and-swap, a transition
//     row and the previous row's most_recent flip) and its message inserted;
//   - claim: a worker reads a batch of messages (asynchronous commit, as the
//     engine's reads) and moves them enqueued → in_progress with a lease;
//   - submit: in_progress → enqueued_for_orchestration with the result, a
//     result notice inserted and the step message deleted, one transaction
//     per batch;
//   - result processing: the orchestrator reads a batch of notices and, in
//     one transaction, deletes them, moves each step to complete, dispatches
//     the chain's next step or moves the task to complete.
//
// The bare model (ModelBare) leaves out two things DESIGN also asks for on
// every step, which the full model (ModelFull) adds:
//
//   - the task's own states per result (DESIGN §3): steps_in_process →
//     evaluating_results → enqueuing_steps → steps_in_process, or
//     evaluating_results → complete at the end, each a transition row, in
//     the result transaction;
//   - domain events (DESIGN §7) as a template that does not choose publishes
//     them: TaskInitiated at creation, StepCompleted (with the result) and
//     WorkflowProgressed per step and TaskCompleted at the end, in the
//     transaction of the change they report, on a tuned PGMQ queue, with
//     envelopes of the engine's sizes.
//
// Neither has the rest of the engine: the readiness evaluation over a DAG,
// trace context, metrics, idempotency, leases' reaping, the protocol's
// checks. The engine's steps/s over a model's says how much of the design's
// own speed the engine keeps on the same database in the same run.
type Model struct {
	// Kind is ModelBare or ModelFull.
	Kind         string  `json:"kind"`
	Tasks        int     `json:"tasks"`
	StepsPerTask int     `json:"steps_per_task"`
	Steps        int     `json:"steps"`
	Batch        int     `json:"batch"`
	Workers      int     `json:"workers"`
	ResultLoops  int     `json:"result_loops"`
	Seconds      float64 `json:"seconds"`
	StepsPerSec  float64 `json:"steps_per_sec"`
	// RatePerSec is an open loop's tasks created per second (0: a closed
	// loop).
	RatePerSec float64 `json:"rate_per_sec,omitempty"`
	// Latency is an open loop's creation-to-completion time per task.
	Latency *Latency `json:"latency,omitempty"`
	// Ratio is the engine's steps/s divided by StepsPerSec (closed loop
	// only).
	Ratio float64 `json:"ratio"`
	// CPURatio is the model's CPU time per step (Postgres and driver)
	// divided by the engine's (Postgres and application): the share of the
	// model's efficiency the engine keeps. Where CPU is the limit, as on a
	// small machine, it is what Ratio measures, without the host's noise
	// between the engine's window and the model's (time stolen by other
	// machines counts in neither). Closed loop only; 0 when either side's
	// CPU was not measurable.
	CPURatio float64    `json:"cpu_ratio,omitempty"`
	CPU      CPU        `json:"cpu"`
	DB       DBCounters `json:"db"`
}

// The kinds of model (Options.Model).
const (
	ModelBare = "bare"
	ModelFull = "full"
)

const (
	modelWorkQueue    = "bench_model_work"
	modelResultsQueue = "bench_model_results"
	modelEventsQueue  = "bench_model_events"
	// modelResultBatch is how many notices one result transaction takes,
	// the orchestrator's default batch_size.
	modelResultBatch = 50
	// modelCreateBatch is how many tasks one creation transaction inserts,
	// the intake's largest group commit.
	modelCreateBatch = 100
)

const modelSchema = `
DROP SCHEMA IF EXISTS bench_model CASCADE;
CREATE SCHEMA bench_model;
CREATE TABLE bench_model.tasks (
	task_uuid uuid PRIMARY KEY,
	state text NOT NULL,
	context jsonb NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	completed_at timestamptz
);
CREATE TABLE bench_model.steps (
	step_uuid uuid PRIMARY KEY,
	task_uuid uuid NOT NULL REFERENCES bench_model.tasks,
	position int NOT NULL,
	state text NOT NULL,
	attempts int NOT NULL DEFAULT 0,
	worker_id text,
	lease_expires_at timestamptz,
	results jsonb,
	UNIQUE (task_uuid, position)
);
CREATE TABLE bench_model.task_transitions (
	task_uuid uuid NOT NULL,
	sort_key int NOT NULL,
	from_state text,
	to_state text NOT NULL,
	most_recent boolean NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (task_uuid, sort_key)
);
CREATE UNIQUE INDEX ON bench_model.task_transitions (task_uuid) WHERE most_recent;
CREATE TABLE bench_model.step_transitions (
	step_uuid uuid NOT NULL,
	sort_key int NOT NULL,
	from_state text,
	to_state text NOT NULL,
	most_recent boolean NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (step_uuid, sort_key)
);
CREATE UNIQUE INDEX ON bench_model.step_transitions (step_uuid) WHERE most_recent;
`

// modelMoveSQL moves the steps $1 from state $2 to $3 (a compare-and-swap:
// steps not in $2 are left alone), flips their most_recent transition and
// appends the new one; it returns the steps moved. $4 is the lease (NULL
// clears it), $5 the worker, $6 the results (one per step, NULL for none).
const modelMoveSQL = `
WITH moved AS (
	UPDATE bench_model.steps s
	   SET state = $3, lease_expires_at = $4, worker_id = coalesce($5, s.worker_id),
	       attempts = s.attempts + CASE WHEN $3 = 'in_progress' THEN 1 ELSE 0 END,
	       results = coalesce(u.r, s.results)
	  FROM unnest($1::uuid[], $6::jsonb[]) AS u(id, r)
	 WHERE s.step_uuid = u.id AND s.state = $2
	RETURNING s.step_uuid, s.task_uuid, s.position
), flipped AS (
	UPDATE bench_model.step_transitions t SET most_recent = false
	 WHERE t.most_recent AND t.step_uuid = ANY (ARRAY(SELECT step_uuid FROM moved))
	RETURNING t.step_uuid, t.sort_key
), logged AS (
	INSERT INTO bench_model.step_transitions (step_uuid, sort_key, from_state, to_state, most_recent)
	SELECT step_uuid, sort_key + 1, $2, $3, true FROM flipped
)
SELECT step_uuid, task_uuid, position FROM moved`

// modelTaskCompleteSQL completes the tasks $1 (the bare model's only task
// transition after creation).
const modelTaskCompleteSQL = `
WITH moved AS (
	UPDATE bench_model.tasks SET state = 'complete', completed_at = now()
	 WHERE task_uuid = ANY ($1::uuid[]) AND state = 'steps_in_process'
	RETURNING task_uuid
), flipped AS (
	UPDATE bench_model.task_transitions t SET most_recent = false
	 WHERE t.most_recent AND t.task_uuid = ANY (ARRAY(SELECT task_uuid FROM moved))
	RETURNING t.task_uuid, t.sort_key
)
INSERT INTO bench_model.task_transitions (task_uuid, sort_key, from_state, to_state, most_recent)
SELECT task_uuid, sort_key + 1, 'steps_in_process', 'complete', true FROM flipped`

// modelTaskStatesSQL moves each task $1 through DESIGN §3's states for one
// result: steps_in_process → evaluating_results → enqueuing_steps →
// steps_in_process, or → evaluating_results → complete where $2 (its last
// step finished). The row is updated once; every move is a transition row.
const modelTaskStatesSQL = `
WITH u AS (
	SELECT * FROM unnest($1::uuid[], $2::boolean[]) AS u(t, fin)
), moved AS (
	UPDATE bench_model.tasks k
	   SET state = CASE WHEN u.fin THEN 'complete' ELSE 'steps_in_process' END,
	       completed_at = CASE WHEN u.fin THEN now() END
	  FROM u
	 WHERE k.task_uuid = ANY ($1::uuid[]) AND k.task_uuid = u.t AND k.state = 'steps_in_process'
	RETURNING k.task_uuid, u.fin
), flipped AS (
	UPDATE bench_model.task_transitions t SET most_recent = false
	 WHERE t.most_recent AND t.task_uuid = ANY (ARRAY(SELECT task_uuid FROM moved))
	RETURNING t.task_uuid, t.sort_key
)
INSERT INTO bench_model.task_transitions (task_uuid, sort_key, from_state, to_state, most_recent)
SELECT f.task_uuid, f.sort_key + s.i, s.fr, s.tt, s.i = cardinality(a.tts)
  FROM flipped f JOIN moved m ON m.task_uuid = f.task_uuid,
       LATERAL (SELECT CASE WHEN m.fin THEN ARRAY['evaluating_results', 'complete']
                            ELSE ARRAY['evaluating_results', 'enqueuing_steps', 'steps_in_process'] END) AS a(tts),
       LATERAL unnest(ARRAY['steps_in_process'] || a.tts[1:cardinality(a.tts) - 1], a.tts) WITH ORDINALITY AS s(fr, tt, i)`

// event is a domain event with the engine's envelope and payload fields
// (domainevents.Event: 430–630 bytes, against 540–845 in the engine's linear4
// run) for InsertSQL.
func (m *modelRun) event(kind string, task, step uuid.UUID, result []byte) []byte {
	payload := map[string]any{"task_name": "model", "task_version": "1", "initiator": "bench",
		"source_system": "bench", "reason": "benchmark", "tags": []string{}, "priority": 0, "step_count": m.chain}
	env := map[string]any{
		"event_id": uuid.Must(uuid.NewV7()), "event_type": kind, "schema_version": 1, "namespace": Namespace,
		"task_uuid": task, "correlation_id": task, "occurred_at": time.Now().UTC(),
	}
	if kind == "task.initiated" {
		payload["context"] = json.RawMessage(`{"order_id": 1}`)
	}
	if step != uuid.Nil {
		env["step_uuid"] = step
		payload["step_name"], payload["handler"], payload["attempt"], payload["max_attempts"] = "step", Handler, 1, 3
		payload["resolved_manually"] = false
	}
	if result != nil {
		payload["result"] = json.RawMessage(result)
	}
	if kind == "workflow.progressed" {
		payload["steps_complete"], payload["state"] = 1, "steps_in_process"
	}
	env["payload"] = payload
	b, _ := json.Marshal(env)
	return b
}

// modelRun is one run of the model.
type modelRun struct {
	pool        *pgxpool.Pool
	full        bool
	insertEvent string
	tasks       int
	chain       int
	batch       int
	workers     int
	insertWork  string
	insertNote  string
	deleteWork  string
	deleteNote  string
	completed   atomic.Int64
	stepsDone   atomic.Int64
	// done is closed when every task is complete: it ends the idle waits.
	done        chan struct{}
	doneOnce    sync.Once
	traceparent []byte
}

// modelParams are what runModel runs.
type modelParams struct {
	kind        string // ModelBare or ModelFull
	tasks       int
	chain       int // steps per task
	batch       int // messages a worker reads at once
	workers     int
	resultLoops int
	// rate, when above 0, makes the run an open loop: one task created
	// every 1/rate seconds, on schedule whatever happens to the others, as
	// the engine's open loop submits them, and the workers and result
	// loops woken by NOTIFY on their queues (the engine's wake-ups) with a
	// polling fallback (fallback; 0: modelFallbackPoll). At 0 (a closed
	// loop) every task is created at once in batches and idle loops poll
	// every millisecond.
	rate     float64
	fallback time.Duration
}

// modelResult is what runModel measured.
type modelResult struct {
	// elapsed runs from the first creation to the last task's completion.
	elapsed time.Duration
	// latency is every task's creation to completion (open loop only), by
	// the same clock as the engine's: the start times of the transactions
	// that created and completed it.
	latency Latency
}

// modelFallbackPoll is how often an open-loop model's idle loop reads its
// queue without a wake-up, as the engine's loops do.
const modelFallbackPoll = time.Second

// runModel runs p.tasks chains of p.chain steps through the model with
// p.workers worker loops reading up to p.batch messages and p.resultLoops
// result loops. The schema and queues are created first (outside the time)
// and left for the caller to measure and drop (dropModel).
func runModel(ctx context.Context, pool *pgxpool.Pool, p modelParams) (modelResult, error) {
	m, err := prepareModel(ctx, pool, pool, p)
	if err != nil {
		return modelResult{}, err
	}
	return m.run(ctx, p)
}

// prepareModel checks p and creates the model's tables and queues through
// db (measureModel passes its own connection, so that the DDL stays out of
// the measured window); the model then runs on pool.
func prepareModel(ctx context.Context, db queue.DB, pool *pgxpool.Pool, p modelParams) (*modelRun, error) {
	if p.chain < 1 {
		return nil, fmt.Errorf("model: a chain of %d steps", p.chain)
	}
	if p.kind != ModelBare && p.kind != ModelFull {
		return nil, fmt.Errorf("model: unknown kind %q (%s or %s)", p.kind, ModelBare, ModelFull)
	}
	if p.rate < 0 {
		return nil, fmt.Errorf("model: rate %v", p.rate)
	}
	m := &modelRun{pool: pool, full: p.kind == ModelFull, tasks: p.tasks, chain: p.chain, batch: p.batch, workers: p.workers,
		done: make(chan struct{})}
	if err := m.setUp(ctx, db, p.rate > 0); err != nil {
		return nil, fmt.Errorf("model: set up: %w", err)
	}
	return m, nil
}

// run runs a prepared model with p (prepareModel's).
func (m *modelRun) run(ctx context.Context, p modelParams) (modelResult, error) {
	var res modelResult
	pool, tasks, workers := m.pool, m.tasks, m.workers
	fallback := p.fallback
	if fallback <= 0 {
		fallback = modelFallbackPoll
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// idle waits after a read found nothing: for a wake-up or the fallback
	// in an open loop (or the run's end), a millisecond in a closed one.
	idle := func(wake <-chan struct{}) {
		if wake == nil {
			time.Sleep(time.Millisecond)
			return
		}
		t := time.NewTimer(fallback)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-m.done:
		case <-wake:
		case <-t.C:
		}
	}
	workWake := make([]<-chan struct{}, workers)
	resultWake := make([]<-chan struct{}, max(p.resultLoops, 1))
	if p.rate > 0 {
		l := queue.NewListener(pool, slog.New(slog.DiscardHandler))
		for i := range workWake {
			workWake[i] = l.Subscribe(modelWorkQueue)
		}
		for i := range resultWake {
			resultWake[i] = l.Subscribe(modelResultsQueue)
		}
		if err := l.Start(ctx); err != nil {
			return res, fmt.Errorf("model: listen: %w", err)
		}
		defer l.Stop()
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers+len(resultWake)+1)
	fail := func(err error) {
		if ctx.Err() == nil {
			errs <- err
			cancel()
		}
	}
	start := time.Now()
	wg.Add(1)
	// Ends when every task is created (an open loop's creations have
	// returned) or ctx is cancelled.
	go func() {
		defer wg.Done()
		if p.rate > 0 {
			m.createOnSchedule(ctx, p.rate, start, fail)
			return
		}
		for made := 0; made < tasks && ctx.Err() == nil; {
			k := min(modelCreateBatch, tasks-made)
			if err := m.create(ctx, k); err != nil {
				fail(fmt.Errorf("model: create: %w", err))
				return
			}
			made += k
		}
	}()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		// Ends when every task is complete or ctx is cancelled.
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("model-worker-%d", w)
			for m.completed.Load() < int64(tasks) && ctx.Err() == nil {
				n, err := m.work(ctx, id)
				if err != nil {
					fail(fmt.Errorf("model: worker: %w", err))
					return
				}
				if n == 0 {
					idle(workWake[w])
				}
			}
		}()
	}
	for _, wake := range resultWake {
		wg.Add(1)
		// Ends when every task is complete or ctx is cancelled.
		go m.resultLoop(ctx, &wg, fail, func() { idle(wake) })
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}
	if got := m.completed.Load(); got < int64(tasks) {
		return res, fmt.Errorf("model: %d of %d tasks completed: %w", got, tasks, ctx.Err())
	}
	if got := m.stepsDone.Load(); got != int64(tasks*p.chain) {
		return res, fmt.Errorf("model: %d steps completed, want %d", got, tasks*p.chain)
	}
	if p.rate > 0 {
		var err error
		if res.latency, err = m.readLatency(ctx); err != nil {
			return res, fmt.Errorf("model: %w", err)
		}
	}
	return res, nil
}

// createOnSchedule creates the run's tasks one at a time, the i-th at
// start + i/rate, each in a transaction of its own that does not hold up
// the next (at most maxOpenLoopInFlight at once), and returns when every
// creation has returned.
func (m *modelRun) createOnSchedule(ctx context.Context, rate float64, start time.Time, fail func(error)) {
	interval := time.Duration(float64(time.Second) / rate)
	sem := make(chan struct{}, maxOpenLoopInFlight)
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for i := 0; i < m.tasks && ctx.Err() == nil; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		sem <- struct{}{}
		inflight.Add(1)
		// Ends when the creation returns.
		go func() {
			defer inflight.Done()
			defer func() { <-sem }()
			if err := m.create(ctx, 1); err != nil {
				fail(fmt.Errorf("model: create: %w", err))
			}
		}()
	}
}

// readLatency reads the tasks' creation-to-completion times, as the
// engine's run reads its own (readOutcome).
func (m *modelRun) readLatency(ctx context.Context) (Latency, error) {
	var l Latency
	var p50, p95, p99, mx *float64
	err := m.pool.QueryRow(ctx, `
		SELECT count(*), percentile_cont(0.50) WITHIN GROUP (ORDER BY ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY ms),
		       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
		  FROM (SELECT extract(epoch FROM completed_at - created_at) * 1000 AS ms
		          FROM bench_model.tasks WHERE completed_at IS NOT NULL) t`).Scan(&l.N, &p50, &p95, &p99, &mx)
	if err != nil {
		return l, fmt.Errorf("read latency: %w", err)
	}
	l.P50, l.P95, l.P99, l.Max = deref(p50), deref(p95), deref(p99), deref(mx)
	return l, nil
}

// resultLoop runs result rounds until every task is complete, ctx is
// cancelled or a round fails; idle waits after a round that found nothing.
func (m *modelRun) resultLoop(ctx context.Context, wg *sync.WaitGroup, fail func(error), idle func()) {
	defer wg.Done()
	for m.completed.Load() < int64(m.tasks) && ctx.Err() == nil {
		n, err := m.results(ctx)
		if err != nil {
			fail(fmt.Errorf("model: results: %w", err))
			return
		}
		if m.completed.Load() >= int64(m.tasks) {
			m.doneOnce.Do(func() { close(m.done) })
		} else if n == 0 {
			idle()
		}
	}
}

// setUp creates the model's schema and queues; with notify, inserts into
// the work and result queues send the notifications the open loop's loops
// wake on.
func (m *modelRun) setUp(ctx context.Context, db queue.DB, notify bool) error {
	if _, err := db.Exec(ctx, modelSchema); err != nil {
		return err
	}
	for _, q := range modelQueues {
		if err := queue.Create(ctx, db, q); err != nil {
			return err
		}
		// The engine's queues are tuned for reads (migration 00020).
		if _, err := db.Exec(ctx, `SELECT tasker.tune_queue_for_reads($1)`, q); err != nil {
			return err
		}
		if notify && q != modelEventsQueue {
			if err := queue.EnableNotify(ctx, db, q); err != nil {
				return err
			}
		}
	}
	var err error
	if m.insertWork, err = queue.InsertSQL(modelWorkQueue); err != nil {
		return err
	}
	if m.insertNote, err = queue.InsertSQL(modelResultsQueue); err != nil {
		return err
	}
	if m.deleteWork, err = queue.DeleteSQL(modelWorkQueue); err != nil {
		return err
	}
	if m.deleteNote, err = queue.DeleteSQL(modelResultsQueue); err != nil {
		return err
	}
	if m.insertEvent, err = queue.InsertSQL(modelEventsQueue); err != nil {
		return err
	}
	m.traceparent, _ = json.Marshal(map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	return nil
}

// modelQueues are the model's queues (the events queue stays empty in the
// bare model).
var modelQueues = []string{modelWorkQueue, modelResultsQueue, modelEventsQueue}

// dropModel drops the model's queues and schema.
func dropModel(ctx context.Context, db queue.DB) error {
	for _, q := range modelQueues {
		if _, err := queue.Drop(ctx, db, q); err != nil {
			return fmt.Errorf("model: drop %s: %w", q, err)
		}
	}
	if _, err := db.Exec(ctx, `DROP SCHEMA IF EXISTS bench_model CASCADE`); err != nil {
		return fmt.Errorf("model: drop schema: %w", err)
	}
	return nil
}

// stepMessage is a step's message body and headers for InsertSQL.
func (m *modelRun) stepMessage(task, step uuid.UUID, position int) ([]byte, []byte) {
	body, _ := json.Marshal(queue.StepMessage{TaskUUID: task, StepUUID: step, StepName: fmt.Sprintf("step_%d", position),
		Handler: Handler, Namespace: Namespace, CorrelationID: task, Attempt: 1})
	return body, m.traceparent
}

// create inserts k tasks with their chains in one transaction: each task
// steps_in_process, its first step enqueued with its message, the others
// pending, every row with its first transition.
func (m *modelRun) create(ctx context.Context, k int) error {
	taskIDs := make([]uuid.UUID, k)
	stepIDs := make([]uuid.UUID, 0, k*m.chain)
	stepTasks := make([]uuid.UUID, 0, k*m.chain)
	positions := make([]int32, 0, k*m.chain)
	var bodies, headers [][]byte
	for i := range taskIDs {
		taskIDs[i] = uuid.Must(uuid.NewV7())
		for p := 1; p <= m.chain; p++ {
			s := uuid.Must(uuid.NewV7())
			stepIDs, stepTasks, positions = append(stepIDs, s), append(stepTasks, taskIDs[i]), append(positions, int32(p))
			if p == 1 {
				b, h := m.stepMessage(taskIDs[i], s, p)
				bodies, headers = append(bodies, b), append(headers, h)
			}
		}
	}
	b := &pgx.Batch{}
	b.Queue(`
WITH t AS (
	INSERT INTO bench_model.tasks (task_uuid, state, context)
	SELECT id, 'steps_in_process', '{"order_id": 1}' FROM unnest($1::uuid[]) AS id
	RETURNING task_uuid
)
INSERT INTO bench_model.task_transitions (task_uuid, sort_key, from_state, to_state, most_recent)
SELECT task_uuid, 1, 'pending', 'steps_in_process', true FROM t`, taskIDs)
	b.Queue(`
WITH s AS (
	INSERT INTO bench_model.steps (step_uuid, task_uuid, position, state)
	SELECT id, t, p, CASE WHEN p = 1 THEN 'enqueued' ELSE 'pending' END
	  FROM unnest($1::uuid[], $2::uuid[], $3::int[]) AS u(id, t, p)
	RETURNING step_uuid, position
)
INSERT INTO bench_model.step_transitions (step_uuid, sort_key, from_state, to_state, most_recent)
SELECT step_uuid, 1, NULL, 'pending', position <> 1 FROM s
UNION ALL
SELECT step_uuid, 2, 'pending', 'enqueued', true FROM s WHERE position = 1`, stepIDs, stepTasks, positions)
	b.Queue(m.insertWork, bodies, headers)
	if m.full {
		events, eventHeaders := make([][]byte, k), make([][]byte, k)
		for i, id := range taskIDs {
			events[i], eventHeaders[i] = m.event("task.initiated", id, uuid.Nil, nil), m.traceparent
		}
		b.Queue(m.insertEvent, events, eventHeaders)
	}
	return pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		return tx.SendBatch(ctx, b).Close()
	})
}

// work is one round of a worker: read up to batch step messages, claim
// them, run nothing, and submit their results. It returns the number of
// messages read.
func (m *modelRun) work(ctx context.Context, worker string) (int, error) {
	msgs, err := queue.ReadAsync(ctx, m.pool, modelWorkQueue, 30*time.Second, m.batch)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	ids := make([]uuid.UUID, len(msgs))
	msgIDs := make([]int64, len(msgs))
	for i, msg := range msgs {
		var body queue.StepMessage
		if err := json.Unmarshal(msg.Body, &body); err != nil {
			return 0, fmt.Errorf("message %d: %w", msg.ID, err)
		}
		ids[i], msgIDs[i] = body.StepUUID, msg.ID
	}
	// The claim commits asynchronously, as the Go SDK's does.
	claim := &pgx.Batch{}
	claim.Queue(`SELECT set_config('synchronous_commit', 'off', true)`)
	claim.Queue(modelMoveSQL, ids, "enqueued", "in_progress", time.Now().Add(5*time.Minute), worker, make([][]byte, len(ids)))
	claimed, err := m.moved(ctx, claim, 1)
	if err != nil {
		return 0, fmt.Errorf("claim: %w", err)
	}
	if len(claimed) != len(ids) {
		return 0, fmt.Errorf("claim: %d of %d steps claimed", len(claimed), len(ids))
	}
	results := make([][]byte, len(ids))
	notes := make([][]byte, len(ids))
	noteHeaders := make([][]byte, len(ids))
	for i, r := range claimed {
		results[i] = []byte(`{"ok": true}`)
		notes[i], _ = json.Marshal(orchestration.ResultNotice{TaskUUID: r.task, StepUUID: r.step, Attempt: 1, Success: true})
		noteHeaders[i] = m.traceparent
		ids[i] = r.step
	}
	submit := &pgx.Batch{}
	submit.Queue(modelMoveSQL, ids, "in_progress", "enqueued_for_orchestration", nil, nil, results)
	submit.Queue(m.insertNote, notes, noteHeaders)
	submit.Queue(m.deleteWork, msgIDs)
	err = pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		res := tx.SendBatch(ctx, submit)
		moved, err := collectMoved(res)
		if err == nil && len(moved) != len(ids) {
			err = fmt.Errorf("%d of %d steps moved", len(moved), len(ids))
		}
		return errors.Join(err, res.Close())
	})
	if err != nil {
		return 0, fmt.Errorf("submit: %w", err)
	}
	return len(msgs), nil
}

// modelMoved is one row of modelMoveSQL's answer.
type modelMoved struct {
	step, task uuid.UUID
	position   int32
}

func collectMoved(res pgx.BatchResults) ([]modelMoved, error) {
	rows, err := res.Query()
	if err != nil {
		return nil, err
	}
	var out []modelMoved
	for rows.Next() {
		var r modelMoved
		if err := rows.Scan(&r.step, &r.task, &r.position); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// moved sends b as one implicit transaction and returns the rows of its
// statement at index at (a modelMoveSQL); the statements before it are
// execs.
func (m *modelRun) moved(ctx context.Context, b *pgx.Batch, at int) ([]modelMoved, error) {
	res := m.pool.SendBatch(ctx, b)
	for i := 0; i < at; i++ {
		if _, err := res.Exec(); err != nil {
			return nil, errors.Join(err, res.Close())
		}
	}
	out, err := collectMoved(res)
	return out, errors.Join(err, res.Close())
}

// results is one round of the result loop: in one transaction, read up to
// modelResultBatch notices, delete them, move their steps to complete and
// then either dispatch each chain's next step or complete its task. It
// returns the number of notices read.
func (m *modelRun) results(ctx context.Context) (int, error) {
	var n, stepsDone, tasksDone int
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		msgs, err := queue.Read(ctx, tx, modelResultsQueue, 30*time.Second, modelResultBatch)
		if err != nil || len(msgs) == 0 {
			return err
		}
		n = len(msgs)
		ids := make([]uuid.UUID, len(msgs))
		msgIDs := make([]int64, len(msgs))
		for i, msg := range msgs {
			var body orchestration.ResultNotice
			if err := json.Unmarshal(msg.Body, &body); err != nil {
				return fmt.Errorf("notice %d: %w", msg.ID, err)
			}
			ids[i], msgIDs[i] = body.StepUUID, msg.ID
		}
		b := &pgx.Batch{}
		b.Queue(m.deleteNote, msgIDs)
		b.Queue(modelMoveSQL, ids, "enqueued_for_orchestration", "complete", nil, nil, make([][]byte, len(ids)))
		res := tx.SendBatch(ctx, b)
		_, err = res.Exec()
		var done []modelMoved
		if err == nil {
			done, err = collectMoved(res)
		}
		if err = errors.Join(err, res.Close()); err != nil {
			return err
		}
		if len(done) != len(ids) {
			return fmt.Errorf("%d of %d steps completed", len(done), len(ids))
		}
		// The next step of each chain, or the task's end.
		var nextTasks []uuid.UUID
		var nextPositions []int32
		var finished []uuid.UUID
		for _, d := range done {
			if int(d.position) < m.chain {
				nextTasks, nextPositions = append(nextTasks, d.task), append(nextPositions, d.position+1)
			} else {
				finished = append(finished, d.task)
			}
		}
		b = &pgx.Batch{}
		if len(nextTasks) > 0 {
			// Found by (task, position): the engine's readiness check
			// reads the finished step's children the same way, by key.
			b.Queue(`SELECT s.step_uuid, s.task_uuid, s.position FROM bench_model.steps s
				JOIN unnest($1::uuid[], $2::int[]) AS u(t, p) ON s.task_uuid = u.t AND s.position = u.p`, nextTasks, nextPositions)
		}
		taskRows := len(finished) // transition rows the task statement writes
		switch {
		case m.full:
			// Every task with a finished step moves through its per-result
			// states; the continuing ones end in steps_in_process again.
			tasks, fin := make([]uuid.UUID, len(done)), make([]bool, len(done))
			for i, d := range done {
				tasks[i], fin[i] = d.task, int(d.position) == m.chain
			}
			taskRows = 3*len(done) - len(finished)
			b.Queue(modelTaskStatesSQL, tasks, fin)
		case len(finished) > 0:
			b.Queue(modelTaskCompleteSQL, finished)
		}
		if m.full {
			events := make([][]byte, 0, 2*len(done)+len(finished))
			for _, d := range done {
				events = append(events,
					m.event("step.completed", d.task, d.step, []byte(`{"ok": true}`)),
					m.event("workflow.progressed", d.task, d.step, nil))
			}
			for _, t := range finished {
				events = append(events, m.event("task.completed", t, uuid.Nil, nil))
			}
			headers := make([][]byte, len(events))
			for i := range headers {
				headers[i] = m.traceparent
			}
			b.Queue(m.insertEvent, events, headers)
		}
		res = tx.SendBatch(ctx, b)
		var next []modelMoved
		if len(nextTasks) > 0 {
			next, err = collectMoved(res)
		}
		if err == nil && taskRows > 0 {
			tag, xerr := res.Exec()
			if err = xerr; err == nil && tag.RowsAffected() != int64(taskRows) {
				err = fmt.Errorf("%d task transitions written, want %d", tag.RowsAffected(), taskRows)
			}
		}
		if err = errors.Join(err, res.Close()); err != nil {
			return err
		}
		if len(next) > 0 {
			nextIDs := make([]uuid.UUID, len(next))
			bodies := make([][]byte, len(next))
			headers := make([][]byte, len(next))
			for i, s := range next {
				nextIDs[i] = s.step
				bodies[i], headers[i] = m.stepMessage(s.task, s.step, int(s.position))
			}
			b = &pgx.Batch{}
			b.Queue(modelMoveSQL, nextIDs, "pending", "enqueued", nil, nil, make([][]byte, len(nextIDs)))
			b.Queue(m.insertWork, bodies, headers)
			res = tx.SendBatch(ctx, b)
			dispatched, err := collectMoved(res)
			if err == nil && len(dispatched) != len(next) {
				err = fmt.Errorf("%d of %d steps dispatched", len(dispatched), len(next))
			}
			if err = errors.Join(err, res.Close()); err != nil {
				return err
			}
		}
		stepsDone, tasksDone = len(done), len(finished)
		return nil
	})
	if err != nil {
		return 0, err
	}
	m.stepsDone.Add(int64(stepsDone))
	m.completed.Add(int64(tasksDone))
	return n, nil
}

// cpuRatio is the model's CPU time per step over the engine's (see
// Model.CPURatio), or 0 when either was not measured.
func cpuRatio(engine CPU, engineSteps int, model CPU, modelSteps int) float64 {
	e, eok := engine.total()
	m, mok := model.total()
	if !eok || !mok || e <= 0 || m <= 0 || engineSteps <= 0 || modelSteps <= 0 {
		return 0
	}
	return (m / float64(modelSteps)) / (e / float64(engineSteps))
}
