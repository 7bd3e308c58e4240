package migrations_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/testdb"
)

// payloadColumns are the columns 00023 leaves out of ANALYZE outside the
// queues; keptColumns keep their statistics (a control, so that a blanket
// SET STATISTICS 0 would fail the test).
var (
	payloadColumns = []string{
		"tasker.tasks.context",
		"tasker.workflow_steps.inputs", "tasker.workflow_steps.results", "tasker.workflow_steps.last_error",
		"tasker.task_transitions.metadata", "tasker.workflow_step_transitions.metadata",
		"tasker.dlq_entries.snapshot",
	}
	keptColumns = []string{
		"tasker.tasks.state", "tasker.tasks.namespace", "tasker.tasks.tags",
		"tasker.workflow_steps.state", "tasker.task_transitions.to_state",
		"tasker.task_templates.definition",
	}
)

const statsNS = "rq_stats"

// statisticsTarget is a column's attstattarget: -1 is the default, 0 leaves
// it out of ANALYZE. column is schema.table.column.
func statisticsTarget(t *testing.T, db *pgxpool.Pool, column string) int {
	t.Helper()
	var target int
	if err := db.QueryRow(context.Background(), `
		SELECT coalesce(a.attstattarget::int, -1)
		  FROM pg_attribute a
		 WHERE a.attrelid = to_regclass(split_part($1, '.', 1) || '.' || split_part($1, '.', 2))
		   AND a.attname = split_part($1, '.', 3) AND NOT a.attisdropped`, column).Scan(&target); err != nil {
		t.Fatalf("statistics target of %s: %v", column, err)
	}
	return target
}

// queuePayload lists the message and headers columns of the queues of the
// orchestration and of the given namespaces.
func queuePayload(namespaces ...string) []string {
	queues := []string{"orchestration_task_requests", "orchestration_step_results"}
	for _, ns := range namespaces {
		queues = append(queues, "worker_"+ns+"_queue", "domain_events_"+ns)
	}
	var cols []string
	for _, q := range queues {
		cols = append(cols, fmt.Sprintf("pgmq.q_%s.message", q), fmt.Sprintf("pgmq.q_%s.headers", q))
	}
	return cols
}

// TestPayloadColumnsWithoutStatistics (00023): the JSON payload columns of
// the engine's tables and queues have no statistics target, so ANALYZE
// leaves them out; the other columns keep theirs.
func TestPayloadColumnsWithoutStatistics(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t)
	provision(t, db, statsNS)

	for _, c := range append(payloadColumns, queuePayload(statsNS)...) {
		if got := statisticsTarget(t, db, c); got != 0 {
			t.Errorf("%s: statistics target %d, want 0", c, got)
		}
	}
	for _, c := range keptColumns {
		if got := statisticsTarget(t, db, c); got != -1 {
			t.Errorf("%s: statistics target %d, want the default (-1)", c, got)
		}
	}

	// What ANALYZE then does: a domain event queue holding messages gets
	// statistics for msg_id and vt, none for message and headers.
	q := "domain_events_" + statsNS
	if _, err := db.Exec(ctx, `SELECT pgmq.send_batch($1, ARRAY(SELECT jsonb_build_object('event_type', 'StepCompleted', 'n', g) FROM generate_series(1, 200) g))`, q); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `ANALYZE pgmq.q_`+q); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(ctx, `SELECT attname FROM pg_stats WHERE schemaname = 'pgmq' AND tablename = 'q_' || $1 ORDER BY attname`, q)
	if err != nil {
		t.Fatal(err)
	}
	var analyzed []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		analyzed = append(analyzed, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(analyzed) != "[enqueued_at msg_id read_ct vt]" {
		t.Errorf("ANALYZE of %s made statistics for %v, want [enqueued_at msg_id read_ct vt]", q, analyzed)
	}
}

// Down gives the payload columns their default statistics target back, and
// Up takes it away again, from queues provisioned in between too.
func TestPayloadStatisticsMigrationDownAndUpAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, p := migratingDB(t)
	ensureNamespace(t, db, statsNS)
	check := func(when string, cols []string, want int) {
		t.Helper()
		for _, c := range cols {
			if got := statisticsTarget(t, db, c); got != want {
				t.Errorf("%s: %s has statistics target %d, want %d", when, c, got, want)
			}
		}
	}
	if _, err := p.DownTo(ctx, 22); err != nil {
		t.Fatalf("down to 22: %v", err)
	}
	check("after down", append(payloadColumns, queuePayload(statsNS)...), -1)
	// Provisioned while 00023 is down: 00020's tuning, pgmq's statistics.
	ensureNamespace(t, db, "rq_stats_down")
	check("provisioned after down", queuePayload("rq_stats_down")[4:], -1)
	if vt, ff := queueTuning(t, db, "worker_rq_stats_down_queue"); vt || ff != 50 {
		t.Errorf("provisioned after down: index on vt %v, fillfactor %d; want 00020's (false, 50)", vt, ff)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	check("after up", append(payloadColumns, queuePayload(statsNS, "rq_stats_down")...), 0)
	check("after up", keptColumns, -1)
}
