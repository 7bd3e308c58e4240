package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
)

// TestProtocolLocksStepsInStepOrder (00034): a batch claim and a batch
// submission lock their steps as they update them, with no locking pass
// before, in step_uuid order, the order every writer of several step rows
// uses, whatever the order of the rows in the table and of the call's
// arrays. Each call is stopped at the middle step, held by another
// transaction: by then it holds the steps before it and none after it.
func TestProtocolLocksStepsInStepOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const ns = "lock_order"
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(rolesTemplate(ns, "order", "1.0.0"))
	const n = 8
	var steps []uuid.UUID
	for range n {
		task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "order"})
		steps = append(steps, scalar[uuid.UUID](t, h.Pool, `SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = 'first'`, task.UUID))
	}
	sorted := slices.Clone(steps)
	slices.SortFunc(sorted, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
	mid := sorted[n/2]
	// The call lists the steps in neither order.
	args := []uuid.UUID{sorted[5], sorted[1], sorted[7], sorted[3], sorted[0], sorted[6], sorted[2], sorted[4]}

	run := func(what string, call func(conn *pgxpool.Conn) error) {
		t.Helper()
		scrambleHeapOrder(t, h.Pool, sorted)
		holder, err := h.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = holder.Rollback(ctx) }()
		if _, err := holder.Exec(ctx, `SELECT 1 FROM tasker.workflow_steps WHERE step_uuid = $1 FOR UPDATE`, mid); err != nil {
			t.Fatal(err)
		}
		conn, err := h.Pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		pid := conn.Conn().PgConn().PID()
		done := make(chan error, 1)
		go func() { done <- call(conn) }()
		enginetest.Eventually(t, 10*time.Second, what+" waits for the middle step", func() bool {
			return scalar[bool](t, h.Pool, `SELECT coalesce((SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1), false)`, pid)
		})
		for i, s := range sorted {
			if s == mid {
				continue
			}
			locked := lockedElsewhere(t, h.Pool, s)
			if want := i < n/2; locked != want {
				t.Errorf("%s, stopped at the middle step: step %d of %d in step_uuid order locked = %v, want %v (steps before the middle locked, none after)",
					what, i+1, n, locked, want)
			}
		}
		if err := holder.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// allTrue runs a call whose one column says, for each step, whether it
	// was taken.
	allTrue := func(conn *pgxpool.Conn, sql string, args ...any) error {
		rows, err := conn.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		taken, err := pgx.CollectRows(rows, pgx.RowTo[bool])
		if err == nil && (len(taken) != n || slices.Contains(taken, false)) {
			err = fmt.Errorf("answers %v, want %d times true", taken, n)
		}
		return err
	}
	// Every step is at attempt 0: the messages are for attempt 1.
	attempts := slices.Repeat([]int32{1}, n)
	run("a claim of 8 steps", func(conn *pgxpool.Conn) error {
		return allTrue(conn, `SELECT claimed FROM tasker.step_claim_batch($1::uuid[], $2::int[], 'w', 30)`, args, attempts)
	})
	run("a submission of 8 results", func(conn *pgxpool.Conn) error {
		return allTrue(conn, `SELECT accepted FROM tasker.step_submit_results($1::uuid[], $2::int[], 'w', $3::boolean[], $4::jsonb[], $5::jsonb[], $6::bigint[], $7::jsonb[])`,
			args, attempts, slices.Repeat([]bool{true}, n), slices.Repeat([]string{`{"ok": true}`}, n), make([]*string, n), make([]*int64, n), make([]*string, n))
	})
	if got := countOf(t, h.Pool, `SELECT count(*)::int FROM tasker.workflow_steps WHERE step_uuid = ANY ($1) AND state = 'enqueued_for_orchestration'`, steps); got != n {
		t.Errorf("%d of %d steps submitted", got, n)
	}
}

// scrambleHeapOrder rewrites the steps' rows from the last in step_uuid
// order to the first, so that the table holds them in reverse: a plan that
// visits rows in the table's order (a bitmap scan) would then lock them in
// that order. The update changes an indexed column (the lease, which these
// tests do not check), so that it is not a HOT update and the indexes
// point at the new rows.
func scrambleHeapOrder(t *testing.T, db *pgxpool.Pool, sorted []uuid.UUID) {
	t.Helper()
	for i := len(sorted) - 1; i >= 0; i-- {
		if _, err := db.Exec(context.Background(), `UPDATE tasker.workflow_steps SET lease_expires_at = coalesce(lease_expires_at, now()) + interval '1 hour' WHERE step_uuid = $1`, sorted[i]); err != nil {
			t.Fatal(err)
		}
	}
	inHeap := scalar[[]uuid.UUID](t, db, `SELECT array_agg(step_uuid ORDER BY ctid) FROM tasker.workflow_steps WHERE step_uuid = ANY ($1)`, sorted)
	reversed := slices.Clone(sorted)
	slices.Reverse(reversed)
	if !slices.Equal(inHeap, reversed) {
		t.Fatalf("the table holds the steps in order %v, want the reverse of step_uuid order %v", inHeap, sorted)
	}
}

// lockedElsewhere reports whether another transaction holds step's row
// lock.
func lockedElsewhere(t *testing.T, db *pgxpool.Pool, step uuid.UUID) bool {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SELECT 1 FROM tasker.workflow_steps WHERE step_uuid = $1 FOR UPDATE NOWAIT`, step)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return false
}

// TestProtocolLockOrderDownAndUpAgain (00034): Down puts back exactly the
// claim and the batch submission of a database migrated to 00033, without
// the compare-and-swap functions, and Up again exactly what it made.
func TestProtocolLockOrderDownAndUpAgain(t *testing.T) {
	t.Parallel()
	downAndUpAgain(t, 33, func(db *pgxpool.Pool) []string {
		return protocolFunctions(t, db, "step_claim_batch", "step_submit_results", "step_claim_cas", "step_submit_cas")
	}, func(up, at33 []string) {
		if len(up) != 4 || len(at33) != 2 {
			t.Fatalf("functions after up:\n%s\nas migrated to 00033:\n%s\nwant four and two", strings.Join(up, "\n"), strings.Join(at33, "\n"))
		}
		for _, f := range up {
			// Only the protocol functions call them, as their owner; the
			// engine's own role may (as every tasker function by default).
			if strings.Contains(f, "_cas(") && (!strings.Contains(f, "execute=owner,tasker_api ") || !strings.Contains(f, "definer=false")) {
				t.Errorf("%s: want it executable by no worker role or PUBLIC, and not a definer", f)
			}
		}
	})
}
