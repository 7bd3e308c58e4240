package migrations_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
	"github.com/tasker/tasker/internal/store"
	"github.com/tasker/tasker/internal/testdb"
)

// TestEngineStatementsAreNeverJITCompiled (00032): a statement the
// orchestrator runs is not compiled however costly its plan looks, where a
// plain session on the same server compiles it; and every function of the
// engine that forces generic plans turns JIT off for itself, so that no
// caller's session settings bring it back.
func TestEngineStatementsAreNeverJITCompiled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(cpTemplate)
	task := h.Submit(orchestration.TaskRequest{Namespace: "cp_grow", Name: "pair"}).UUID

	var available bool
	if err := h.Pool.QueryRow(ctx, `SELECT pg_jit_available()`).Scan(&available); err != nil {
		t.Fatal(err)
	}
	// The orchestrator's read of a locked task's steps with their parents,
	// with every plan over the JIT threshold.
	compiled := func(pool *pgxpool.Pool) bool {
		t.Helper()
		conn, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		if _, err := conn.Exec(ctx, `SET jit_above_cost = 0`); err != nil {
			t.Fatal(err)
		}
		var plan string
		if err := conn.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON)
			SELECT s.step_uuid, coalesce((SELECT array_agg(e.from_step ORDER BY e.from_step)
			  FROM tasker.workflow_step_edges e WHERE e.to_step = s.step_uuid), '{}')
			  FROM tasker.workflow_steps s WHERE s.task_uuid = ANY ($1) ORDER BY s.task_uuid, s.position`,
			[]string{task.String()}).Scan(&plan); err != nil {
			t.Fatal(err)
		}
		var out []map[string]json.RawMessage
		if err := json.Unmarshal([]byte(plan), &out); err != nil {
			t.Fatal(err)
		}
		_, jit := out[0]["JIT"]
		return jit
	}
	if compiled(testdb.Pool(t, h.URL, store.WithNotifyAfterCommit, store.WithBinaryUUIDs, store.WithoutJIT)) {
		t.Error("a session of the engine's pool JIT-compiled the step read")
	}
	if available && !compiled(h.Pool) {
		t.Error("a plain session did not compile the step read either: this test shows nothing")
	}

	rows, err := h.Pool.Query(ctx, `
		SELECT p.oid::regprocedure::text, coalesce(array_to_string(p.proconfig, ','), '')
		  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		 WHERE n.nspname = 'tasker' AND array_to_string(p.proconfig, ',') LIKE '%plan_cache_mode=force_generic_plan%'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var fn, config string
		if err := rows.Scan(&fn, &config); err != nil {
			t.Fatal(err)
		}
		n++
		if !strings.Contains(config, "jit=off") {
			t.Errorf("%s forces generic plans but does not turn JIT off (%s)", fn, config)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d functions force generic plans; the query above is wrong", n)
	}
}
