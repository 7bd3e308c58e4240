package orchestration_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/worker"
)

// TestRetentionSweepDeletesOnlyWhatThePolicySays runs the retention sweep
// (migration 00024) over finished, failed, active and young tasks and over
// queue archives, in batches of two, and checks row by row what went and
// what stayed.
func TestRetentionSweepDeletesOnlyWhatThePolicySays(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	policy := store.RetentionPolicy{TasksAfter: 48 * time.Hour, HistoryAfter: 2 * time.Hour,
		ArchiveAfter: 7 * 24 * time.Hour, BatchSize: 2}
	// The loop would sweep an hour after start; the test sweeps by hand.
	h := enginetest.New(t, enginetest.Options{Service: orchestration.ServiceConfig{
		Retention: policy, RetentionInterval: time.Hour}})
	h.Register(linearTemplate("kept"))
	h.Register(linearTemplate("failing"))
	h.Register(linearTemplate("idle"))
	l := newLedger()
	h.Worker(workerConfig("kept"), map[string]worker.Handler{"t.echo": echo(l)})
	h.Worker(workerConfig("failing"), failingSecond(l))

	submit := func(ns string, state lifecycle.TaskState) uuid.UUID {
		task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "linear", Context: []byte(fmt.Sprintf(`{"id":%q}`, uuid.NewString()))})
		h.WaitTask(task.UUID, 30*time.Second, state)
		return task.UUID
	}
	old := []uuid.UUID{submit("kept", lifecycle.TaskComplete), submit("kept", lifecycle.TaskComplete)}
	hours := []uuid.UUID{submit("kept", lifecycle.TaskComplete), submit("kept", lifecycle.TaskComplete), submit("kept", lifecycle.TaskComplete)}
	young := submit("kept", lifecycle.TaskComplete)
	openDLQ := submit("failing", lifecycle.TaskError)
	closedDLQ := submit("failing", lifecycle.TaskError)
	active := h.Submit(orchestration.TaskRequest{Namespace: "idle", Name: "linear"}).UUID

	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := h.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	finishedAgo := func(id uuid.UUID, ago string) {
		exec(`UPDATE tasker.tasks SET completed_at = now() - $2::interval WHERE task_uuid = $1`, id, ago)
	}
	for _, id := range old {
		finishedAgo(id, "3 days")
	}
	for _, id := range hours {
		finishedAgo(id, "5 hours")
	}
	finishedAgo(openDLQ, "3 days")
	finishedAgo(closedDLQ, "3 days")
	exec(`UPDATE tasker.dlq_entries SET resolution_status = 'resolved' WHERE task_uuid = $1`, closedDLQ)

	// Archives: one old and one recent message of an engine queue, and an
	// old one of a queue that belongs to another application.
	archive := func(q, ago string) {
		exec(`SELECT pgmq.archive($1, pgmq.send($1, '{"retention":"test"}'::jsonb))`, q)
		exec(fmt.Sprintf(`UPDATE pgmq.a_%s SET archived_at = now() - $1::interval WHERE archived_at > now() - interval '1 minute'`, q), ago)
	}
	exec(`SELECT pgmq.create('other_app')`)
	archive("domain_events_kept", "8 days")
	archive("domain_events_kept", "1 day")
	archive("other_app", "30 days")

	count := func(sql string, args ...any) int64 {
		t.Helper()
		var n int64
		if err := h.Pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return n
	}
	rowsOf := func(id uuid.UUID) map[string]int64 {
		return map[string]int64{
			"tasks":                     count(`SELECT count(*) FROM tasker.tasks WHERE task_uuid = $1`, id),
			"workflow_steps":            count(`SELECT count(*) FROM tasker.workflow_steps WHERE task_uuid = $1`, id),
			"workflow_step_edges":       count(`SELECT count(*) FROM tasker.workflow_step_edges WHERE task_uuid = $1`, id),
			"task_transitions":          count(`SELECT count(*) FROM tasker.task_transitions WHERE task_uuid = $1`, id),
			"workflow_step_transitions": count(`SELECT count(*) FROM tasker.workflow_step_transitions WHERE task_uuid = $1`, id),
			"dlq_entries":               count(`SELECT count(*) FROM tasker.dlq_entries WHERE task_uuid = $1`, id),
		}
	}
	olderThanLast := func(ids ...uuid.UUID) int64 {
		return count(`SELECT count(*) FROM tasker.task_transitions WHERE task_uuid = ANY ($1) AND NOT most_recent`, ids) +
			count(`SELECT count(*) FROM tasker.workflow_step_transitions WHERE task_uuid = ANY ($1) AND NOT most_recent`, ids)
	}
	prunable := olderThanLast(append(hours, openDLQ)...)
	youngBefore, activeBefore := rowsOf(young), rowsOf(active)
	if prunable == 0 || youngBefore["task_transitions"] < 2 {
		t.Fatalf("setup: %d prunable transitions, young task %v", prunable, youngBefore)
	}

	est, err := h.Store.PruneEstimate(ctx, policy)
	if err != nil {
		t.Fatal(err)
	}
	// The estimate counts each kind on its own: history counts the tasks
	// that the task cut-off deletes too.
	if est.Tasks != 3 || est.HistoryTasks != 7 || est.ArchivedMessages != 1 {
		t.Errorf("estimate %+v, want 3 tasks, history of 7, 1 archived message", est)
	}

	res, err := h.Orch.RetentionOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := store.PruneResult{Tasks: 3, HistoryTasks: 4, Transitions: prunable, ArchivedMessages: 1}
	if res != want {
		t.Errorf("sweep deleted %+v, want %+v", res, want)
	}

	for _, id := range append(old, closedDLQ) {
		for table, n := range rowsOf(id) {
			if n != 0 {
				t.Errorf("deleted task %s still has %d rows in %s", id, n, table)
			}
		}
	}
	for _, id := range append(hours, openDLQ) {
		rows := rowsOf(id)
		if rows["tasks"] != 1 || rows["workflow_steps"] != 3 || rows["workflow_step_edges"] != 2 {
			t.Errorf("pruned task %s lost rows it keeps: %v", id, rows)
		}
		if rows["task_transitions"] != 1 || rows["workflow_step_transitions"] != 3 {
			t.Errorf("pruned task %s keeps %d task and %d step transitions, want the last of each (1, 3)",
				id, rows["task_transitions"], rows["workflow_step_transitions"])
		}
		if n := count(`SELECT count(*) FROM tasker.tasks t JOIN tasker.task_transitions tt USING (task_uuid)
		                WHERE t.task_uuid = $1 AND tt.most_recent AND tt.to_state = t.state`, id); n != 1 {
			t.Errorf("pruned task %s: its last transition is not its state", id)
		}
	}
	if rows := rowsOf(openDLQ); rows["dlq_entries"] != 1 {
		t.Errorf("the task with an open DLQ entry lost it: %v", rows)
	}
	for name, c := range map[string]struct {
		id     uuid.UUID
		before map[string]int64
	}{"young": {young, youngBefore}, "active": {active, activeBefore}} {
		if after := rowsOf(c.id); fmt.Sprint(after) != fmt.Sprint(c.before) {
			t.Errorf("%s task changed: %v -> %v", name, c.before, after)
		}
	}
	if n := count(`SELECT count(*) FROM pgmq.a_domain_events_kept WHERE message = '{"retention":"test"}'`); n != 1 {
		t.Errorf("%d test messages left in the engine queue's archive, want the recent one", n)
	}
	if n := count(`SELECT count(*) FROM pgmq.a_other_app`); n != 1 {
		t.Errorf("another application's archive lost its message (%d left)", n)
	}

	for kind, n := range map[string]int64{store.PruneTasks: 3, store.PruneTransitions: prunable, store.PruneArchivedMessages: 1} {
		if got := counterValue(t, h, "tasker_retention_deleted_total", "kind", kind); got != float64(n) {
			t.Errorf("tasker_retention_deleted_total{kind=%q} = %v, want %d", kind, got, n)
		}
	}

	// The next sweep finds nothing: the history cursor moved past the
	// pruned tasks.
	again, err := h.Orch.RetentionOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again != (store.PruneResult{}) {
		t.Errorf("second sweep deleted %+v, want nothing", again)
	}
}

// TestRetentionFunctionsRefuseMissingArguments: the SQL functions name what
// is missing instead of deleting with a NULL cut-off.
func TestRetentionFunctionsRefuseMissingArguments(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	for _, sql := range []string{
		`SELECT tasker.delete_finished_tasks(NULL, 10)`,
		`SELECT * FROM tasker.prune_task_history(now(), 0)`,
		`SELECT * FROM tasker.prune_queue_archives(now(), NULL)`,
	} {
		_, err := h.Pool.Exec(context.Background(), sql)
		if err == nil || !strings.Contains(err.Error(), "a cut-off time and a limit of at least 1 are required") {
			t.Errorf("%s: %v", sql, err)
		}
	}
}

// counterValue reads one labelled counter from the harness's registry (0
// when the series does not exist).
func counterValue(t *testing.T, h *enginetest.Harness, name, label, value string) float64 {
	t.Helper()
	mfs, err := h.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestRetentionLoopSweepsOnItsOwn: with a policy set, the orchestrator
// sweeps every RetentionInterval without being asked.
func TestRetentionLoopSweepsOnItsOwn(t *testing.T) {
	t.Parallel()
	h := enginetest.New(t, enginetest.Options{Service: orchestration.ServiceConfig{
		Retention: store.RetentionPolicy{TasksAfter: time.Hour}, RetentionInterval: 100 * time.Millisecond}})
	h.Register(linearTemplate("swept"))
	h.Worker(workerConfig("swept"), map[string]worker.Handler{"t.echo": echo(newLedger())})
	task := h.Submit(orchestration.TaskRequest{Namespace: "swept", Name: "linear"})
	h.WaitTask(task.UUID, 30*time.Second, lifecycle.TaskComplete)
	if _, err := h.Pool.Exec(context.Background(),
		`UPDATE tasker.tasks SET completed_at = now() - interval '2 hours' WHERE task_uuid = $1`, task.UUID); err != nil {
		t.Fatal(err)
	}
	enginetest.Eventually(t, 10*time.Second, "the loop deletes the old task", func() bool {
		_, err := h.Store.TaskGet(context.Background(), task.UUID)
		return errors.Is(err, store.ErrNotFound)
	})
	// Counted just after the delete commits.
	enginetest.Eventually(t, 10*time.Second, "tasker_retention_deleted_total{kind=tasks} = 1", func() bool {
		return counterValue(t, h, "tasker_retention_deleted_total", "kind", store.PruneTasks) == 1
	})
}
