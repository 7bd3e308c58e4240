package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/wait"
)

// stepYAML is one step of a chaos template: every step runs the test
// worker's handler, with attempts to spare (kills cost attempts, and a step
// that ran out would fail its task) and a short backoff so that retries after
// a lease reap are quick.
func stepYAML(name string, deps ...string) string {
	s := fmt.Sprintf(`  - name: %s
    handler: chaos.step
    timeout_seconds: 120
    retry:
      max_attempts: 50
      backoff:
        base_ms: 100
        cap_ms: 500
`, name)
	if len(deps) > 0 {
		s += fmt.Sprintf("    depends_on: [%s]\n", strings.Join(deps, ", "))
	}
	return s
}

func templateYAML(name string, steps ...string) string {
	return fmt.Sprintf("namespace: chaos\nname: %s\nversion: 1.0.0\nsteps:\n%s", name, strings.Join(steps, ""))
}

// linear is s1 -> s2 -> ... -> sn; step k's n is k.
func linear(name string, n int) (string, map[string]int) {
	var steps []string
	want := map[string]int{}
	for k := 1; k <= n; k++ {
		var deps []string
		if k > 1 {
			deps = []string{fmt.Sprintf("s%d", k-1)}
		}
		steps = append(steps, stepYAML(fmt.Sprintf("s%d", k), deps...))
		want[fmt.Sprintf("s%d", k)] = k
	}
	return templateYAML(name, steps...), want
}

// fanIn is two roots joined by a third step.
func fanIn() (string, map[string]int) {
	return templateYAML("fanin", stepYAML("left"), stepYAML("right"), stepYAML("join", "left", "right")),
		map[string]int{"left": 1, "right": 1, "join": 3}
}

// diamond is top -> (left, right) -> bottom.
func diamond() (string, map[string]int) {
	return templateYAML("diamond", stepYAML("top"), stepYAML("left", "top"), stepYAML("right", "top"),
			stepYAML("bottom", "left", "right")),
		map[string]int{"top": 1, "left": 2, "right": 2, "bottom": 5}
}

// waitUntil polls cond (bounded) and fails the test with what cond last said.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() (bool, string, error)) {
	t.Helper()
	var detail string
	err := wait.Poll(time.Now().Add(timeout), 50*time.Millisecond, func() (bool, error) {
		ok, d, err := cond()
		detail = d
		return ok, err
	})
	switch {
	case errors.Is(err, wait.ErrTimeout):
		t.Fatalf("%s: not within %s (%s)", what, timeout, detail)
	case err != nil:
		t.Fatalf("%s: %v", what, err)
	}
}

// TestWorkerKilledMidStepIsRetried kills a worker in the middle of a step:
// the step's lease expires, the orchestrator ends that attempt and retries
// the step, a fresh worker runs it, and the task completes with the killed
// attempt's work never applied.
func TestWorkerKilledMidStepIsRetried(t *testing.T) {
	t.Parallel()
	tpl, want := linear("linear3", 3)
	c := newCluster(t, tpl)
	orch := c.startOrchestrator("orchestrator-1")
	// The first worker's handler sleeps 30-90s: the kill lands mid-step.
	slow := c.startWorker("worker-1", workerOpts{Sleep: time.Minute, Concurrency: 1})
	ctx := context.Background()

	taskID, err := submitREST(orch.addr, orchestration.TaskRequest{Namespace: "chaos", Name: "linear3",
		Context: json.RawMessage(`{"seq": 0}`)})
	if err != nil {
		t.Fatal(err)
	}
	var stepID uuid.UUID
	waitUntil(t, 30*time.Second, "first step running on worker-1 (claimed, and its execution in the ledger)", func() (bool, string, error) {
		var state, claimedBy string
		var executions int
		err := c.pool.QueryRow(ctx, `
			SELECT s.step_uuid, s.state, coalesce(s.claimed_by, ''),
			       (SELECT count(*) FROM public.chaos_ledger l WHERE l.step_uuid = s.step_uuid)
			  FROM tasker.workflow_steps s WHERE s.task_uuid = $1 AND s.name = 's1'`, taskID).
			Scan(&stepID, &state, &claimedBy, &executions)
		return state == "in_progress" && claimedBy == slow.workerID() && executions == 1,
			fmt.Sprintf("state %s, claimed by %q, %d executions", state, claimedBy, executions), err
	})

	killedWorker := slow.workerID()
	slow.kill()
	killedAt := time.Now()
	fresh := c.startWorker("worker-2", workerOpts{Sleep: 20 * time.Millisecond})

	c.waitAllComplete(1, 90*time.Second)
	c.waitQueuesDrained(30 * time.Second)
	c.checkProcesses()

	// The killed step: two attempts, the first cut short and never applied.
	var retriedAt time.Time
	if err := c.pool.QueryRow(ctx, `
		SELECT created_at FROM tasker.workflow_step_transitions
		 WHERE step_uuid = $1 AND to_state = 'in_progress' ORDER BY sort_key OFFSET 1 LIMIT 1`, stepID).Scan(&retriedAt); err != nil {
		t.Fatalf("second claim of the killed step: %v", err)
	}
	retryLatency := retriedAt.Sub(killedAt)
	// Lease 3s + reap interval + backoff (<=100ms) + dispatch: seconds, not
	// hours. The bound leaves room for a loaded machine.
	if retryLatency > 20*time.Second {
		t.Errorf("the killed step was claimed again %s after the kill; want within seconds of its 3s lease", retryLatency)
	}
	rows, err := c.pool.Query(ctx, `
		SELECT name, attempts FROM tasker.workflow_steps WHERE task_uuid = $1 ORDER BY position`, taskID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		var attempts int
		if err := rows.Scan(&name, &attempts); err != nil {
			t.Fatal(err)
		}
		wantAttempts := 1
		if name == "s1" {
			wantAttempts = 2
		}
		if attempts != wantAttempts {
			t.Errorf("step %s: attempts=%d, want %d", name, attempts, wantAttempts)
		}
	}
	rows.Close()

	var path []string
	rows, err = c.pool.Query(ctx, `
		SELECT coalesce(from_state, '') || '->' || to_state || coalesce(' (' || (metadata->>'trigger') || ')', '')
		  FROM tasker.workflow_step_transitions WHERE step_uuid = $1 ORDER BY sort_key`, stepID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		path = append(path, s)
	}
	rows.Close()
	wantPath := []string{
		"->pending (created)", "pending->enqueued (enqueue)", "enqueued->in_progress (claim)",
		"in_progress->waiting_for_retry (lease_expired_retry)", "waiting_for_retry->pending (retry)",
		"pending->enqueued (enqueue)", "enqueued->in_progress (claim)",
		"in_progress->enqueued_for_orchestration", "enqueued_for_orchestration->complete (result_processed)",
	}
	if strings.Join(path, "\n") != strings.Join(wantPath, "\n") {
		t.Errorf("transitions of the killed step:\n  %s\nwant:\n  %s", strings.Join(path, "\n  "), strings.Join(wantPath, "\n  "))
	}

	type execution struct {
		attempt  int
		workerID string
		finished bool
	}
	var execs []execution
	rows, err = c.pool.Query(ctx, `
		SELECT attempt, worker_id, result IS NOT NULL FROM public.chaos_ledger WHERE step_uuid = $1 ORDER BY id`, stepID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var e execution
		if err := rows.Scan(&e.attempt, &e.workerID, &e.finished); err != nil {
			t.Fatal(err)
		}
		execs = append(execs, e)
	}
	rows.Close()
	wantExecs := []execution{{1, killedWorker, false}, {2, fresh.workerID(), true}}
	if fmt.Sprint(execs) != fmt.Sprint(wantExecs) {
		t.Errorf("executions of the killed step (attempt, worker, finished) = %v, want %v", execs, wantExecs)
	}

	st := verify(t, c.pool, expectation{Tasks: 1, N: want})
	t.Logf("killed %s mid-step; the step was claimed again after %s; %s", killedWorker, retryLatency.Round(time.Millisecond), st)
}

// TestOrchestratorKilledWith200TasksInFlight SIGKILLs the only orchestrator
// several times while 200 tasks run: whatever it was doing is either
// committed whole or redone, and nothing is done twice.
func TestOrchestratorKilledWith200TasksInFlight(t *testing.T) {
	t.Parallel()
	const tasks = 200
	tpl, want := linear("linear4", 4)
	c := newCluster(t, tpl)
	orch := c.startOrchestrator("orchestrator-1")
	c.startWorker("worker-1", workerOpts{Sleep: 50 * time.Millisecond, Concurrency: 8})
	c.startWorker("worker-2", workerOpts{Sleep: 50 * time.Millisecond, Concurrency: 8})
	ctx := context.Background()
	start := time.Now()
	submitManyREST(t, []string{orch.addr}, tasks, "chaos", "linear4")

	// Three kills at random points of the run, whatever this machine's
	// speed: when the number of completed steps passes each of three
	// random thresholds between 5% and 85% of all steps.
	steps := tasks * len(want)
	var thresholds []int
	for i := 0; i < 3; i++ {
		thresholds = append(thresholds, steps*5/100+rand.IntN(steps*80/100))
	}
	sort.Ints(thresholds)
	var kills []string
	deadline := time.Now().Add(3 * time.Minute)
	for len(kills) < len(thresholds) {
		var done int
		if err := c.pool.QueryRow(ctx, `SELECT count(*) FROM tasker.workflow_steps WHERE state = 'complete'`).Scan(&done); err != nil {
			t.Fatal(err)
		}
		if done >= thresholds[len(kills)] {
			orch.kill()
			kills = append(kills, fmt.Sprintf("%d/%d steps complete", done, steps))
			time.Sleep(randDuration(0, 500*time.Millisecond)) // down for a moment
			orch.start()
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d steps complete after 3 minutes\n%s", done, steps, c.stuckReport())
		}
		time.Sleep(50 * time.Millisecond)
	}

	c.waitAllComplete(tasks, 3*time.Minute)
	c.waitQueuesDrained(30 * time.Second)
	c.checkProcesses()
	st := verify(t, c.pool, expectation{Tasks: tasks, N: want})
	st.ArchivedByQueue = c.archivedCounts()
	checkNoArchived(t, st.ArchivedByQueue)
	t.Logf("orchestrator SIGKILLed %d times (at: %s); %s; %s", len(kills), strings.Join(kills, ", "),
		time.Since(start).Round(time.Millisecond), st)
	t.Log(dwellReport(ctx, c.pool))
}

// TestTwoOrchestratorsThreeWorkers500Tasks runs two orchestrator replicas and
// three workers on 500 tasks: the replicas share the work through row locks
// only, and no step is ever claimed twice.
func TestTwoOrchestratorsThreeWorkers500Tasks(t *testing.T) {
	t.Parallel()
	const tasks = 500
	tpl, want := fanIn()
	c := newCluster(t, tpl)
	o1 := c.startOrchestrator("orchestrator-1")
	o2 := c.startOrchestrator("orchestrator-2")
	for i := 1; i <= 3; i++ {
		c.startWorker(fmt.Sprintf("worker-%d", i), workerOpts{Sleep: 10 * time.Millisecond, Concurrency: 8, Batch: 4})
	}
	start := time.Now()
	submitManyREST(t, []string{o1.addr, o2.addr}, tasks, "chaos", "fanin")
	c.waitAllComplete(tasks, 3*time.Minute)
	elapsed := time.Since(start)
	c.waitQueuesDrained(30 * time.Second)
	c.checkProcesses()
	st := verify(t, c.pool, expectation{Tasks: tasks, N: want})
	st.ArchivedByQueue = c.archivedCounts()
	checkNoArchived(t, st.ArchivedByQueue)

	t.Logf("%d tasks in %s (%.0f steps/s); %s", tasks, elapsed.Round(time.Millisecond),
		float64(st.Steps)/elapsed.Seconds(), st)
	t.Log(dwellReport(context.Background(), c.pool))
}

func checkNoArchived(t *testing.T, archived map[string]int64) {
	t.Helper()
	// Nothing here is poison: an archived command or step message means
	// one was read too often (MaxReadCount) or refused, and its work was
	// dropped.
	for _, q := range sortedKeys(archived) {
		t.Errorf("queue %s has %d archived (poison) messages", q, archived[q])
	}
}

// TestChaos runs two orchestrators and three workers on a diamond workflow
// while a driver SIGKILLs a random process every 1-3s and restarts it. Task
// requests go through the orchestration_task_requests queue while the
// killing goes on, so intake is under fire too. TASKER_CHAOS=long runs 2000
// tasks instead of 300.
func TestChaos(t *testing.T) {
	t.Parallel()
	tasks, batch, timeout := 300, 25, 4*time.Minute
	if os.Getenv("TASKER_CHAOS") == "long" {
		tasks, batch, timeout = 2000, 50, 25*time.Minute
	}
	tpl, want := diamond()
	c := newCluster(t, tpl)
	var procs []*proc
	for i := 1; i <= 2; i++ {
		procs = append(procs, c.startOrchestrator(fmt.Sprintf("orchestrator-%d", i)))
	}
	for i := 1; i <= 3; i++ {
		procs = append(procs, c.startWorker(fmt.Sprintf("worker-%d", i),
			workerOpts{Sleep: 30 * time.Millisecond, Concurrency: 8, Batch: 4}))
	}
	ctx := context.Background()
	start := time.Now()
	deadline := start.Add(timeout)
	kills := map[string]int{}
	totalKills := 0
	submitted := 0
	var lastSubmit time.Time
	nextKill := time.Now().Add(randDuration(time.Second, 3*time.Second))
	lastReport := time.Now()
	var watch stallWatch
	for {
		if submitted < tasks && time.Since(lastSubmit) >= 400*time.Millisecond {
			n := min(batch, tasks-submitted)
			if err := sendTaskRequests(ctx, c.pool, submitted, n, "chaos", "diamond"); err != nil {
				t.Fatalf("queue task requests: %v", err)
			}
			submitted += n
			lastSubmit = time.Now()
		}
		if submitted == tasks {
			counts, err := taskCounts(ctx, c.pool)
			if err != nil {
				t.Fatal(err)
			}
			if c.checkCounts(counts, tasks) {
				break
			}
			stalled, err := watch.stalled(ctx, c.pool)
			if err != nil {
				t.Fatal(err)
			}
			if stalled {
				t.Fatalf("no step completed for %s despite %d kills and restarts: tasks by state %v\n%s",
					stallTimeout, totalKills, counts, c.stuckReport())
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s and %d kills: tasks by state %v\n%s", timeout, totalKills, counts, c.stuckReport())
			}
			if time.Since(lastReport) > 15*time.Second {
				t.Logf("%s: %d kills, tasks by state %v", time.Since(start).Round(time.Second), totalKills, counts)
				lastReport = time.Now()
			}
		}
		if time.Now().After(nextKill) {
			p := procs[rand.IntN(len(procs))]
			p.kill()
			kills[p.name]++
			totalKills++
			// Down for a moment (a pause that paces the kill loop; nothing
			// waits on it), then back.
			time.Sleep(randDuration(0, time.Second))
			if err := p.startAsync(); err != nil {
				t.Fatal(err)
			}
			if err := p.ready(p, time.Now().Add(60*time.Second)); err != nil {
				t.Fatalf("restart after kill: %v\n%s", err, tail(p.logPath, 40))
			}
			nextKill = time.Now().Add(randDuration(time.Second, 3*time.Second))
		}
		time.Sleep(100 * time.Millisecond)
	}
	elapsed := time.Since(start)

	c.waitQueuesDrained(60 * time.Second)
	c.checkProcesses()
	st := verify(t, c.pool, expectation{Tasks: tasks, N: want})
	st.ArchivedByQueue = c.archivedCounts()
	checkNoArchived(t, st.ArchivedByQueue)
	errorLines, examples := c.errorLogSummary(8)
	var killList []string
	for _, name := range sortedKeys(kills) {
		killList = append(killList, fmt.Sprintf("%s×%d", name, kills[name]))
	}
	t.Logf("CHAOS SUMMARY: %d tasks (%d steps) complete in %s; %d SIGKILLs (%s); %d attempts for %d steps (+%d), "+
		"%d lease reaps, %d executions (%d cut short, %d results discarded); %d ERROR log lines",
		st.Tasks, st.Steps, elapsed.Round(time.Millisecond), totalKills, strings.Join(killList, ", "),
		st.Attempts, st.Steps, st.Attempts-st.Steps, st.LeaseExpiredReaped, st.Executions, st.Unfinished, st.Discarded, errorLines)
	for _, e := range examples {
		t.Logf("  error log: %s", e)
	}
	t.Log(dwellReport(ctx, c.pool))
}
