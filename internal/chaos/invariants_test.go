package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// expectation is what a finished run must look like.
type expectation struct {
	Tasks int
	// N is each step's expected result n (1 + the sum of its parents' n),
	// which proves that every child ran with its parents' final results.
	N map[string]int
}

// runStats are the numbers of a verified run.
type runStats struct {
	Tasks, Steps       int
	Attempts           int // claims
	Executions         int // ledger rows
	Unfinished         int // executions cut short (no result recorded)
	Discarded          int // executions that produced a result that was not applied
	RetriedSteps       int // steps with more than one attempt
	MaxAttempts        int
	TaskTransitions    int
	StepTransitions    int
	ArchivedByQueue    map[string]int64
	LeaseExpiredReaped int
	// Overlapping counts executions that started while the previous
	// attempt's execution was still running: a worker that lost its lease
	// while alive (heartbeats too late on a loaded machine). The attempt
	// fencing makes that safe (the late result is refused); killed workers
	// never finish, so they do not count.
	Overlapping int
}

func (s runStats) String() string {
	return fmt.Sprintf("tasks=%d steps=%d attempts=%d (%.3f per step, %d steps retried, max %d, %d lease reaps) "+
		"executions=%d (unfinished %d, result discarded %d, overlapping the previous attempt %d) "+
		"transitions: task=%d step=%d archived=%v",
		s.Tasks, s.Steps, s.Attempts, float64(s.Attempts)/float64(max(s.Steps, 1)), s.RetriedSteps, s.MaxAttempts,
		s.LeaseExpiredReaped, s.Executions, s.Unfinished, s.Discarded, s.Overlapping, s.TaskTransitions, s.StepTransitions,
		s.ArchivedByQueue)
}

// violations collects failures by kind, so that a broken invariant reports
// how often it broke and a few examples rather than thousands of lines.
type violations struct {
	byKind map[string][]string
	order  []string
}

func (v *violations) add(kind, format string, args ...any) {
	if v.byKind == nil {
		v.byKind = map[string][]string{}
	}
	if _, ok := v.byKind[kind]; !ok {
		v.order = append(v.order, kind)
	}
	v.byKind[kind] = append(v.byKind[kind], fmt.Sprintf(format, args...))
}

func (v *violations) report(t *testing.T) {
	t.Helper()
	for _, k := range v.order {
		ex := v.byKind[k]
		shown := ex
		if len(shown) > 5 {
			shown = shown[:5]
		}
		t.Errorf("invariant %q broken %d times, e.g.:\n  %s", k, len(ex), strings.Join(shown, "\n  "))
	}
}

type transition struct {
	owner    uuid.UUID // step or task
	from, to string
	sortKey  int
	recent   bool
	meta     map[string]any
}

func metaInt(m map[string]any, k string) (int, bool) {
	f, ok := m[k].(float64)
	return int(f), ok
}

func metaString(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

// loadTransitions reads a transition table ordered by owner and sort key.
func loadTransitions(ctx context.Context, pool *pgxpool.Pool, table, owner string) (map[uuid.UUID][]transition, int, error) {
	rows, err := pool.Query(ctx, fmt.Sprintf(`
		SELECT %s, coalesce(from_state, ''), to_state, sort_key, most_recent, metadata
		  FROM tasker.%s ORDER BY %s, sort_key`, owner, table, owner))
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	out := map[uuid.UUID][]transition{}
	n := 0
	for rows.Next() {
		var tr transition
		var meta []byte
		if err := rows.Scan(&tr.owner, &tr.from, &tr.to, &tr.sortKey, &tr.recent, &meta); err != nil {
			return nil, 0, err
		}
		if err := json.Unmarshal(meta, &tr.meta); err != nil {
			return nil, 0, fmt.Errorf("metadata %s: %w", meta, err)
		}
		out[tr.owner] = append(out[tr.owner], tr)
		n++
	}
	return out, n, rows.Err()
}

// checkLog checks one owner's transition log against its row: sort keys 1..k
// without gaps, each from_state the previous to_state (the first from
// nothing), one most_recent row — the last — matching the row's state, and
// the row's transition_count equal to k.
func checkLog(v *violations, what string, id uuid.UUID, log []transition, state string, count int) {
	if len(log) == 0 {
		v.add(what+" has transitions", "%s %s has none", what, id)
		return
	}
	recent := 0
	for i, tr := range log {
		if tr.sortKey != i+1 {
			v.add(what+" sort keys are 1..k without gaps", "%s %s: transition %d has sort_key %d", what, id, i+1, tr.sortKey)
			break
		}
		prev := ""
		if i > 0 {
			prev = log[i-1].to
		}
		if tr.from != prev {
			v.add(what+" transitions chain (from_state = previous to_state)", "%s %s: sort_key %d is %q->%q after a move to %q",
				what, id, tr.sortKey, tr.from, tr.to, prev)
		}
		if tr.recent {
			recent++
		}
	}
	last := log[len(log)-1]
	if recent != 1 || !last.recent {
		v.add("one most_recent "+what+" transition, the last", "%s %s: %d most_recent rows, last one most_recent=%v", what, id, recent, last.recent)
	}
	if last.to != state {
		v.add(what+" state matches its most recent transition", "%s %s is %s, its last transition goes to %s", what, id, state, last.to)
	}
	if count != len(log) {
		v.add(what+" transition_count matches its log", "%s %s: transition_count %d, %d transitions", what, id, count, len(log))
	}
}

type ledgerRow struct {
	attempt  int
	workerID string
	result   []byte
}

// verify checks every invariant of a finished run from the database alone
// and returns the run's numbers.
func verify(t *testing.T, pool *pgxpool.Pool, exp expectation) runStats {
	t.Helper()
	ctx := context.Background()
	var v violations
	var st runStats

	// Tasks: the expected number, all complete, intact logs.
	type taskRow struct {
		state string
		count int
	}
	tasks := map[uuid.UUID]taskRow{}
	rows, err := pool.Query(ctx, `SELECT task_uuid, state, transition_count FROM tasker.tasks`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uuid.UUID
		var r taskRow
		if err := rows.Scan(&id, &r.state, &r.count); err != nil {
			t.Fatal(err)
		}
		tasks[id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	st.Tasks = len(tasks)
	if len(tasks) != exp.Tasks {
		v.add("task count", "%d tasks, %d submitted", len(tasks), exp.Tasks)
	}
	var seqDup []int
	if err := pool.QueryRow(ctx, `
		SELECT coalesce(array_agg(seq), '{}') FROM (
			SELECT (context->>'seq')::int AS seq FROM tasker.tasks GROUP BY 1 HAVING count(*) > 1) d`).Scan(&seqDup); err != nil {
		t.Fatal(err)
	}
	if len(seqDup) > 0 {
		v.add("each submission creates one task", "sequence numbers with more than one task: %v", seqDup)
	}
	taskLogs, n, err := loadTransitions(ctx, pool, "task_transitions", "task_uuid")
	if err != nil {
		t.Fatal(err)
	}
	st.TaskTransitions = n
	for id, r := range tasks {
		if r.state != "complete" {
			v.add("every task complete", "task %s is %s", id, r.state)
		}
		log := taskLogs[id]
		checkLog(&v, "task", id, log, r.state, r.count)
		completes := 0
		for _, tr := range log {
			if tr.to == "complete" {
				completes++
			}
		}
		if completes != 1 {
			v.add("one complete transition per task", "task %s has %d", id, completes)
		}
	}

	// Ledger of executions by step and attempt.
	ledger := map[uuid.UUID]map[int]ledgerRow{}
	rows, err = pool.Query(ctx, `SELECT step_uuid, attempt, worker_id, result FROM public.chaos_ledger ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uuid.UUID
		var r ledgerRow
		if err := rows.Scan(&id, &r.attempt, &r.workerID, &r.result); err != nil {
			t.Fatal(err)
		}
		st.Executions++
		if r.result == nil {
			st.Unfinished++
		}
		if ledger[id] == nil {
			ledger[id] = map[int]ledgerRow{}
		}
		if prev, dup := ledger[id][r.attempt]; dup {
			v.add("each attempt executes at most once", "step %s attempt %d ran on %s and on %s", id, r.attempt, prev.workerID, r.workerID)
			continue
		}
		ledger[id][r.attempt] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	// Steps.
	stepLogs, n, err := loadTransitions(ctx, pool, "workflow_step_transitions", "step_uuid")
	if err != nil {
		t.Fatal(err)
	}
	st.StepTransitions = n
	rows, err = pool.Query(ctx, `SELECT step_uuid, task_uuid, name, state, attempts, transition_count, results FROM tasker.workflow_steps`)
	if err != nil {
		t.Fatal(err)
	}
	type stepRow struct {
		id, task        uuid.UUID
		name, state     string
		attempts, count int
		results         []byte
	}
	var steps []stepRow
	for rows.Next() {
		var s stepRow
		if err := rows.Scan(&s.id, &s.task, &s.name, &s.state, &s.attempts, &s.count, &s.results); err != nil {
			t.Fatal(err)
		}
		steps = append(steps, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	st.Steps = len(steps)
	if want := exp.Tasks * len(exp.N); len(steps) != want {
		v.add("step count", "%d steps, want %d", len(steps), want)
	}
	for _, s := range steps {
		st.Attempts += s.attempts
		st.MaxAttempts = max(st.MaxAttempts, s.attempts)
		if s.attempts > 1 {
			st.RetriedSteps++
		}
		if s.state != "complete" {
			v.add("no step left unfinished", "step %s (%s of task %s) is %s", s.name, s.id, s.task, s.state)
		}
		log := stepLogs[s.id]
		checkLog(&v, "step", s.id, log, s.state, s.count)

		// Claims are strictly sequential: attempt k's claim is the k-th move
		// to in_progress, and the move out of in_progress that follows it
		// (a result, or a lease reap) is for attempt k, before any other
		// claim (the chain check above makes that "before").
		claims := 0
		claimedBy := map[int]string{}
		completes, successes, succAttempt, succWorker := 0, 0, 0, ""
		for _, tr := range log {
			switch {
			case tr.to == "in_progress":
				if tr.from != "enqueued" {
					v.add("claims are enqueued->in_progress", "step %s sort_key %d: %s->in_progress", s.id, tr.sortKey, tr.from)
				}
				claims++
				claimedBy[claims] = metaString(tr.meta, "worker_id")
			case tr.from == "in_progress":
				a, ok := metaInt(tr.meta, "attempt")
				if !ok || a != claims {
					v.add("each claim ends before the next (attempt numbers)", "step %s sort_key %d %s->%s ends attempt %v, but %d claims so far",
						s.id, tr.sortKey, tr.from, tr.to, tr.meta["attempt"], claims)
				}
				if trig := metaString(tr.meta, "trigger"); strings.HasPrefix(trig, "lease_expired") {
					st.LeaseExpiredReaped++
				}
				if tr.to == "enqueued_for_orchestration" {
					successes++
					succAttempt, succWorker = a, metaString(tr.meta, "worker_id")
					if succWorker != claimedBy[a] {
						v.add("only the claimant submits", "step %s attempt %d claimed by %q, submitted by %q", s.id, a, claimedBy[a], succWorker)
					}
				}
			}
			if tr.to == "complete" {
				completes++
			}
		}
		if completes != 1 {
			v.add("one complete transition per step", "step %s (%s) has %d", s.id, s.name, completes)
		}
		if successes != 1 {
			v.add("one accepted result per step", "step %s (%s) has %d moves to enqueued_for_orchestration", s.id, s.name, successes)
		}
		if claims != s.attempts {
			v.add("in_progress transitions = attempts", "step %s (%s): %d claims, attempts=%d", s.id, s.name, claims, s.attempts)
		}
		// Executions: only claimed attempts run, on the worker that claimed
		// them.
		for a, l := range ledger[s.id] {
			if a < 1 || a > claims {
				v.add("executions are of claimed attempts", "step %s ran attempt %d; it has %d claims", s.id, a, claims)
				continue
			}
			if l.workerID != claimedBy[a] {
				v.add("an attempt runs on the worker that claimed it", "step %s attempt %d claimed by %q, ran on %q", s.id, a, claimedBy[a], l.workerID)
			}
			if l.result != nil && a != succAttempt {
				st.Discarded++
			}
		}
		// The stored result is the one the successful attempt produced, and
		// it was computed from the parents' final results.
		if successes == 1 {
			l, ok := ledger[s.id][succAttempt]
			switch {
			case !ok:
				v.add("the applied result has an execution", "step %s attempt %d succeeded without a ledger row", s.id, succAttempt)
			case l.result == nil:
				v.add("the applied result has an execution", "step %s attempt %d succeeded but its execution recorded no result", s.id, succAttempt)
			case !jsonEqual(l.result, s.results):
				v.add("stored result = the successful execution's result", "step %s: stored %s, attempt %d produced %s", s.id, s.results, succAttempt, l.result)
			}
		}
		var res struct {
			N       int    `json:"n"`
			Attempt int    `json:"attempt"`
			Worker  string `json:"worker_id"`
		}
		if err := json.Unmarshal(s.results, &res); err != nil {
			v.add("results decode", "step %s: %s: %v", s.id, s.results, err)
		} else {
			if want, ok := exp.N[s.name]; !ok || res.N != want {
				v.add("children saw their parents' results", "step %s (%s): n=%d, want %d", s.id, s.name, res.N, exp.N[s.name])
			}
			if res.Attempt != succAttempt || res.Worker != succWorker {
				v.add("stored result comes from the accepted attempt", "step %s: result of attempt %d on %q; accepted attempt %d on %q",
					s.id, res.Attempt, res.Worker, succAttempt, succWorker)
			}
		}
	}

	if err := pool.QueryRow(ctx, `
		SELECT count(*) FROM public.chaos_ledger l
		  JOIN public.chaos_ledger p ON p.step_uuid = l.step_uuid AND p.attempt = l.attempt - 1
		 WHERE p.finished_at > l.at`).Scan(&st.Overlapping); err != nil {
		t.Fatal(err)
	}

	var dlq int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM tasker.dlq_entries`).Scan(&dlq); err != nil {
		t.Fatal(err)
	}
	if dlq > 0 {
		v.add("no DLQ entries", "%d DLQ entries", dlq)
	}
	v.report(t)
	return st
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// sortedKeys is for stable output.
func sortedKeys[M ~map[string]V, V any](m M) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// dwellReport summarises how long steps stayed in each state before each
// kind of move (from the transition log), to show where a run's time went:
// queue waits, handler time, result processing, retry backoff.
func dwellReport(ctx context.Context, pool *pgxpool.Pool) string {
	rows, err := pool.Query(ctx, `
		WITH d AS (
			SELECT from_state, to_state,
			       extract(epoch FROM created_at - lag(created_at) OVER (PARTITION BY step_uuid ORDER BY sort_key)) AS s
			  FROM tasker.workflow_step_transitions)
		SELECT from_state || '->' || to_state, count(*),
		       round(avg(s)::numeric, 3)::float8,
		       round((percentile_cont(0.95) WITHIN GROUP (ORDER BY s))::numeric, 3)::float8,
		       round(max(s)::numeric, 3)::float8
		  FROM d WHERE from_state IS NOT NULL AND s IS NOT NULL
		 GROUP BY 1 ORDER BY 2 DESC, 1`)
	if err != nil {
		return "dwell report: " + err.Error()
	}
	defer rows.Close()
	var b strings.Builder
	b.WriteString("seconds in the from-state before each step move (count, avg, p95, max):")
	for rows.Next() {
		var move string
		var n int
		var avg, p95, mx float64
		if err := rows.Scan(&move, &n, &avg, &p95, &mx); err != nil {
			return "dwell report: " + err.Error()
		}
		fmt.Fprintf(&b, "\n  %-60s %6d %8.3f %8.3f %8.3f", move, n, avg, p95, mx)
	}
	return b.String()
}
