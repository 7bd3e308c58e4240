package store_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/store"
)

// TestLockedStepReadLeavesResultsOut: the orchestrator's read of a locked
// task's steps (TasksLockWithStepsTx) carries everything StepsOfTasksTx
// does except inputs, results and parents, last_error only for a step
// whose failure is being processed or that failed for good, and results
// only for a step it is asked for that waits in enqueued_for_orchestration:
// a task's results, however large, are not read back by every result of
// the task, and its edges are not read at all (the engine has them from
// the template).
func TestLockedStepReadLeavesResultsOut(t *testing.T) {
	t.Parallel()
	f := newCreateFixture(t)
	nt := f.newTask("locked-read")
	if err := f.st.InTx(f.ctx, func(tx store.Tx) error {
		_, _, err := f.start(tx, nt, time.Now().Add(time.Hour))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	big := `{"blob": "` + strings.Repeat("x", 64<<10) + `"}`
	errJSON := `{"message": "boom", "retryable": false}`
	set := func(name, state, results, lastErr string) {
		t.Helper()
		if _, err := f.pool.Exec(f.ctx, `UPDATE tasker.workflow_steps SET state = $3, inputs = '{"in": 1}',
		       results = nullif($4, '')::jsonb, last_error = $5::jsonb WHERE task_uuid = $1 AND name = $2`,
			nt.UUID, name, state, results, lastErr); err != nil {
			t.Fatal(err)
		}
	}
	set("a", "complete", big, errJSON) // an earlier attempt's error stays on the row
	set("b", "error", "", errJSON)
	set("c", "enqueued_as_error_for_orchestration", "", errJSON)
	set("d", "enqueued_for_orchestration", `{"r": 1}`, errJSON)

	// Results asked for a, b and d: only d waits for its result to be
	// processed.
	var ids []uuid.UUID
	for _, name := range []string{"a", "b", "d"} {
		var id uuid.UUID
		if err := f.pool.QueryRow(f.ctx, `SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = $2`, nt.UUID, name).Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	var want []store.Step
	var locked []store.Step
	if err := f.st.InTx(f.ctx, func(tx store.Tx) error {
		tasks, byTask, err := f.st.TasksLockWithStepsTx(f.ctx, tx, []uuid.UUID{nt.UUID}, ids, 0)
		if err != nil || len(tasks) != 1 {
			t.Fatalf("lock: %d tasks, %v", len(tasks), err)
		}
		locked = byTask[nt.UUID]
		m, err := f.st.StepsOfTasksTx(f.ctx, tx, []uuid.UUID{nt.UUID})
		want = m[nt.UUID]
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(locked) != 4 || len(want) != 4 {
		t.Fatalf("%d locked steps, %d in the full read", len(locked), len(want))
	}
	if len(want[0].Results) < 64<<10 || want[0].Inputs == nil {
		t.Fatalf("fixture: the full read has no large result (%d bytes) or inputs", len(want[0].Results))
	}
	withParents := 0
	for _, s := range want {
		withParents += min(len(s.Parents), 1)
	}
	if withParents == 0 {
		t.Fatal("fixture: no step has parents in the full read")
	}
	for i, s := range locked {
		if s.Name == "d" {
			if !jsonEqual(s.Results, `{"r": 1}`) {
				t.Errorf("step d (enqueued_for_orchestration, asked for): results %s, want its result", s.Results)
			}
		} else if s.Results != nil {
			t.Errorf("step %s (%s): the locked read carries results (%d bytes)", s.Name, s.State, len(s.Results))
		}
		if s.Inputs != nil {
			t.Errorf("step %s: the locked read carries inputs", s.Name)
		}
		if s.Parents != nil {
			t.Errorf("step %s: the locked read carries parents %v", s.Name, s.Parents)
		}
		failing := s.Name == "b" || s.Name == "c"
		if failing && !jsonEqual(s.LastError, errJSON) {
			t.Errorf("step %s (%s): last_error %s, want %s", s.Name, s.State, s.LastError, errJSON)
		}
		if !failing && s.LastError != nil {
			t.Errorf("step %s (%s): last_error read (%s)", s.Name, s.State, s.LastError)
		}
		w := want[i]
		w.Results, w.Inputs, w.LastError, w.Parents = s.Results, s.Inputs, s.LastError, s.Parents
		if !reflect.DeepEqual(s, w) {
			t.Errorf("step %s differs from the full read beyond inputs, results, last_error and parents:\n got %+v\nwant %+v", s.Name, s, w)
		}
	}
}

func jsonEqual(a []byte, b string) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal([]byte(b), &y) == nil && reflect.DeepEqual(x, y)
}

// TestLockedTaskReadLeavesContextOut: the tasks TasksLockWithStepsTx locks
// for result processing carry every column TaskGet reads except the
// context, tags, priority, initiator, source system, reason and parent
// correlation id: a context of up to 1 MiB is not read back by every
// result of its task.
func TestLockedTaskReadLeavesContextOut(t *testing.T) {
	t.Parallel()
	f := newCreateFixture(t)
	nt := f.newTask("locked-task-read")
	nt.Context = []byte(`{"blob": "` + strings.Repeat("x", 64<<10) + `"}`)
	parent := uuid.Must(uuid.NewV7())
	nt.ParentCorrelationID, nt.Reason = &parent, "because"
	if err := f.st.InTx(f.ctx, func(tx store.Tx) error {
		_, _, err := f.start(tx, nt, time.Now().Add(time.Hour))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want, err := f.st.TaskGet(f.ctx, nt.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Context) < 64<<10 || len(want.Tags) == 0 || want.Priority == 0 || want.Initiator == "" ||
		want.SourceSystem == "" || want.Reason == "" || want.ParentCorrelationID == nil || want.WakeAt == nil {
		t.Fatalf("fixture: the full read lacks a column to leave out or the wake time: %+v", want)
	}
	var got store.Task
	if err := f.st.InTx(f.ctx, func(tx store.Tx) error {
		tasks, _, err := f.st.TasksLockWithStepsTx(f.ctx, tx, []uuid.UUID{nt.UUID}, nil, 0)
		if err == nil && len(tasks) != 1 {
			t.Fatalf("lock: %d tasks", len(tasks))
		}
		if err == nil {
			got = tasks[0]
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got.Context != nil || got.Tags != nil || got.Priority != 0 || got.Initiator != "" || got.SourceSystem != "" ||
		got.Reason != "" || got.ParentCorrelationID != nil {
		t.Errorf("the locked read carries a column result processing does not use: %+v", got)
	}
	w := want
	w.Context, w.Tags, w.Priority, w.Initiator, w.SourceSystem, w.Reason, w.ParentCorrelationID = nil, nil, 0, "", "", "", nil
	if !reflect.DeepEqual(got, w) {
		t.Errorf("the locked read differs from TaskGet's beyond the columns it leaves out:\n got %+v\nwant %+v", got, w)
	}
}
