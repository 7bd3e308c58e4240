package store_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/lifecycle"
	"github.com/tasker/tasker/internal/store"
)

// TaskIdentitiesTx looks up a creation batch's identities at once; the
// creations that follow in the transaction find committed tasks, their own
// batch's earlier tasks and tasks flushed since the lookup, and create the
// rest.
func TestTaskIdentitiesTxServesTheBatch(t *testing.T) {
	t.Parallel()
	f := newCreateFixture(t)
	var old store.Task
	if err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
		var err error
		old, _, _, err = f.st.TaskCreateTx(f.ctx, tx, f.newTask("old"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
		if err := f.st.TaskIdentitiesTx(f.ctx, tx, []string{"old", "new", "flushed", "new"}); err != nil {
			return err
		}
		got, _, created, err := f.st.TaskCreateTx(f.ctx, tx, f.newTask("old"))
		if err != nil || created || got.UUID != old.UUID {
			return fmt.Errorf("committed identity: task %s created=%v err=%v, want task %s", got.UUID, created, err, old.UUID)
		}
		first, _, created, err := f.st.TaskCreateTx(f.ctx, tx, f.newTask("new"))
		if err != nil || !created {
			return fmt.Errorf("new identity: created=%v err=%v", created, err)
		}
		again, _, created, err := f.st.TaskCreateTx(f.ctx, tx, f.newTask("new"))
		if err != nil || created || again.UUID != first.UUID {
			return fmt.Errorf("the batch's own identity: task %s created=%v err=%v, want task %s", again.UUID, created, err, first.UUID)
		}
		flushed, _, created, err := f.st.TaskCreateTx(f.ctx, tx, f.newTask("flushed"))
		if err != nil || !created {
			return fmt.Errorf("identity to flush: created=%v err=%v", created, err)
		}
		// A statement writes the pending creations; the lookup made
		// before them no longer holds for their identities.
		if err := store.ExecTx(f.ctx, tx, `SELECT 1`); err != nil {
			return err
		}
		again, _, created, err = f.st.TaskCreateTx(f.ctx, tx, f.newTask("flushed"))
		if err != nil || created || again.UUID != flushed.UUID {
			return fmt.Errorf("identity flushed in the transaction: task %s created=%v err=%v, want task %s", again.UUID, created, err, flushed.UUID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, err := f.pool.Query(f.ctx, `SELECT identity_hash, count(*) FROM tasker.tasks GROUP BY 1 ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var counts []string
	for rows.Next() {
		var h string
		var n int
		if err := rows.Scan(&h, &n); err != nil {
			t.Fatal(err)
		}
		counts = append(counts, fmt.Sprintf("%s:%d", h, n))
	}
	if fmt.Sprint(counts) != "[flushed:1 new:1 old:1]" {
		t.Fatalf("tasks by identity %v, want one each of flushed, new and old", counts)
	}
}

// A task committed by another transaction after the batch's lookup makes
// the batch's insert fail; the transaction is run again, looks again, and
// returns that task.
func TestTaskIdentitiesTxRace(t *testing.T) {
	t.Parallel()
	f := newCreateFixture(t)
	attempts := 0
	var loser, winner store.Task
	var loserCreated bool
	err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
		attempts++
		if err := f.st.TaskIdentitiesTx(f.ctx, tx, []string{"raced"}); err != nil {
			return err
		}
		if attempts == 1 {
			if err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
				var err error
				winner, _, _, err = f.st.TaskCreateTx(f.ctx, tx, f.newTask("raced"))
				return err
			}); err != nil {
				return fmt.Errorf("the winner: %w", err)
			}
		}
		var err error
		loser, _, loserCreated, err = f.st.TaskCreateTx(f.ctx, tx, f.newTask("raced"))
		return err
	})
	if err != nil {
		t.Fatalf("the losing creation failed: %v", err)
	}
	if attempts != 2 || loserCreated || loser.UUID != winner.UUID {
		t.Fatalf("losing creation: %d attempts, created=%v, task %s; want 2 attempts, created=false, task %s", attempts, loserCreated, loser.UUID, winner.UUID)
	}
}

// The domain event data of tasks created in the transaction comes from the
// write buffer, without writing them, and is what the database returns
// once they are written: states, step counts, the last transition's reason
// and, for a task finished at once, its end.
func TestCreatedTasksDomainEventDataFromTheBuffer(t *testing.T) {
	t.Parallel()
	f := newCreateFixture(t)
	wake := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var committed store.Task
	if err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
		var err error
		committed, _, err = f.start(tx, f.newTask("committed"), wake)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
		started, _, err := f.start(tx, f.newTask("started"), wake)
		if err != nil {
			return err
		}
		fresh, _, _, err := f.st.TaskCreateTx(f.ctx, tx, f.newTask("fresh"))
		if err != nil {
			return err
		}
		ended, _, _, err := f.st.TaskCreateTx(f.ctx, tx, f.newTask("ended"))
		if err != nil {
			return err
		}
		if ok, _, err := f.st.TaskTransitionTx(f.ctx, tx, store.TaskMove{UUID: ended.UUID, From: lifecycle.TaskPending,
			To: lifecycle.TaskCancelled, Meta: map[string]any{"trigger": "cancel", "reason": "changed my mind"}}); err != nil || !ok {
			return fmt.Errorf("cancel: ok=%v err=%v", ok, err)
		}
		ids := []uuid.UUID{started.UUID, fresh.UUID, ended.UUID}
		buffered, steps, err := f.st.DomainEventDataTx(f.ctx, tx, ids, nil, nil, nil)
		if err != nil {
			return err
		}
		if n := store.PendingCreates(tx); n != 3 || len(steps) != 0 {
			return fmt.Errorf("after the buffered read: %d creations pending, %d steps; want 3 and 0", n, len(steps))
		}
		// Any other statement writes them; the same read then goes to
		// the database.
		if err := store.ExecTx(f.ctx, tx, `SELECT 1`); err != nil {
			return err
		}
		read, err := f.st.DomainEventTasksTx(f.ctx, tx, ids)
		if err != nil {
			return err
		}
		if len(read) != len(buffered) {
			return fmt.Errorf("%d tasks from the buffer, %d from the database", len(buffered), len(read))
		}
		byID := map[uuid.UUID]string{}
		for _, d := range read {
			byID[d.UUID] = canonicalEventTask(t, d)
		}
		for _, d := range buffered {
			if got, want := canonicalEventTask(t, d), byID[d.UUID]; got != want {
				return fmt.Errorf("task %s from the buffer:\n%s\nfrom the database:\n%s", d.UUID, got, want)
			}
		}
		want := map[uuid.UUID]string{started.UUID: "steps_in_process 4 map[enqueued:1 pending:3] ",
			fresh.UUID: "pending 4 map[pending:4] ", ended.UUID: "cancelled 4 map[pending:4] changed my mind"}
		for _, d := range buffered {
			if got := fmt.Sprintf("%s %d %v %s", d.State, d.StepCount, d.StepCounts, d.TransitionReason); got != want[d.UUID] {
				return fmt.Errorf("task %s: %q, want %q", d.UUID, got, want[d.UUID])
			}
			if (d.CompletedAt != nil) != (d.UUID == ended.UUID) {
				return fmt.Errorf("task %s: completed_at %v", d.UUID, d.CompletedAt)
			}
		}

		// With a task that is not pending in the buffer, the read goes
		// to the database.
		if _, _, _, err := f.st.TaskCreateTx(f.ctx, tx, f.newTask("mixed")); err != nil {
			return err
		}
		mixed, _, err := f.st.DomainEventDataTx(f.ctx, tx, nil, []uuid.UUID{committed.UUID}, nil, nil)
		if err != nil {
			return err
		}
		if len(mixed) != 1 || mixed[0].State != lifecycle.TaskStepsInProcess || store.PendingCreates(tx) != 0 {
			return fmt.Errorf("a committed task: %+v, %d creations pending", mixed, store.PendingCreates(tx))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// canonicalEventTask renders d with its times in UTC and its context as
// jsonb would order it, for comparing a row read back with one built in Go.
func canonicalEventTask(t *testing.T, d store.DomainEventTask) string {
	t.Helper()
	utc := func(p *time.Time) {
		if p != nil {
			*p = p.UTC()
		}
	}
	utc(&d.CreatedAt)
	utc(&d.UpdatedAt)
	utc(&d.StateEnteredAt)
	utc(d.CompletedAt)
	utc(d.WakeAt)
	var c any
	if err := json.Unmarshal(d.Context, &c); err != nil {
		t.Fatal(err)
	}
	d.Context, _ = json.Marshal(c)
	b, err := json.MarshalIndent(d, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The brief read of domain event data gives what the full read gives for
// the fields it has (state, start, end, step counts), marks its rows, and
// reads a task asked for both ways once, in full.
func TestDomainEventBriefTasksAgreeWithFull(t *testing.T) {
	t.Parallel()
	f := newCreateFixture(t)
	wake := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var started, fresh, ended store.Task
	if err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
		var err error
		if started, _, err = f.start(tx, f.newTask("started"), wake); err != nil {
			return err
		}
		if fresh, _, _, err = f.st.TaskCreateTx(f.ctx, tx, f.newTask("fresh")); err != nil {
			return err
		}
		if ended, _, _, err = f.st.TaskCreateTx(f.ctx, tx, f.newTask("ended")); err != nil {
			return err
		}
		ok, _, err := f.st.TaskTransitionTx(f.ctx, tx, store.TaskMove{UUID: ended.UUID, From: lifecycle.TaskPending,
			To: lifecycle.TaskCancelled, Meta: map[string]any{"trigger": "cancel", "reason": "changed my mind"}})
		if err == nil && !ok {
			err = errors.New("cancel lost")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ids := []uuid.UUID{started.UUID, fresh.UUID, ended.UUID}
	brief := func(d store.DomainEventTask) string {
		end := "-"
		if d.CompletedAt != nil {
			end = d.CompletedAt.UTC().Format(time.RFC3339Nano)
		}
		return fmt.Sprintf("%s %s %s %s %d %v", d.UUID, d.State, d.CreatedAt.UTC().Format(time.RFC3339Nano), end,
			d.StepCount, d.StepCounts)
	}
	err := f.st.InTx(f.ctx, func(tx store.Tx) error {
		full, _, err := f.st.DomainEventDataTx(f.ctx, tx, ids, nil, nil, nil)
		if err != nil {
			return err
		}
		short, _, err := f.st.DomainEventDataTx(f.ctx, tx, nil, ids, nil, nil)
		if err != nil {
			return err
		}
		if len(full) != 3 || len(short) != 3 {
			return fmt.Errorf("%d full rows and %d brief ones, want 3 of each", len(full), len(short))
		}
		want := map[uuid.UUID]string{}
		for _, d := range full {
			if d.Brief || d.Context == nil || d.Name == "" {
				return fmt.Errorf("full row %+v", d)
			}
			want[d.UUID] = brief(d)
		}
		for _, d := range short {
			if !d.Brief || d.Context != nil || d.Name != "" || d.TransitionReason != "" {
				return fmt.Errorf("brief row with more than its fields: %+v", d)
			}
			if got := brief(d); got != want[d.UUID] {
				return fmt.Errorf("brief row\n%s\nfull row\n%s", got, want[d.UUID])
			}
		}
		if got := want[started.UUID]; !strings.Contains(got, " steps_in_process ") || !strings.HasSuffix(got, " - 4 map[enqueued:1 pending:3]") {
			return fmt.Errorf("started task: %s", got)
		}
		if got := want[ended.UUID]; strings.Contains(got, " - ") {
			return fmt.Errorf("cancelled task without an end: %s", got)
		}
		// Asked for both ways: once, in full.
		both, _, err := f.st.DomainEventDataTx(f.ctx, tx, []uuid.UUID{ended.UUID}, ids, nil, nil)
		if err != nil {
			return err
		}
		fullOnes := 0
		for _, d := range both {
			if d.UUID == ended.UUID {
				fullOnes++
				if d.Brief || d.TransitionReason != "changed my mind" {
					return fmt.Errorf("the task asked for in full: %+v", d)
				}
			}
		}
		if len(both) != 3 || fullOnes != 1 {
			return fmt.Errorf("%d rows, %d of the task asked for both ways; want 3 and 1", len(both), fullOnes)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
