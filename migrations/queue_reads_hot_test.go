package migrations_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/testdb"
)

const hotNS = "rq_hot"

// engineQueues are the queues 00020 tunes: the orchestration queues and a
// namespace's worker and domain event queues.
var engineQueues = []string{
	"orchestration_task_requests", "orchestration_step_results",
	"worker_" + hotNS + "_queue", "domain_events_" + hotNS,
}

// queueTuning reports whether queue's table has an index on vt and its
// fillfactor (0 when unset).
func queueTuning(t *testing.T, db *pgxpool.Pool, queue string) (vtIndex bool, fillfactor int) {
	t.Helper()
	if err := db.QueryRow(context.Background(), `
		SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = 'pgmq' AND tablename = 'q_' || $1
		                  AND indexdef LIKE '%(vt%'),
		       coalesce((SELECT split_part(o, '=', 2)::int FROM pg_class c, unnest(c.reloptions) o
		                  WHERE c.oid = format('pgmq.%I', 'q_' || $1)::regclass AND o LIKE 'fillfactor=%'), 0)`,
		queue).Scan(&vtIndex, &fillfactor); err != nil {
		t.Fatalf("tuning of %s: %v", queue, err)
	}
	return vtIndex, fillfactor
}

// TestEngineQueuesReadWithHOTUpdates (00020): the engine's queues have no
// index on vt and room on their pages, so that hiding a message (a read,
// set_vt) rewrites its row in place, and they keep pgmq's visibility
// semantics without the index.
func TestEngineQueuesReadWithHOTUpdates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t)
	provision(t, db, hotNS)

	for _, q := range engineQueues {
		t.Run(q, func(t *testing.T) {
			if vt, ff := queueTuning(t, db, q); vt || ff != 50 {
				t.Errorf("index on vt %v (want false), fillfactor %d (want 50)", vt, ff)
			}
			tx, err := db.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			table := "pgmq.q_" + q
			hot := func() int64 { return sessionStat(t, tx, "tuples_hot_updated", table) }
			updated := func() int64 { return sessionStat(t, tx, "tuples_updated", table) }
			read := func() (ids []int64, readCt []int) {
				t.Helper()
				rows, err := tx.Query(ctx, `SELECT msg_id, read_ct FROM pgmq.read($1, 30, 10)`, q)
				if err != nil {
					t.Fatal(err)
				}
				defer rows.Close()
				for rows.Next() {
					var id int64
					var n int
					if err := rows.Scan(&id, &n); err != nil {
						t.Fatal(err)
					}
					ids, readCt = append(ids, id), append(readCt, n)
				}
				if err := rows.Err(); err != nil {
					t.Fatal(err)
				}
				return ids, readCt
			}

			var id int64
			if err := tx.QueryRow(ctx, `SELECT * FROM pgmq.send($1, '{"k": 1}'::jsonb)`, q).Scan(&id); err != nil {
				t.Fatal(err)
			}
			hot0, upd0 := hot(), updated()
			if ids, n := read(); len(ids) != 1 || ids[0] != id || n[0] != 1 {
				t.Fatalf("first read: messages %v read_ct %v, want [%d] [1]", ids, n, id)
			}
			if ids, _ := read(); len(ids) != 0 {
				t.Fatalf("a read inside the visibility timeout returned %v, want nothing", ids)
			}
			if _, err := tx.Exec(ctx, `SELECT pgmq.set_vt($1, $2, 0)`, q, id); err != nil {
				t.Fatal(err)
			}
			if ids, n := read(); len(ids) != 1 || ids[0] != id || n[0] != 2 {
				t.Fatalf("read after set_vt 0: messages %v read_ct %v, want [%d] [2]", ids, n, id)
			}
			if upd, h := updated()-upd0, hot()-hot0; upd != 3 || h != 3 {
				t.Errorf("two reads and a set_vt: %d updates, %d of them HOT; want 3 and 3", upd, h)
			}
		})
	}
}

// Down puts pgmq's index and fillfactor back on the engine's queues, and Up
// again takes them away.
func TestQueueReadsHOTMigrationDownAndUpAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, p := migratingDB(t)
	ensureNamespace(t, db, hotNS)
	check := func(when string, wantIndex bool, wantFF int) {
		t.Helper()
		for _, q := range engineQueues {
			if vt, ff := queueTuning(t, db, q); vt != wantIndex || ff != wantFF {
				t.Errorf("%s: %s has an index on vt %v, fillfactor %d; want %v, %d", when, q, vt, ff, wantIndex, wantFF)
			}
		}
	}
	if _, err := p.DownTo(ctx, 19); err != nil {
		t.Fatalf("down to 19: %v", err)
	}
	check("after down", true, 0)
	// Provisioned while 00020 is down: untuned until Up.
	ensureNamespace(t, db, "rq_hot_down")
	if vt, ff := queueTuning(t, db, "worker_rq_hot_down_queue"); !vt || ff != 0 {
		t.Errorf("provisioned after down: index on vt %v, fillfactor %d; want pgmq's (true, 0)", vt, ff)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	check("after up", false, 50)
	for _, q := range []string{"worker_rq_hot_down_queue", "domain_events_rq_hot_down"} {
		if vt, ff := queueTuning(t, db, q); vt || ff != 50 {
			t.Errorf("after up: %s has an index on vt %v, fillfactor %d; want false, 50", q, vt, ff)
		}
	}
}
