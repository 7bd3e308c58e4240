package store_test

import (
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tasker/tasker/internal/store"
)

// The timers find what is due by a range of their index, not by reading
// every waiting task or every lease: with 3,000 tasks waiting for a retry
// an hour away and 3,000 steps whose leases run for an hour, the due tasks
// and the expired leases are found reading a handful of index entries and
// no table whole.
func TestTimersReadOnlyWhatIsDue(t *testing.T) {
	t.Parallel()
	f := newCreateFixture(t)
	var seed store.Task
	if err := f.st.InTxDeferred(f.ctx, func(tx store.Tx) error {
		var err error
		seed, _, _, err = f.st.TaskCreateTx(f.ctx, tx, f.newTask("seed"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Copies of the task waiting an hour, two of them due; steps of no
	// task (workflow_steps has no foreign key since 00033) in progress with
	// a lease of an hour, two of them expired.
	if _, err := f.pool.Exec(f.ctx, `
		INSERT INTO tasker.tasks
		SELECT (jsonb_populate_record(NULL::tasker.tasks, to_jsonb(t) || jsonb_build_object(
		            'task_uuid', gen_random_uuid(), 'identity_hash', 'copy-' || i,
		            'wake_at', now() + CASE WHEN i <= 2 THEN interval '-1 minute' ELSE interval '1 hour' END))).*
		  FROM tasker.tasks t, generate_series(1, 3000) i
		 WHERE t.task_uuid = $1`, seed.UUID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(f.ctx, `
		INSERT INTO tasker.workflow_steps (step_uuid, task_uuid, name, handler, position, state, max_attempts,
		                                   backoff_base_ms, backoff_cap_ms, timeout_seconds, claimed_by, lease_expires_at)
		SELECT gen_random_uuid(), CASE WHEN i <= 2 THEN ('00000000-0000-0000-0000-00000000000' || i)::uuid ELSE gen_random_uuid() END,
		       'leased', 'x.leased', 0, 'in_progress', 3, 100, 1000, 60, 'w',
		       now() + CASE WHEN i <= 2 THEN interval '-1 minute' ELSE interval '1 hour' END
		  FROM generate_series(1, 3000) i;
		ANALYZE tasker.tasks, tasker.workflow_steps`); err != nil {
		t.Fatal(err)
	}

	err := f.st.InTx(f.ctx, func(tx store.Tx) error {
		stat := func(fn, rel string) int64 {
			var n int64
			if err := store.QueryRowTx(f.ctx, tx, `SELECT pg_stat_get_xact_`+fn+`($1::regclass)`, rel).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		counters := func() [4]int64 {
			return [4]int64{
				stat("numscans", "tasker.tasks"), stat("tuples_fetched", "tasker.tasks_wake_idx"),
				stat("numscans", "tasker.workflow_steps"), stat("tuples_fetched", "tasker.workflow_steps_lease_idx"),
			}
		}
		// numscans of a table counts its sequential scans; tuples_fetched
		// of an index, the entries read from it.
		before := counters()
		due, err := f.st.TasksDueTx(f.ctx, tx, 50)
		if err != nil {
			return err
		}
		rows, err := store.QueryTx(f.ctx, tx, store.ExpiredLeasesSQL, 50)
		if err != nil {
			return err
		}
		expired, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			return err
		}
		after := counters()
		if len(due) != 2 || len(expired) != 2 {
			t.Errorf("%d due tasks and %d tasks with expired leases; want 2 and 2", len(due), len(expired))
		}
		for i, what := range []string{"sequential scans of tasks", "entries of tasks_wake_idx read",
			"sequential scans of workflow_steps", "entries of workflow_steps_lease_idx read"} {
			if n := after[i] - before[i]; n > 10 {
				t.Errorf("the timers' queries made %d %s; want what is due found by a range of the index", n, what)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
