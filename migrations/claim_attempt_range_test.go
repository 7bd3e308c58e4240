package migrations_test

import (
	"context"
	"math"
	"testing"

	"github.com/google/uuid"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
)

// TestClaimAnswersEveryStepOfABatch (00025): a message for attempt
// -2147483648 (the smallest integer) is refused like any stale message
// instead of failing the whole claim with 22003, and a step that does not
// exist is answered claimed = false, not NULL, next to a claimed step; the
// batch's good step is claimed.
func TestClaimAnswersEveryStepOfABatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const ns = "claim_range"
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(rolesTemplate(ns, "range", "1.0.0"))
	first := func() uuid.UUID {
		task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "range"})
		return scalar[uuid.UUID](t, h.Pool, `SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = 'first'`, task.UUID)
	}
	bad, good, missing := first(), first(), uuid.New()

	rows, err := h.Pool.Query(ctx, `SELECT step_uuid, claimed, reason FROM tasker.step_claim_batch($1::uuid[], $2::int[], 'w', 30)`,
		[]uuid.UUID{bad, good, missing}, []int32{math.MinInt32, 1, 1})
	if err != nil {
		t.Fatal(err)
	}
	got := map[uuid.UUID]string{}
	for rows.Next() {
		var id uuid.UUID
		var claimed *bool
		var reason string
		if err := rows.Scan(&id, &claimed, &reason); err != nil {
			t.Fatal(err)
		}
		switch {
		case claimed == nil:
			reason = "claimed is NULL"
		case *claimed:
			reason = "claimed"
		}
		got[id] = reason
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("a batch with attempt %d: %v", math.MinInt32, err)
	}
	if got[good] != "claimed" || got[bad] != "message is for attempt -2147483648 but the step has had 0" || got[missing] != "step not found" {
		t.Errorf("claims: good step %q, bad step %q, missing step %q", got[good], got[bad], got[missing])
	}
	for _, a := range []int32{math.MinInt32, math.MaxInt32, 0} {
		if claimed := scalar[bool](t, h.Pool, `SELECT claimed FROM tasker.step_claim($1, $2, 'w', 30)`, bad, a); claimed {
			t.Errorf("step_claim with attempt %d claimed a step that has had no attempt", a)
		}
	}
	if s := scalar[string](t, h.Pool, `SELECT state FROM tasker.workflow_steps WHERE step_uuid = $1`, bad); s != "enqueued" {
		t.Errorf("the step named with out-of-range attempts is %s, want enqueued", s)
	}
	checkProtocolUnchanged(t, h.Pool)
}
