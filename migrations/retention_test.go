package migrations_test

import (
	"context"
	"testing"
)

// Down removes the retention functions, table and indexes and gives the
// edges their foreign key to tasks back; Up brings the sweep back.
func TestRetentionMigrationDownAndUpAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, p := migratingDB(t)
	exists := func(sql string) bool {
		t.Helper()
		var ok bool
		if err := db.QueryRow(ctx, `SELECT `+sql).Scan(&ok); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return ok
	}
	check := func(when string, up bool) {
		t.Helper()
		for what, got := range map[string]bool{
			"tasks_completed_idx":          exists(`to_regclass('tasker.tasks_completed_idx') IS NOT NULL`),
			"dlq_entries_task_idx":         exists(`to_regclass('tasker.dlq_entries_task_idx') IS NOT NULL`),
			"retention_cursor":             exists(`to_regclass('tasker.retention_cursor') IS NOT NULL`),
			"delete_finished_tasks":        exists(`to_regprocedure('tasker.delete_finished_tasks(timestamptz, integer)') IS NOT NULL`),
			"prune_task_history":           exists(`to_regprocedure('tasker.prune_task_history(timestamptz, integer)') IS NOT NULL`),
			"prune_queue_archives":         exists(`to_regprocedure('tasker.prune_queue_archives(timestamptz, integer)') IS NOT NULL`),
			"no edge foreign key to tasks": !exists(`EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'workflow_step_edges_task_uuid_fkey')`),
			"engine_queues":                exists(`to_regprocedure('tasker.engine_queues()') IS NOT NULL`),
		} {
			if got != up {
				t.Errorf("%s: %s is %v, want %v", when, what, got, up)
			}
		}
	}
	check("up", true)
	if _, err := p.DownTo(ctx, 23); err != nil {
		t.Fatalf("down to 23: %v", err)
	}
	check("after down", false)
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	check("after up", true)
}
