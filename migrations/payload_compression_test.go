package migrations_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tasker/tasker/internal/testdb"
)

// compressedColumns are the columns 00036 compresses with lz4 outside the
// queues.
var compressedColumns = []string{
	"tasker.tasks.context",
	"tasker.workflow_steps.inputs", "tasker.workflow_steps.results", "tasker.workflow_steps.last_error",
	"tasker.dlq_entries.snapshot",
}

const lz4NS = "rq_lz4"

// compression is a column's attcompression: "l" for lz4, "p" for pglz, ""
// for the server's default_toast_compression. column is schema.table.column.
func compression(t *testing.T, db *pgxpool.Pool, column string) string {
	t.Helper()
	var c string
	if err := db.QueryRow(context.Background(), `
		SELECT a.attcompression::text
		  FROM pg_attribute a
		 WHERE a.attrelid = to_regclass(split_part($1, '.', 1) || '.' || split_part($1, '.', 2))
		   AND a.attname = split_part($1, '.', 3) AND NOT a.attisdropped`, column).Scan(&c); err != nil {
		t.Fatalf("compression of %s: %v", column, err)
	}
	return c
}

// lz4Compression is the attcompression 00036 gives the payload columns on
// db's server: "l" (lz4) where the server has lz4, else "" (the server's
// default, pglz: the migration changes nothing there). The tests check
// whichever applies instead of skipping.
func lz4Compression(t *testing.T, db *pgxpool.Pool) string {
	t.Helper()
	if scalar[bool](t, db, `SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'`) {
		return "l"
	}
	t.Log("this Postgres is built without lz4: checking that 00036 leaves the columns as they were")
	return ""
}

// TestPayloadColumnsCompressWithLZ4 (00036): the engine's large JSON columns
// and every queue's message and headers, including those of a namespace
// provisioned later, are compressed with lz4, and a large value stored in
// them is; the server's default stays pglz, and other columns keep it.
func TestPayloadColumnsCompressWithLZ4(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t)
	want := lz4Compression(t, db)
	provision(t, db, lz4NS)
	for _, c := range append(compressedColumns, queuePayload(lz4NS)...) {
		if got := compression(t, db, c); got != want {
			t.Errorf("%s: compression %q, want %q", c, got, want)
		}
	}
	for _, c := range []string{"tasker.task_templates.definition", "tasker.task_transitions.metadata"} {
		if got := compression(t, db, c); got != "" {
			t.Errorf("%s: compression %q, want the server's default", c, got)
		}
	}
	if got := scalar[string](t, db, `SHOW default_toast_compression`); got != "pglz" {
		t.Fatalf("fixture: default_toast_compression %q, want pglz (the test would prove nothing)", got)
	}
	// A large, compressible domain event is stored compressed with lz4.
	q := "domain_events_" + lz4NS
	big := `{"pad": "` + strings.Repeat("abc", 8<<10) + `"}`
	if _, err := db.Exec(ctx, `SELECT pgmq.send($1, $2::jsonb)`, q, big); err != nil {
		t.Fatal(err)
	}
	stored := map[string]string{"l": "lz4", "": "pglz"}[want]
	if got := scalar[string](t, db, `SELECT coalesce(pg_column_compression(message), 'none') FROM pgmq.q_`+q); got != stored {
		t.Errorf("a %d-byte message is stored with compression %s, want %s", len(big), got, stored)
	}
}

// Down puts the server's default back, and Up sets lz4 again, on queues
// provisioned in between too.
func TestPayloadCompressionMigrationDownAndUpAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, p := migratingDB(t)
	want := lz4Compression(t, db)
	ensureNamespace(t, db, lz4NS)
	check := func(when string, cols []string, want string) {
		t.Helper()
		for _, c := range cols {
			if got := compression(t, db, c); got != want {
				t.Errorf("%s: %s has compression %q, want %q", when, c, got, want)
			}
		}
	}
	check("migrated", append(compressedColumns, queuePayload(lz4NS)...), want)
	if _, err := p.DownTo(ctx, 35); err != nil {
		t.Fatalf("down to 35: %v", err)
	}
	check("after down", append(compressedColumns, queuePayload(lz4NS)...), "")
	// Provisioned while 00036 is down: 00023's tuning, without lz4.
	ensureNamespace(t, db, "rq_lz4_down")
	check("provisioned after down", queuePayload("rq_lz4_down")[4:], "")
	if got := statisticsTarget(t, db, "pgmq.q_domain_events_rq_lz4_down.message"); got != 0 {
		t.Errorf("provisioned after down: message statistics target %d, want 00023's 0", got)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	check("after up", append(compressedColumns, queuePayload(lz4NS, "rq_lz4_down")...), want)
}
