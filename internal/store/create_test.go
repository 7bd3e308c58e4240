package store_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/template"
	"github.com/tasker/tasker/internal/testdb"
)

const createTemplate = `
name: shape
namespace: creating
version: 1.0.0
steps:
  - name: a
    handler: h
  - name: b
    handler: h
    depends_on: [a]
  - name: c
    handler: h
    depends_on: [a]
  - name: d
    handler: h
    depends_on: [b, c]
`

type createFixture struct {
	ctx  context.Context
	pool *pgxpool.Pool
	st   *store.Store
	tpl  *template.Template
	id   int64
}

func newCreateFixture(t *testing.T) *createFixture {
	t.Helper()
	f := &createFixture{ctx: context.Background(), pool: testdb.New(t)}
	f.st = store.New(f.pool)
	var err error
	if f.tpl, err = template.Parse([]byte(createTemplate)); err != nil {
		t.Fatal(err)
	}
	rec, _, err := f.st.TemplateRegister(f.ctx, f.tpl)
	if err != nil {
		t.Fatal(err)
	}
	f.id = rec.ID
	return f
}

// newTask builds the rows of a task of the diamond template with identity key.
func (f *createFixture) newTask(key string) store.NewTask {
	nt := store.NewTask{UUID: uuid.Must(uuid.NewV7()), TemplateID: f.id, Namespace: f.tpl.Namespace, Name: f.tpl.Name,
		Version: f.tpl.Version, Context: []byte(`{"k":1}`), Tags: []string{"x", "y"}, Priority: 3, Initiator: "test",
		SourceSystem: "store_test", CorrelationID: uuid.Must(uuid.NewV7()), IdentityHash: key,
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", StaleAfterSeconds: 60}
	ids := map[string]uuid.UUID{}
	for i, name := range f.tpl.TopologicalOrder() {
		st, _ := f.tpl.StepByName(name)
		ids[name] = uuid.Must(uuid.NewV7())
		var parents []uuid.UUID
		for _, p := range st.DependsOn {
			parents = append(parents, ids[p])
		}
		nt.Steps = append(nt.Steps, store.NewStep{UUID: ids[name], Name: name, Handler: st.Handler, Position: i,
			MaxAttempts: 3, Retryable: true, BackoffBaseMs: 100, BackoffCapMs: 1000, TimeoutSeconds: 30, Parents: parents})
	}
	return nt
}

// start creates nt and starts it as the engine does: three task moves, the
// dispatch of its root step and a wake-up time.
func (f *createFixture) start(tx store.Tx, nt store.NewTask, wake time.Time) (store.Task, bool, error) {
	task, steps, created, err := f.st.TaskCreateTx(f.ctx, tx, nt)
	if err != nil || !created {
		return task, created, err
	}
	move := func(from, to lifecycle.TaskState, wake *time.Time) error {
		ok, _, err := f.st.TaskTransitionTx(f.ctx, tx, store.TaskMove{UUID: task.UUID, From: from, To: to, WakeAt: wake,
			Meta: map[string]any{"trigger": string(to) + "?"}})
		if err == nil && !ok {
			err = fmt.Errorf("move %s -> %s lost", from, to)
		}
		return err
	}
	if err := move(lifecycle.TaskPending, lifecycle.TaskInitializing, nil); err != nil {
		return task, true, err
	}
	if err := move(lifecycle.TaskInitializing, lifecycle.TaskEnqueuingSteps, nil); err != nil {
		return task, true, err
	}
	if _, err := f.st.StepsDispatchTx(f.ctx, tx, &task, []*store.Step{&steps[0]},
		[]map[string]string{{"traceparent": nt.TraceParent}}); err != nil {
		return task, true, err
	}
	if err := move(lifecycle.TaskEnqueuingSteps, lifecycle.TaskStepsInProcess, nil); err != nil {
		return task, true, err
	}
	return task, true, f.st.TaskWakeSetTx(f.ctx, tx, task.UUID, &wake)
}

// snapshot is what the database holds about a task, without its uuids.
func (f *createFixture) snapshot(t *testing.T, id uuid.UUID) []string {
	t.Helper()
	queries := []string{
		`SELECT format('%s %s %s %s %s %s %s', state, transition_count, wake_at, root_span_emitted, completed_at IS NULL,
		        tags, context) FROM tasker.tasks WHERE task_uuid = $1`,
		`SELECT format('%s>%s #%s %s %s', from_state, to_state, sort_key, most_recent, metadata)
		   FROM tasker.task_transitions WHERE task_uuid = $1 ORDER BY sort_key`,
		`SELECT format('%s %s %s %s %s', name, state, transition_count, attempts, next_attempt_at)
		   FROM tasker.workflow_steps WHERE task_uuid = $1 ORDER BY position`,
		`SELECT format('%s %s>%s #%s %s %s', ws.name, tr.from_state, tr.to_state, tr.sort_key, tr.most_recent, tr.metadata)
		   FROM tasker.workflow_step_transitions tr JOIN tasker.workflow_steps ws USING (step_uuid)
		  WHERE tr.task_uuid = $1 ORDER BY ws.position, tr.sort_key`,
		`SELECT format('%s->%s', f.name, t.name) FROM tasker.workflow_step_edges e
		   JOIN tasker.workflow_steps f ON f.step_uuid = e.from_step JOIN tasker.workflow_steps t ON t.step_uuid = e.to_step
		  WHERE e.task_uuid = $1 ORDER BY 1`,
		`SELECT format('%s %s %s %s', message - 'task_uuid' - 'step_uuid' - 'correlation_id', headers, read_ct, vt <= clock_timestamp())
		   FROM pgmq.q_worker_creating_queue WHERE message->>'task_uuid' = $1::text ORDER BY msg_id`,
	}
	var out []string
	for _, q := range queries {
		rows, err := f.pool.Query(f.ctx, q, id)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// A task created and started in a deferred transaction, where the moves are
// folded into its insert, ends up with exactly the rows the same calls make
// one by one (the insert, transition_task, dispatch_steps) in a plain one.
func TestDeferredCreationWritesWhatTheMovesWould(t *testing.T) {
	t.Parallel()
	f := newCreateFixture(t)
	wake := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var plain, folded store.Task
	if err := f.st.InTx(f.ctx, func(tx store.Tx) error {
		var err error
		plain, _, err = f.start(tx, f.newTask("plain"), wake)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
		var err error
		folded, _, err = f.start(tx, f.newTask("folded"), wake)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want, got := f.snapshot(t, plain.UUID), f.snapshot(t, folded.UUID)
	if len(want) != 19 {
		t.Fatalf("the plain task has %d rows, want 19 (task, 4 task transitions, 4 steps, 5 step transitions, 4 edges, 1 message):\n%q", len(want), want)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("deferred creation wrote\n%q\nwant (as the calls one by one)\n%q", got, want)
	}
	if !folded.CreatedAt.Equal(plain.CreatedAt) && folded.CreatedAt.Before(plain.CreatedAt) {
		t.Fatalf("created_at %v of the later task is before %v", folded.CreatedAt, plain.CreatedAt)
	}
	var created time.Time
	if err := f.pool.QueryRow(f.ctx, `SELECT created_at FROM tasker.tasks WHERE task_uuid = $1`, folded.UUID).Scan(&created); err != nil {
		t.Fatal(err)
	}
	if !created.Equal(folded.CreatedAt) {
		t.Fatalf("TaskCreateTx returned created_at %v, the row has %v", folded.CreatedAt, created)
	}
}

// A deferred transaction that reads or moves a new task's steps sees them
// written: the creation is flushed before any other statement.
func TestDeferredCreationIsReadable(t *testing.T) {
	t.Parallel()
	f := newCreateFixture(t)
	err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
		task, steps, _, err := f.st.TaskCreateTx(f.ctx, tx, f.newTask("read"))
		if err != nil {
			return err
		}
		got, err := f.st.TaskStepsTx(f.ctx, tx, task.UUID)
		if err != nil {
			return err
		}
		if len(got) != len(steps) {
			return fmt.Errorf("read %d steps of the new task, want %d", len(got), len(steps))
		}
		// A step move on a new task writes the creation first.
		moved, err := f.st.StepsTransitionTx(f.ctx, tx, []store.StepMove{{UUID: steps[3].UUID, From: lifecycle.StepPending,
			To: lifecycle.StepCancelled, Meta: map[string]any{"trigger": "cancel"}}})
		if err != nil {
			return err
		}
		if len(moved) != 1 {
			return fmt.Errorf("moved %d steps, want 1", len(moved))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Identities: a second creation with the same identity in one transaction,
// or after the first committed, returns the first task; a creation that
// loses a race to a concurrent commit is run again and then does the same.
func TestDeferredCreationIdentity(t *testing.T) {
	t.Parallel()
	f := newCreateFixture(t)
	var first store.Task
	err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
		var created bool
		var err error
		if first, _, created, err = f.st.TaskCreateTx(f.ctx, tx, f.newTask("same")); err != nil || !created {
			return fmt.Errorf("first creation: created=%v err=%v", created, err)
		}
		again, _, created, err := f.st.TaskCreateTx(f.ctx, tx, f.newTask("same"))
		if err != nil || created || again.UUID != first.UUID {
			return fmt.Errorf("second creation in the same transaction: task %s created=%v err=%v, want task %s", again.UUID, created, err, first.UUID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
		again, _, created, err := f.st.TaskCreateTx(f.ctx, tx, f.newTask("same"))
		if err != nil || created || again.UUID != first.UUID {
			return fmt.Errorf("creation after the commit: task %s created=%v err=%v, want task %s", again.UUID, created, err, first.UUID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The race: the loser looks (nothing there), the winner commits, the
	// loser's insert then meets the winner's row.
	looked := make(chan struct{})
	committed := make(chan struct{})
	attempts := 0
	var loser store.Task
	var loserCreated bool
	done := make(chan error, 1)
	go func() {
		done <- f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
			attempts++
			var err error
			loser, _, loserCreated, err = f.st.TaskCreateTx(f.ctx, tx, f.newTask("raced"))
			if attempts == 1 {
				close(looked)
				<-committed
			}
			return err
		})
	}()
	<-looked
	var winner store.Task
	if err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
		var err error
		winner, _, _, err = f.st.TaskCreateTx(f.ctx, tx, f.newTask("raced"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	close(committed)
	if err := <-done; err != nil {
		t.Fatalf("the losing creation failed: %v", err)
	}
	if attempts != 2 || loserCreated || loser.UUID != winner.UUID {
		t.Fatalf("losing creation: %d attempts, created=%v, task %s; want 2 attempts, created=false, task %s", attempts, loserCreated, loser.UUID, winner.UUID)
	}
	var n int
	if err := f.pool.QueryRow(f.ctx, `SELECT count(*) FROM tasker.tasks WHERE identity_hash = 'raced'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d tasks with the raced identity, want 1", n)
	}
}

// A dispatch in a deferred transaction (a step move and a message send
// waiting in the buffer) writes exactly what tasker.dispatch_steps writes
// in a plain one: the step rows, their transition rows, and the messages
// with their attempt and headers. Step b has been attempted once before, so
// its message is for attempt 2.
func TestDeferredDispatchWritesWhatDispatchStepsWould(t *testing.T) {
	t.Parallel()
	f := newCreateFixture(t)
	wake := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var tasks []store.Task
	for _, key := range []string{"plain", "deferred"} {
		if err := f.st.InTx(f.ctx, func(tx store.Tx) error {
			task, _, err := f.start(tx, f.newTask(key), wake)
			tasks = append(tasks, task)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.pool.Exec(f.ctx, `UPDATE tasker.workflow_steps SET attempts = 1 WHERE task_uuid = $1 AND name = 'b'`, tasks[len(tasks)-1].UUID); err != nil {
			t.Fatal(err)
		}
	}
	dispatch := func(tx store.Tx, task *store.Task) error {
		steps, err := f.st.TaskSteps(f.ctx, task.UUID)
		if err != nil {
			return err
		}
		var ready []*store.Step
		var headers []map[string]string
		for i := range steps {
			if steps[i].Name == "b" || steps[i].Name == "c" {
				ready = append(ready, &steps[i])
				headers = append(headers, map[string]string{"traceparent": "tp-" + steps[i].Name})
			}
		}
		sent, err := f.st.StepsDispatchTx(f.ctx, tx, task, ready, headers)
		if err == nil && len(sent) != 2 {
			err = fmt.Errorf("%d steps dispatched, want 2", len(sent))
		}
		return err
	}
	if err := f.st.InTx(f.ctx, func(tx store.Tx) error { return dispatch(tx, &tasks[0]) }); err != nil {
		t.Fatal(err)
	}
	if err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error { return dispatch(tx, &tasks[1]) }); err != nil {
		t.Fatal(err)
	}
	want, got := f.snapshot(t, tasks[0].UUID), f.snapshot(t, tasks[1].UUID)
	if len(want) != 23 {
		t.Fatalf("the plain task has %d rows, want 23 (task, 4 task transitions, 4 steps, 7 step transitions, 4 edges, 3 messages):\n%q", len(want), want)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("deferred dispatch wrote\n%q\nwant (as dispatch_steps)\n%q", got, want)
	}

	// A step that is no longer pending fails the deferred dispatch at its
	// flush, as dispatch_steps' count check fails the plain one.
	err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error { return dispatch(tx, &tasks[1]) })
	if err == nil {
		t.Fatal("dispatching enqueued steps again succeeded")
	}
}

// TasksGet reads several tasks in one statement, as TaskGet reads one; a
// task that does not exist is left out.
func TestTasksGetReadsSeveral(t *testing.T) {
	t.Parallel()
	f := newCreateFixture(t)
	var ids []uuid.UUID
	for i := range 3 {
		nt := f.newTask(fmt.Sprintf("get-%d", i))
		if err := f.st.InTx(f.ctx, func(tx store.Tx) error {
			_, _, _, err := f.st.TaskCreateTx(f.ctx, tx, nt)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, nt.UUID)
	}
	missing := uuid.Must(uuid.NewV7())
	got, err := f.st.TasksGet(f.ctx, append([]uuid.UUID{missing}, ids...))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d tasks, want the 3 that exist", len(got))
	}
	for _, id := range ids {
		one, err := f.st.TaskGet(f.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got[id], one) {
			t.Errorf("task %s: TasksGet %+v, TaskGet %+v", id, got[id], one)
		}
	}
	if none, err := f.st.TasksGet(f.ctx, nil); err != nil || len(none) != 0 {
		t.Errorf("no ids: %v, %v", none, err)
	}
}
