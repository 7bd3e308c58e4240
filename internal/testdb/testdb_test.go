package testdb_test

import (
	"context"
	"testing"

	"github.com/tasker/tasker/internal/testdb"
)

func TestNewDatabaseIsMigratedAndIsolated(t *testing.T) {
	t.Parallel()
	a := testdb.New(t)
	b := testdb.New(t)
	ctx := context.Background()
	var nameA, nameB string
	if err := a.QueryRow(ctx, `SELECT current_database()`).Scan(&nameA); err != nil {
		t.Fatal(err)
	}
	if err := b.QueryRow(ctx, `SELECT current_database()`).Scan(&nameB); err != nil {
		t.Fatal(err)
	}
	if nameA == nameB {
		t.Fatalf("two tests share database %s", nameA)
	}
	for _, schema := range []string{"tasker", "pgmq"} {
		var ok bool
		if err := a.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Errorf("schema %s missing after migration", schema)
		}
	}
}
