package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// RetentionPolicy says what the retention sweep deletes (migration 00024).
// A zero duration keeps that kind of row forever.
type RetentionPolicy struct {
	// ArchiveAfter: messages archived (pgmq.a_<queue>) longer ago than this
	// are deleted, in the engine's queues only.
	ArchiveAfter time.Duration
	// HistoryAfter: for tasks finished longer ago than this, every
	// transition but the last one of the task and of each step is deleted.
	HistoryAfter time.Duration
	// TasksAfter: tasks finished longer ago than this are deleted with
	// their steps, transitions and DLQ entries, unless a DLQ entry of the
	// task is still open (pending or investigating).
	TasksAfter time.Duration
	// BatchSize bounds the rows (tasks, or messages per queue) one
	// transaction deletes. Default 1000.
	BatchSize int
}

// Enabled reports whether the policy deletes anything.
func (p RetentionPolicy) Enabled() bool {
	return p.ArchiveAfter > 0 || p.HistoryAfter > 0 || p.TasksAfter > 0
}

// DefaultRetentionBatch is RetentionPolicy.BatchSize when unset.
const DefaultRetentionBatch = 1000

// Kinds of rows the retention sweep deletes, as reported to PruneOptions.Progress
// and counted by tasker_retention_deleted_total{kind}.
const (
	PruneTasks            = "tasks"
	PruneTransitions      = "transitions"
	PruneArchivedMessages = "archived_messages"
)

// PruneResult counts what a sweep deleted (or, for a dry run, would delete).
type PruneResult struct {
	// Tasks deleted with everything that belongs to them.
	Tasks int64 `json:"tasks"`
	// HistoryTasks is how many finished tasks had their history pruned;
	// Transitions how many task and step transition rows that removed.
	HistoryTasks int64 `json:"history_tasks"`
	Transitions  int64 `json:"transitions"`
	// ArchivedMessages deleted from the engine queues' archives.
	ArchivedMessages int64 `json:"archived_messages"`
}

// PruneOptions are the knobs of one sweep.
type PruneOptions struct {
	// Progress, when set, is called after every batch with the kind of rows
	// the batch deleted, how many, and the sweep's totals so far.
	Progress func(kind string, n int64, total PruneResult)
	// Busy, when set, stops the sweep between batches (e.g. a daemon
	// shutting down); the next sweep goes on where this one stopped.
	Busy func() bool
}

// Prune runs the retention sweep until nothing older than the policy's
// cut-offs is left: finished tasks first (their history then needs no
// pruning), then the history of the tasks kept, then the queue archives.
// Each batch is its own transaction, so a sweep stopped by ctx or a crash
// keeps what it did and loses nothing. Cut-offs are taken from the
// database's clock.
func (s *Store) Prune(ctx context.Context, p RetentionPolicy, opts PruneOptions) (PruneResult, error) {
	var total PruneResult
	limit := p.BatchSize
	if limit <= 0 {
		limit = DefaultRetentionBatch
	}
	now, err := s.Now(ctx)
	if err != nil {
		return total, err
	}
	report := func(kind string, n int64) {
		if opts.Progress != nil && n > 0 {
			opts.Progress(kind, n, total)
		}
	}
	stop := func() bool { return ctx.Err() != nil || (opts.Busy != nil && opts.Busy()) }

	if p.TasksAfter > 0 {
		for !stop() {
			var n int64
			if err := s.pool.QueryRow(ctx, `SELECT tasker.delete_finished_tasks($1, $2)`,
				now.Add(-p.TasksAfter), limit).Scan(&n); err != nil {
				return total, fmt.Errorf("delete finished tasks: %w", err)
			}
			total.Tasks += n
			report(PruneTasks, n)
			if n < int64(limit) {
				break
			}
		}
	}
	if p.HistoryAfter > 0 {
		for !stop() {
			var tasks, tt, st int64
			if err := s.pool.QueryRow(ctx, `SELECT tasks, task_transitions, step_transitions FROM tasker.prune_task_history($1, $2)`,
				now.Add(-p.HistoryAfter), limit).Scan(&tasks, &tt, &st); err != nil {
				return total, fmt.Errorf("prune task history: %w", err)
			}
			total.HistoryTasks += tasks
			total.Transitions += tt + st
			report(PruneTransitions, tt+st)
			if tasks < int64(limit) {
				break
			}
		}
	}
	if p.ArchiveAfter > 0 {
		for !stop() {
			rows, err := s.pool.Query(ctx, `SELECT queue_name, deleted FROM tasker.prune_queue_archives($1, $2)`,
				now.Add(-p.ArchiveAfter), limit)
			if err != nil {
				return total, fmt.Errorf("prune queue archives: %w", err)
			}
			full := false
			var batch int64
			for rows.Next() {
				var q string
				var n int64
				if err := rows.Scan(&q, &n); err != nil {
					rows.Close()
					return total, fmt.Errorf("prune queue archives: %w", err)
				}
				batch += n
				full = full || n >= int64(limit)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return total, fmt.Errorf("prune queue archives: %w", err)
			}
			total.ArchivedMessages += batch
			report(PruneArchivedMessages, batch)
			if !full {
				break
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return total, err
	}
	return total, nil
}

// PruneEstimate counts what Prune would delete now, each kind on its own
// (rows of tasks that the task cut-off deletes are counted in the history
// figure too). It reads only.
func (s *Store) PruneEstimate(ctx context.Context, p RetentionPolicy) (PruneResult, error) {
	var r PruneResult
	now, err := s.Now(ctx)
	if err != nil {
		return r, err
	}
	if p.TasksAfter > 0 {
		if err := s.pool.QueryRow(ctx, `
SELECT count(*) FROM tasker.tasks t
 WHERE t.completed_at IS NOT NULL AND t.completed_at < $1
   AND NOT EXISTS (SELECT 1 FROM tasker.dlq_entries d
                    WHERE d.task_uuid = t.task_uuid AND d.resolution_status IN ('pending', 'investigating'))`,
			now.Add(-p.TasksAfter)).Scan(&r.Tasks); err != nil {
			return r, fmt.Errorf("count finished tasks: %w", err)
		}
	}
	if p.HistoryAfter > 0 {
		if err := s.pool.QueryRow(ctx, `
WITH c AS (
    SELECT coalesce((SELECT completed_at FROM tasker.retention_cursor WHERE name = 'history'), '-infinity') AS at,
           coalesce((SELECT task_uuid FROM tasker.retention_cursor WHERE name = 'history'),
                    '00000000-0000-0000-0000-000000000000') AS id
), t AS (
    SELECT t.task_uuid FROM tasker.tasks t, c
     WHERE t.completed_at IS NOT NULL AND t.completed_at < $1 AND (t.completed_at, t.task_uuid) > (c.at, c.id)
)
SELECT (SELECT count(*) FROM t),
       (SELECT count(*) FROM tasker.task_transitions tt JOIN t USING (task_uuid) WHERE NOT tt.most_recent)
     + (SELECT count(*) FROM tasker.workflow_step_transitions st
          JOIN tasker.workflow_steps ws ON ws.step_uuid = st.step_uuid
          JOIN t ON t.task_uuid = ws.task_uuid
         WHERE NOT st.most_recent)`,
			now.Add(-p.HistoryAfter)).Scan(&r.HistoryTasks, &r.Transitions); err != nil {
			return r, fmt.Errorf("count prunable history: %w", err)
		}
	}
	if p.ArchiveAfter > 0 {
		var queues []string
		rows, err := s.pool.Query(ctx, `SELECT q FROM tasker.engine_queues() AS q
 WHERE to_regclass(format('pgmq.%I', 'a_' || q)) IS NOT NULL ORDER BY q`)
		if err != nil {
			return r, fmt.Errorf("list engine queues: %w", err)
		}
		queues, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return r, fmt.Errorf("list engine queues: %w", err)
		}
		for _, q := range queues {
			var n int64
			sql := `SELECT count(*) FROM ` + pgx.Identifier{"pgmq", "a_" + q}.Sanitize() + ` WHERE archived_at < $1`
			if err := s.pool.QueryRow(ctx, sql, now.Add(-p.ArchiveAfter)).Scan(&n); err != nil {
				return r, fmt.Errorf("count archived messages of %s: %w", q, err)
			}
			r.ArchivedMessages += n
		}
	}
	return r, nil
}
