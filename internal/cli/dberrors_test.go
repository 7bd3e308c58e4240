package cli

import (
	"strings"
	"testing"

	"github.com/tasker/tasker/internal/testdb"
)

// TestDatabaseErrorsSayWhatToDo: against a database that is not migrated,
// prune and events tail say to run `orchestrator migrate`; against one
// that cannot be reached, events tail says so instead of blaming the
// namespace; only a queue that is really missing gets that message. Not
// parallel: DATABASE_URL.
func TestDatabaseErrorsSayWhatToDo(t *testing.T) {
	// testdb reads DATABASE_URL: make the databases first.
	empty, migrated := testdb.EmptyURL(t), testdb.URL(t)
	t.Setenv("DATABASE_URL", empty)
	for _, args := range [][]string{
		{"prune", "--dry-run"},
		{"prune", "--archives", "2h"},
		{"events", "tail", "-n", "ecommerce", "--no-follow"},
	} {
		_, errOut, code := run(t, args...)
		if code != 1 || !strings.Contains(errOut, "not migrated") || !strings.Contains(errOut, "orchestrator migrate") ||
			strings.Contains(errOut, "is a template") {
			t.Errorf("%v on an unmigrated database: exit %d: %s", args, code, errOut)
		}
	}
	t.Setenv("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
	for _, args := range [][]string{
		{"events", "tail", "-n", "ecommerce", "--no-follow"},
		{"prune", "--dry-run"},
	} {
		_, errOut, code := run(t, args...)
		if code != 1 || !strings.Contains(errOut, "cannot reach the database") || strings.Contains(errOut, "is a template") {
			t.Errorf("%v, database down: exit %d: %s", args, code, errOut)
		}
	}
	t.Setenv("DATABASE_URL", migrated)
	_, errOut, code := run(t, "events", "tail", "-n", "nosuchns", "--no-follow")
	if code != 1 || !strings.Contains(errOut, "namespace nosuchns has no domain event queue") {
		t.Errorf("events tail, unknown namespace: exit %d: %s", code, errOut)
	}
}
