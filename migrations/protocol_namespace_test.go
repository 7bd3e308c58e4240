package migrations_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/orchestration"
)

// TestWorkerRoleServesOnlyItsNamespacesSteps (00021): a worker login of
// namespace A that knows the UUID of a step of namespace B can neither claim
// it (and so read B's task context) nor, knowing the claimant's worker id,
// heartbeat, release or submit for it. Its own namespace's steps work as
// before, and the unchecked definitions are its owner's only.
func TestWorkerRoleServesOnlyItsNamespacesSteps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, wp := workerOfA(t, "fence", nsA, nsB)
	taskA := h.Submit(orchestration.TaskRequest{Namespace: nsA, Name: "fence", Context: json.RawMessage(`{"secret":"a"}`)})
	taskB := h.Submit(orchestration.TaskRequest{Namespace: nsB, Name: "fence", Context: json.RawMessage(`{"secret":"b"}`)})
	firstStep := func(task uuid.UUID) uuid.UUID {
		return scalar[uuid.UUID](t, h.Pool, `SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = 'first'`, task)
	}
	stepA, stepB := firstStep(taskA.UUID), firstStep(taskB.UUID)
	state := func(step uuid.UUID) string {
		return scalar[string](t, h.Pool, `SELECT state || ' ' || coalesce(claimed_by, '-') FROM tasker.workflow_steps WHERE step_uuid = $1`, step)
	}
	if s := state(stepB); s != "enqueued -" {
		t.Fatalf("B's first step is %q, want enqueued and unclaimed", s)
	}

	refused := func(sql string, args ...any) {
		t.Helper()
		_, err := wp.Exec(ctx, sql, args...)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "namespace "+nsB) {
			t.Errorf("%s: want 42501 naming namespace %s, got %v", sql, nsB, err)
		}
	}

	// B's step cannot be claimed, alone, through step_claim, or in a batch
	// with A's step (the whole call fails: nothing of it is claimed).
	refused(`SELECT * FROM tasker.step_claim_batch(ARRAY[$1::uuid], ARRAY[1], 'intruder', 30)`, stepB)
	refused(`SELECT * FROM tasker.step_claim($1, 1, 'intruder', 30)`, stepB)
	refused(`SELECT * FROM tasker.step_claim_batch(ARRAY[$1::uuid, $2::uuid], ARRAY[1, 1], 'intruder', 30)`, stepA, stepB)
	if a, b := state(stepA), state(stepB); a != "enqueued -" || b != "enqueued -" {
		t.Errorf("after the refused claims: A's step %q, B's %q; want both enqueued and unclaimed", a, b)
	}

	// B's own worker (here the owner) holds B's step; A's worker cannot
	// touch the claim even with its worker id.
	var claimed bool
	if err := h.Pool.QueryRow(ctx, `SELECT claimed FROM tasker.step_claim($1, 1, 'b-worker', 30)`, stepB).Scan(&claimed); err != nil || !claimed {
		t.Fatalf("the owner claims B's step: %v, %v", claimed, err)
	}
	refused(`SELECT tasker.step_heartbeat($1, 1, 'b-worker', 300)`, stepB)
	refused(`SELECT tasker.step_release($1, 1, 'b-worker')`, stepB)
	refused(`SELECT tasker.step_submit_result($1, 1, 'b-worker', true, '{"forged":true}'::jsonb, NULL)`, stepB)
	refused(`SELECT * FROM tasker.step_submit_results(ARRAY[$1::uuid], ARRAY[1], 'b-worker', ARRAY[true],
	                 ARRAY['{"forged":true}'::jsonb], ARRAY[NULL::jsonb], ARRAY[NULL::bigint], ARRAY['{}'::jsonb])`, stepB)
	if s := state(stepB); s != "in_progress b-worker" {
		t.Errorf("B's step is %q after the refused calls, want in_progress b-worker", s)
	}
	if n := scalar[int](t, h.Pool, `SELECT count(*) FROM pgmq.q_orchestration_step_results WHERE message->>'step_uuid' = $1`, stepB.String()); n != 0 {
		t.Errorf("%d result notices for B's step, want none", n)
	}

	// A's worker runs its own step through the same functions.
	var taskCtx json.RawMessage
	if err := wp.QueryRow(ctx, `SELECT claimed, task_context FROM tasker.step_claim_batch(ARRAY[$1::uuid], ARRAY[1], 'a-worker', 30)`,
		stepA).Scan(&claimed, &taskCtx); err != nil || !claimed || !strings.Contains(string(taskCtx), `"a"`) {
		t.Fatalf("A's worker claims A's step: claimed %v, context %s, %v", claimed, taskCtx, err)
	}
	for _, sql := range []string{
		`SELECT tasker.step_heartbeat($1, 1, 'a-worker', 30)`,
		`SELECT tasker.step_submit_result($1, 1, 'a-worker', true, '{"ok":true}'::jsonb, NULL)`,
	} {
		if !scalar[bool](t, wp, sql, stepA) {
			t.Errorf("%s: false for A's own held step", sql)
		}
	}

	// The definitions behind the checks are not the worker's to call.
	for _, fn := range []string{"tasker.step_claim_batch_unchecked", "tasker.step_heartbeat_unchecked", "tasker.step_release_unchecked",
		"tasker.step_submit_result_unchecked", "tasker.step_submit_results_unchecked", "tasker.assert_serves_steps"} {
		denied(t, wp, callWithNulls(t, h.Pool, fn))
	}
	checkProtocolUnchanged(t, h.Pool)
}

// checkProtocolUnchanged: the guarded functions keep the signatures and
// result types clients call them with.
func checkProtocolUnchanged(t *testing.T, db *pgxpool.Pool) {
	t.Helper()
	for fn, want := range map[string]string{
		"tasker.step_claim_batch(uuid[],integer[],text,integer)":                                       "TABLE(claimed boolean, reason text, step_uuid uuid, task_uuid uuid, namespace text, step_name text, handler text, attempt integer, max_attempts integer, timeout_seconds integer, correlation_id uuid, traceparent text, task_context jsonb, step_inputs jsonb, dependency_results jsonb)",
		"tasker.step_submit_results(uuid[],integer[],text,boolean[],jsonb[],jsonb[],bigint[],jsonb[])": "TABLE(step_uuid uuid, accepted boolean)",
		"tasker.step_submit_result(uuid,integer,text,boolean,jsonb,jsonb,bigint,jsonb)":                "boolean",
		"tasker.step_heartbeat(uuid,integer,text,integer,bigint)":                                      "boolean",
		"tasker.step_release(uuid,integer,text,bigint,boolean)":                                        "boolean",
	} {
		if got := scalar[string](t, db, `SELECT pg_get_function_result($1::regprocedure)`, fn); got != want {
			t.Errorf("%s returns %s, want %s", fn, got, want)
		}
	}
}
