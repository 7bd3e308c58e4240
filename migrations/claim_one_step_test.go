package migrations_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/enginetest"
	"github.com/tasker/tasker/internal/orchestration"
)

// TestClaimOfOneStepAnswersAsTheBatch (00031): a one-entry call of
// step_claim_batch runs a statement of its own; its answer equals, column
// for column, the row the batch statement gives the same entry (called with
// a second entry, for a step that does not exist, so that it runs), in
// every case: a claim, a stale attempt, a NULL attempt, a step in another
// state, a step that does not exist, and a step whose parent has a result.
// Each pair runs in transactions that are rolled back, from the same state.
// A claim made for good writes the same step row and transition rows
// either way.
func TestClaimOfOneStepAnswersAsTheBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const ns = "claim_one"
	h := enginetest.New(t, enginetest.Options{NoOrchestrator: true})
	h.Register(rolesTemplate(ns, "one", "1.0.0"))
	steps := func() (first, second uuid.UUID) {
		task := h.Submit(orchestration.TaskRequest{Namespace: ns, Name: "one"})
		first = scalar[uuid.UUID](t, h.Pool, `SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = 'first'`, task.UUID)
		second = scalar[uuid.UUID](t, h.Pool, `SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = 'second'`, task.UUID)
		return first, second
	}
	first, second := steps()
	// A second step made claimable behind a parent with a result, as the
	// orchestrator would leave them (set directly: no loops run here).
	pFirst, pSecond := steps()
	if _, err := h.Pool.Exec(ctx, `UPDATE tasker.workflow_steps SET state = 'complete', attempts = 1, results = '{"parent": 7}' WHERE step_uuid = $1`, pFirst); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Pool.Exec(ctx, `UPDATE tasker.workflow_steps SET state = 'enqueued' WHERE step_uuid = $1`, pSecond); err != nil {
		t.Fatal(err)
	}
	one := func(step uuid.UUID, attempt *int32) string {
		return answer(t, h, `SELECT to_jsonb(c)::text FROM tasker.step_claim_batch(ARRAY[$1::uuid], ARRAY[$2::int], 'w', 30) c`, step, attempt)
	}
	batch := func(step uuid.UUID, attempt *int32) string {
		return answer(t, h, `SELECT to_jsonb(c)::text FROM tasker.step_claim_batch(ARRAY[$1::uuid, gen_random_uuid()], ARRAY[$2::int, 1], 'w', 30) c LIMIT 1`, step, attempt)
	}
	att := func(a int32) *int32 { return &a }
	for _, c := range []struct {
		name    string
		step    uuid.UUID
		attempt *int32
		want    string // a part of the answer
	}{
		{"claim", first, att(1), `"claimed": true`},
		{"stale attempt", first, att(2), `but the step has had 0`},
		{"NULL attempt", first, nil, `"claimed": false`},
		{"step not enqueued", second, att(1), `"step is pending"`},
		{"no such step", uuid.New(), att(1), `"step not found"`},
		{"parent with a result", pSecond, att(1), `"dependency_results": {"first": {"parent": 7}}`},
	} {
		got, want := one(c.step, c.attempt), batch(c.step, c.attempt)
		if got != want {
			t.Errorf("%s: one entry answers\n  %s\nthe batch\n  %s", c.name, got, want)
		}
		if !strings.Contains(got, c.want) {
			t.Errorf("%s: answer %s lacks %s", c.name, got, c.want)
		}
	}

	// Claimed for good, one through each statement: the same rows.
	a, _ := steps()
	b, _ := steps()
	var claimedA, claimedB bool
	if err := h.Pool.QueryRow(ctx, `SELECT claimed FROM tasker.step_claim_batch(ARRAY[$1::uuid], ARRAY[1], 'w', 30)`, a).Scan(&claimedA); err != nil {
		t.Fatal(err)
	}
	if err := h.Pool.QueryRow(ctx, `SELECT claimed FROM tasker.step_claim_batch(ARRAY[$1::uuid, gen_random_uuid()], ARRAY[1, 1], 'w', 30) LIMIT 1`, b).Scan(&claimedB); err != nil {
		t.Fatal(err)
	}
	if !claimedA || !claimedB {
		t.Fatalf("claimed: one entry %v, batch %v", claimedA, claimedB)
	}
	rows := func(step uuid.UUID) string {
		return scalar[string](t, h.Pool, `
			SELECT jsonb_build_object(
			    'step', (SELECT jsonb_build_object('state', state, 'attempts', attempts, 'claimed_by', claimed_by,
			                                       'leased', lease_expires_at > now(), 'transition_count', transition_count)
			               FROM tasker.workflow_steps WHERE step_uuid = $1),
			    'transitions', (SELECT jsonb_agg(jsonb_build_object('from', from_state, 'to', to_state, 'sort_key', sort_key,
			                                                        'most_recent', most_recent, 'metadata', metadata) ORDER BY sort_key)
			                      FROM tasker.workflow_step_transitions WHERE step_uuid = $1))::text`, step)
	}
	if ra, rb := rows(a), rows(b); ra != rb {
		t.Errorf("a claim of one entry wrote\n  %s\nthe batch\n  %s", ra, rb)
	}
	checkProtocolUnchanged(t, h.Pool)
}

// answer runs a claim in a transaction that is rolled back, and returns its
// first row as JSON text.
func answer(t *testing.T, h *enginetest.Harness, sql string, step uuid.UUID, attempt *int32) string {
	t.Helper()
	ctx := context.Background()
	var out string
	err := pgx.BeginFunc(ctx, h.Pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, sql, step, attempt).Scan(&out); err != nil {
			return err
		}
		return errRollback
	})
	if err != errRollback {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

var errRollback = rollbackError{}

type rollbackError struct{}

func (rollbackError) Error() string { return "rolled back on purpose" }

// TestClaimOneStepMigrationDownAndUpAgain (00031): Down puts back exactly
// the claim of a database migrated to 00030, and Up again what it made.
func TestClaimOneStepMigrationDownAndUpAgain(t *testing.T) {
	t.Parallel()
	downAndUpAgain(t, 30, func(db *pgxpool.Pool) []string {
		return protocolFunctions(t, db, "step_claim_batch", "step_claim")
	}, nil)
}
