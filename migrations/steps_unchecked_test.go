package migrations_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
)

const chainTemplate = `
namespace: su_chain
name: xyz
version: 1.0.0
steps:
  - name: x
    handler: su.x
  - name: "y"
    handler: su.y
    depends_on: [x]
  - name: z
    handler: su.z
    depends_on: ["y"]
`

// TestStepsAndEdgesAreNotCheckedButDieWithTheirRows (00033): inserting a
// step or an edge probes neither the tasks' nor the steps' primary key (no
// foreign-key check), and deleting a step still deletes the edges that name
// it, either way, and deleting a task its steps, their edges and every
// transition, as the foreign keys' ON DELETE CASCADE did.
func TestStepsAndEdgesAreNotCheckedButDieWithTheirRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(chainTemplate)
	doomed := h.Submit(orchestration.TaskRequest{Namespace: "su_chain", Name: "xyz"}).UUID
	kept := h.Submit(orchestration.TaskRequest{Namespace: "su_chain", Name: "xyz", Context: []byte(`{"k":1}`)}).UUID

	count := func(sql string, args ...any) int { t.Helper(); return countOf(t, h.Pool, sql, args...) }
	stepOf := func(task uuid.UUID, name string) uuid.UUID { t.Helper(); return stepNamed(t, h.Pool, task, name) }
	x, y, z := stepOf(doomed, "x"), stepOf(doomed, "y"), stepOf(doomed, "z")

	// Inserting a step and an edge probes no primary key of the parents.
	tx, err := h.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	scans := func() (steps, tasks int64) {
		return sessionStat(t, tx, "numscans", "tasker.workflow_steps_pkey"), sessionStat(t, tx, "numscans", "tasker.tasks_pkey")
	}
	steps0, tasks0 := scans()
	extra := uuid.Must(uuid.NewV7())
	if _, err := tx.Exec(ctx, `
		INSERT INTO tasker.workflow_steps (step_uuid, task_uuid, name, handler, position, state,
		                                   max_attempts, backoff_base_ms, backoff_cap_ms, timeout_seconds)
		VALUES ($1, $2, 'extra', 'su.extra', 9, 'pending', 1, 100, 1000, 60)`, extra, doomed); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO tasker.workflow_step_edges (task_uuid, from_step, to_step) VALUES ($3, $1, $2)`, z, extra, doomed); err != nil {
		t.Fatal(err)
	}
	steps1, tasks1 := scans()
	if steps1 != steps0 || tasks1 != tasks0 {
		t.Errorf("inserting a step and an edge scanned workflow_steps_pkey %d and tasks_pkey %d times; want 0 (no foreign-key checks)",
			steps1-steps0, tasks1-tasks0)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	const edgesOf = `SELECT count(*) FROM tasker.workflow_step_edges WHERE from_step = $1 OR to_step = $1`
	keptEdges := count(`SELECT count(*) FROM tasker.workflow_step_edges e JOIN tasker.workflow_steps s ON s.step_uuid = e.from_step
	                     WHERE s.task_uuid = $1`, kept)
	if count(edgesOf, x) != 1 || count(edgesOf, y) != 2 || count(edgesOf, z) != 1 || keptEdges != 2 {
		t.Fatalf("fixture: edges of x %d, y %d, z %d, of the other task %d; want 1, 2, 1, 2",
			count(edgesOf, x), count(edgesOf, y), count(edgesOf, z), keptEdges)
	}

	// A step deleted on its own takes the edges from it and to it along.
	if _, err := h.Pool.Exec(ctx, `DELETE FROM tasker.workflow_steps WHERE step_uuid = $1`, y); err != nil {
		t.Fatal(err)
	}
	if n := count(edgesOf, y); n != 0 {
		t.Errorf("deleted step y is still named by %d edges", n)
	}
	if n := count(`SELECT count(*) FROM tasker.workflow_step_transitions WHERE step_uuid = $1`, y); n != 0 {
		t.Errorf("deleted step y still has %d transition rows", n)
	}

	// A task deleted takes its steps, their edges and transitions, and its
	// own transitions along; the other task's rows stay.
	keptRows := rowsOf(t, h.Pool, kept)
	if _, err := h.Pool.Exec(ctx, `DELETE FROM tasker.tasks WHERE task_uuid = $1`, doomed); err != nil {
		t.Fatal(err)
	}
	if got := rowsOf(t, h.Pool, doomed); got != [4]int{} {
		t.Errorf("after the task's delete: steps, edges, step and task transitions %v; want none", got)
	}
	if got := rowsOf(t, h.Pool, kept); got != keptRows {
		t.Errorf("the other task's rows changed: %v -> %v", keptRows, got)
	}
	orphans := count(`
		SELECT (SELECT count(*) FROM tasker.workflow_steps s
		         WHERE NOT EXISTS (SELECT FROM tasker.tasks k WHERE k.task_uuid = s.task_uuid))
		     + (SELECT count(*) FROM tasker.workflow_step_edges e
		         WHERE NOT EXISTS (SELECT FROM tasker.workflow_steps s WHERE s.step_uuid = e.from_step)
		            OR NOT EXISTS (SELECT FROM tasker.workflow_steps s WHERE s.step_uuid = e.to_step))`)
	if orphans != 0 {
		t.Errorf("%d steps or edges name no task or step", orphans)
	}
}

// rowsOf counts a task's steps, edges, step transitions and task
// transitions.
func rowsOf(t *testing.T, pool *pgxpool.Pool, task uuid.UUID) [4]int {
	t.Helper()
	var r [4]int
	if err := pool.QueryRow(context.Background(), `
		SELECT (SELECT count(*) FROM tasker.workflow_steps WHERE task_uuid = $1),
		       (SELECT count(*) FROM tasker.workflow_step_edges e
		         WHERE e.from_step IN (SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1)
		            OR e.to_step IN (SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1)),
		       (SELECT count(*) FROM tasker.workflow_step_transitions WHERE task_uuid = $1),
		       (SELECT count(*) FROM tasker.task_transitions WHERE task_uuid = $1)`, task).Scan(&r[0], &r[1], &r[2], &r[3]); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestStepsAndEdgesUncheckedDownAndUp (00033): down to 32 the foreign keys
// are back, the new triggers gone and 00018's deleting functions as they
// were; up again, the reverse.
func TestStepsAndEdgesUncheckedDownAndUp(t *testing.T) {
	t.Parallel()
	read := func(pool *pgxpool.Pool) []string {
		var out []string
		rows, err := pool.Query(context.Background(), `
			SELECT 'fk ' || conname FROM pg_constraint
			 WHERE contype = 'f' AND conrelid IN ('tasker.workflow_steps'::regclass, 'tasker.workflow_step_edges'::regclass)
			UNION ALL
			SELECT 'trigger ' || tgname FROM pg_trigger
			 WHERE tgname IN ('tasks_delete_steps', 'workflow_steps_delete_edges')
			UNION ALL
			SELECT 'function ' || p.proname || ' ' || md5(pg_get_functiondef(p.oid)) FROM pg_proc p
			 WHERE p.pronamespace = 'tasker'::regnamespace
			   AND p.proname IN ('delete_task_transitions', 'delete_step_transitions', 'delete_task_steps', 'delete_step_edges')
			ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	downAndUpAgain(t, 32, read, nil)
}

// TestDeletingTriggersReadByIndex (00033): the statement-level triggers
// that delete a deleted task's steps and transitions, and a deleted step's
// edges and transitions, read the child tables through their indexes, never
// whole: written as joins with the deleted rows (00018), the planner hashed
// those and read every row of the child table for each delete once a
// retention batch was large. Here 3,000 steps go at once from a table of
// 60,000 step transitions (rows written directly: nothing checks them).
func TestDeletingTriggersReadByIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(chainTemplate)
	task := h.Submit(orchestration.TaskRequest{Namespace: "su_chain", Name: "xyz"}).UUID
	if _, err := h.Pool.Exec(ctx, `
		WITH s AS (
			INSERT INTO tasker.workflow_steps (step_uuid, task_uuid, name, handler, position, state,
			                                   max_attempts, backoff_base_ms, backoff_cap_ms, timeout_seconds)
			SELECT gen_random_uuid(), gen_random_uuid(), 'bulk', 'su.bulk', 0, 'complete', 1, 100, 1000, 60
			  FROM generate_series(1, 20000)
			RETURNING step_uuid, task_uuid)
		INSERT INTO tasker.workflow_step_transitions (step_uuid, task_uuid, from_state, to_state, sort_key, most_recent)
		SELECT s.step_uuid, s.task_uuid, 'pending', 'complete', k, k = 3 FROM s, generate_series(1, 3) k`); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Pool.Exec(ctx, `ANALYZE tasker.workflow_steps, tasker.workflow_step_edges, tasker.workflow_step_transitions`); err != nil {
		t.Fatal(err)
	}
	tx, err := h.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	children := []string{"tasker.workflow_steps", "tasker.workflow_step_edges", "tasker.workflow_step_transitions", "tasker.task_transitions"}
	count := func() map[string]int64 {
		m := map[string]int64{}
		for _, rel := range children {
			m[rel] = sessionStat(t, tx, "numscans", rel)
		}
		return m
	}
	before := count()
	tag, err := tx.Exec(ctx, `DELETE FROM tasker.workflow_steps
		WHERE step_uuid IN (SELECT step_uuid FROM tasker.workflow_steps WHERE name = 'bulk' ORDER BY step_uuid LIMIT 3000)`)
	if err != nil || tag.RowsAffected() != 3000 {
		t.Fatalf("delete steps: %v, %d rows", err, tag.RowsAffected())
	}
	if _, err := tx.Exec(ctx, `DELETE FROM tasker.tasks WHERE task_uuid = $1`, task); err != nil {
		t.Fatal(err)
	}
	after := count()
	for _, rel := range children {
		// The step delete's own subquery reads workflow_steps by name:
		// that one scan is the test's, not a trigger's.
		allowed := int64(0)
		if rel == "tasker.workflow_steps" {
			allowed = 1
		}
		if n := after[rel] - before[rel]; n > allowed {
			t.Errorf("the deletes read %s whole %d times; want its rows found by index", rel, n-allowed)
		}
	}
	var left int
	if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM tasker.workflow_step_transitions) - 17000 * 3
		+ (SELECT count(*) FROM tasker.workflow_steps WHERE task_uuid = $1)`, task).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d transitions or steps of the deleted rows left (%v)", left, err)
	}
}
