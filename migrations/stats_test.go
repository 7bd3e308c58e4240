package migrations_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"

	"github.com/tasker/tasker/internal/testdb"
	"github.com/tasker/tasker/migrations"
)

// sessionStat reads the session's statistics counter
// pg_stat_get_xact_<counter> for relation rel. The counters are the ones
// the session has not reported yet, which may include earlier transactions
// and are reset when reported (only ever between transactions): read one
// twice inside a transaction and take the difference.
func sessionStat(t *testing.T, tx pgx.Tx, counter, rel string) int64 {
	t.Helper()
	var n int64
	if err := tx.QueryRow(context.Background(), `SELECT pg_stat_get_xact_`+counter+`($1::regclass)`, rel).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// migrationProvider is the goose provider of the schema's migrations on
// dbURL, for tests that take migrations down and up again.
func migrationProvider(t *testing.T, dbURL string) *goose.Provider {
	t.Helper()
	sqlDB, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	p, err := migrations.NewProvider(sqlDB, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// migratingDB is a migrated database for a test that moves its migrations
// down and up: a pool on it and its goose provider.
func migratingDB(t *testing.T) (*pgxpool.Pool, *goose.Provider) {
	t.Helper()
	dbURL := testdb.URL(t)
	db, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db, migrationProvider(t, dbURL)
}

// downAndUpAgain checks a migration's Down and Up: a database migrated to
// the latest version reads (through read) differently from a reference
// database migrated to version only; check, when not nil, looks at both
// readings; down to version it reads as the reference, and up again as it
// did. The protocol functions' results are unchanged at the end.
func downAndUpAgain(t *testing.T, version int64, read func(*pgxpool.Pool) []string, check func(up, atVersion []string)) {
	t.Helper()
	ctx := context.Background()
	db, p := migratingDB(t)
	refURL := testdb.EmptyURL(t)
	if _, err := migrationProvider(t, refURL).UpTo(ctx, version); err != nil {
		t.Fatalf("reference database up to %d: %v", version, err)
	}
	atVersion := read(testdb.Pool(t, refURL))
	up := read(db)
	if fmt.Sprint(up) == fmt.Sprint(atVersion) {
		t.Fatalf("after up, as migrated to %d:\n%s", version, strings.Join(up, "\n"))
	}
	if check != nil {
		check(up, atVersion)
	}
	if _, err := p.DownTo(ctx, version); err != nil {
		t.Fatalf("down to %d: %v", version, err)
	}
	if got := read(db); fmt.Sprint(got) != fmt.Sprint(atVersion) {
		t.Errorf("after down:\n%s\nwant, as migrated to %d:\n%s", strings.Join(got, "\n"), version, strings.Join(atVersion, "\n"))
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if got := read(db); fmt.Sprint(got) != fmt.Sprint(up) {
		t.Errorf("after up again:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(up, "\n"))
	}
	checkProtocolUnchanged(t, db)
}

// countOf runs a query returning one count.
func countOf(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// stepNamed is the step of task called name.
func stepNamed(t *testing.T, pool *pgxpool.Pool, task uuid.UUID, name string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	if err := pool.QueryRow(context.Background(), `SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 AND name = $2`,
		task, name).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}
