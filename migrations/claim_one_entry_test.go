package migrations_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
)

// claimRow is one answer of step_claim_batch.
type claimRow struct {
	step    uuid.UUID
	claimed bool
	reason  string
	attempt *int
	context *string
}

// TestClaimAnswersOneEntryPerStep (00027): given several entries for one
// step, step_claim_batch claims the step once, through the first entry with
// the highest attempt, and answers only that entry claimed (with the task
// context); the others come back not claimed with a reason, so that a
// client that runs every claimed row and deletes the messages of the
// others runs the handler once. Rows come back in the order of the entries.
func TestClaimAnswersOneEntryPerStep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const ns = "claim_once"
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(rolesTemplate(ns, "once", "1.0.0"))
	first := func() uuid.UUID {
		task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "once"})
		return scalar[uuid.UUID](t, h.Pool, `SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = 'first'`, task.UUID)
	}
	dup, stale, single, missing := first(), first(), first(), uuid.New()

	steps := []uuid.UUID{stale, dup, single, dup, missing, stale}
	attempts := []int32{0, 1, 1, 1, 1, 1}
	rows, err := h.Pool.Query(ctx, `SELECT step_uuid, claimed, reason, attempt, task_context::text
		FROM tasker.step_claim_batch($1::uuid[], $2::int[], 'w', 30)`, steps, attempts)
	if err != nil {
		t.Fatal(err)
	}
	var got []claimRow
	for rows.Next() {
		var r claimRow
		if err := rows.Scan(&r.step, &r.claimed, &r.reason, &r.attempt, &r.context); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		claimed bool
		reason  string
	}{
		{false, "message is for attempt 0 but the step has had 1"},
		{true, ""},
		{true, ""},
		{false, "step claimed through another entry of this call for attempt 1"},
		{false, "step not found"},
		{true, ""},
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows for %d entries: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.step != steps[i] || g.claimed != w.claimed || g.reason != w.reason || (g.context != nil) != w.claimed {
			ctxText := "<nil>"
			if g.context != nil {
				ctxText = *g.context
			}
			t.Errorf("entry %d (attempt %d): step %s claimed %v reason %q context %s; want step %s claimed %v reason %q, a context only when claimed",
				i, attempts[i], g.step, g.claimed, g.reason, ctxText, steps[i], w.claimed, w.reason)
		}
	}
	// Each step was claimed once, at attempt 1.
	for _, s := range []uuid.UUID{dup, stale, single} {
		if n := scalar[int](t, h.Pool, `SELECT attempts FROM tasker.workflow_steps WHERE step_uuid = $1 AND state = 'in_progress'`, s); n != 1 {
			t.Errorf("step %s has had %d attempts, want 1", s, n)
		}
		if n := scalar[int](t, h.Pool, `SELECT count(*)::int FROM tasker.workflow_step_transitions WHERE step_uuid = $1 AND to_state = 'in_progress'`, s); n != 1 {
			t.Errorf("step %s has %d claim transitions, want 1", s, n)
		}
	}
	checkProtocolUnchanged(t, h.Pool)
}

// TestClaimMigrationDownAndUpAgain (00027): Down puts back exactly the claim
// of a database migrated to 00026, and Up again exactly what it made; the
// layering and grants stay.
func TestClaimMigrationDownAndUpAgain(t *testing.T) {
	t.Parallel()
	downAndUpAgain(t, 26, func(db *pgxpool.Pool) []string {
		return protocolFunctions(t, db, "step_claim_batch", "step_claim_batch_unchecked", "step_claim")
	}, func(up, at26 []string) {
		if len(up) != 3 {
			t.Fatalf("claim functions after up:\n%s\nwant three", strings.Join(up, "\n"))
		}
	})
}
