package migrations_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
)

const cpTemplate = `
namespace: cp_grow
name: pair
version: 1.0.0
steps:
  - name: a
    handler: cp.a
  - name: b
    handler: cp.b
    depends_on: [a]
`

// TestClaimReadsParentsByKeyAsTablesGrow (00016): a session that first
// claimed while workflow_steps was tiny keeps its generic plan; claiming a
// step with a parent after the table has grown still reads a handful of
// index entries, not the whole table (the plan before 00016 read every step
// through the primary key for each claimed step with a parent).
func TestClaimReadsParentsByKeyAsTablesGrow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(cpTemplate)
	conn, err := pgx.Connect(ctx, h.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	stepOf := func(task uuid.UUID, name string) uuid.UUID {
		var id uuid.UUID
		if err := h.Pool.QueryRow(ctx, `SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = $2`, task, name).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	claim := func(step uuid.UUID) {
		t.Helper()
		var claimed bool
		if err := conn.QueryRow(ctx, `SELECT claimed FROM tasker.step_claim_batch($1::uuid[], '{1}', 'w', 300)`,
			[]uuid.UUID{step}).Scan(&claimed); err != nil || !claimed {
			t.Fatalf("claim %s: %v, %v", step, claimed, err)
		}
	}

	// The session's first claim, with 40 steps in the table over a few
	// pages (rows rewritten by their moves), analyzed as autovacuum does
	// early on, and the edges not analyzed yet: the state in which a
	// benchmark's worker connections made their plans.
	first := h.Submit(orchestration.TaskRequest{Namespace: "cp_grow", Name: "pair"}).UUID
	for i := 0; i < 19; i++ {
		h.Submit(orchestration.TaskRequest{Namespace: "cp_grow", Name: "pair"})
	}
	for i := 0; i < 3; i++ {
		if _, err := h.Pool.Exec(ctx, `UPDATE tasker.workflow_steps SET updated_at = now()`); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.Pool.Exec(ctx, `ANALYZE tasker.workflow_steps`); err != nil {
		t.Fatal(err)
	}
	claim(stepOf(first, "a"))

	// The table grows; the first task's second step becomes claimable.
	for i := 0; i < 230; i++ {
		h.Submit(orchestration.TaskRequest{Namespace: "cp_grow", Name: "pair"})
	}
	if _, err := h.Pool.Exec(ctx, `UPDATE tasker.workflow_steps SET state = 'enqueued' WHERE task_uuid = $1 AND name = 'b'`, first); err != nil {
		t.Fatal(err)
	}

	// In one transaction, so that the session's statistics counters are not
	// reported (and reset) between the two readings (sessionStat).
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	read := func() int64 { return sessionStat(t, tx, "tuples_returned", "tasker.workflow_steps_pkey") }
	before := read()
	var claimed bool
	var deps []byte
	if err := tx.QueryRow(ctx, `SELECT claimed, dependency_results FROM tasker.step_claim_batch($1::uuid[], '{1}', 'w', 300)`,
		[]uuid.UUID{stepOf(first, "b")}).Scan(&claimed, &deps); err != nil || !claimed {
		t.Fatalf("claim b: %v, %v", claimed, err)
	}
	if string(deps) != `{"a": null}` {
		t.Errorf("dependency results %s, want {\"a\": null}", deps)
	}
	if n := read() - before; n > 20 {
		t.Errorf("claiming one step with one parent read %d primary-key entries of workflow_steps (500 steps); want a handful", n)
	} else {
		t.Logf("claiming one step with one parent read %d primary-key entries of workflow_steps", n)
	}
}
