package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DLQEntry is an investigation record for a task that could not finish.
type DLQEntry struct {
	ID               int64
	TaskUUID         uuid.UUID
	Namespace        string
	Reason           string
	Detail           string
	Snapshot         json.RawMessage
	ResolutionStatus string
	ResolutionNotes  string
	ResolvedBy       string
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// DLQ resolution statuses.
var DLQStatuses = []string{"pending", "investigating", "resolved", "ignored"}

const dlqColumns = `dlq_id, task_uuid, namespace, reason, detail, snapshot, resolution_status, resolution_notes, resolved_by, created_at, updated_at`

func scanDLQ(row pgx.Row) (DLQEntry, error) {
	var d DLQEntry
	err := row.Scan(&d.ID, &d.TaskUUID, &d.Namespace, &d.Reason, &d.Detail, &d.Snapshot, &d.ResolutionStatus,
		&d.ResolutionNotes, &d.ResolvedBy, &d.CreatedAt, &d.UpdatedAt)
	return d, err
}

// DLQCreateTx files an entry for a task, with a snapshot of the task and its
// steps. A task has at most one open entry; a second one is not created.
func (s *Store) DLQCreateTx(ctx context.Context, tx Tx, task uuid.UUID, reason, detail string) error {
	_, err := tx.tx.Exec(ctx, `
		INSERT INTO tasker.dlq_entries (task_uuid, namespace, reason, detail, snapshot)
		SELECT t.task_uuid, t.namespace, $2, $3,
		       jsonb_build_object('task_state', t.state, 'updated_at', greatest(t.updated_at, `+lastTransitionAt+`),
		           'steps', (SELECT coalesce(jsonb_agg(jsonb_build_object('name', s.name, 'state', s.state,
		                            'attempts', s.attempts, 'max_attempts', s.max_attempts,
		                            'updated_at', s.updated_at, 'last_error', s.last_error) ORDER BY s.position), '[]')
		                       FROM tasker.workflow_steps s WHERE s.task_uuid = t.task_uuid))
		  FROM tasker.tasks t WHERE t.task_uuid = $1
		ON CONFLICT (task_uuid) WHERE resolution_status IN ('pending', 'investigating') DO NOTHING`, task, reason, detail)
	if err != nil {
		return fmt.Errorf("file DLQ entry for task %s: %w", task, err)
	}
	return nil
}

// DLQList lists entries, newest first, optionally by status and namespace.
func (s *Store) DLQList(ctx context.Context, status, ns string, limit int) ([]DLQEntry, error) {
	if limit <= 0 {
		limit = 50
	}
	rows, err := s.pool.Query(ctx, `SELECT `+dlqColumns+` FROM tasker.dlq_entries
		 WHERE ($1 = '' OR resolution_status = $1) AND ($2 = '' OR namespace = $2)
		 ORDER BY created_at DESC, dlq_id DESC LIMIT $3`, status, ns, limit)
	if err != nil {
		return nil, fmt.Errorf("list DLQ: %w", err)
	}
	defer rows.Close()
	var out []DLQEntry
	for rows.Next() {
		d, err := scanDLQ(rows)
		if err != nil {
			return nil, fmt.Errorf("list DLQ: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// DLQGet reads one entry.
func (s *Store) DLQGet(ctx context.Context, id int64) (DLQEntry, error) {
	d, err := scanDLQ(s.pool.QueryRow(ctx, `SELECT `+dlqColumns+` FROM tasker.dlq_entries WHERE dlq_id = $1`, id))
	if err != nil {
		return d, notFound(err, fmt.Sprintf("DLQ entry %d", id))
	}
	return d, nil
}

// DLQUpdate sets an entry's investigation status, and its notes and author
// where given: a nil notes or by leaves that column as it is (an empty
// string clears it), so a status change does not erase what an earlier
// update wrote.
func (s *Store) DLQUpdate(ctx context.Context, id int64, status string, notes, by *string) (DLQEntry, error) {
	d, err := scanDLQ(s.pool.QueryRow(ctx, `
		UPDATE tasker.dlq_entries
		   SET resolution_status = $2,
		       resolution_notes = coalesce($3, resolution_notes),
		       resolved_by = coalesce($4, resolved_by),
		       updated_at = now()
		 WHERE dlq_id = $1
		RETURNING `+dlqColumns, id, status, notes, by))
	if errors.Is(err, pgx.ErrNoRows) {
		return d, fmt.Errorf("DLQ entry %d: %w", id, ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "dlq_entries_open_task_idx" {
		// A task has one open entry at most; reopening an older one
		// while a newer one is open would make two.
		var open int64
		_ = s.pool.QueryRow(ctx, `
			SELECT o.dlq_id FROM tasker.dlq_entries d
			  JOIN tasker.dlq_entries o ON o.task_uuid = d.task_uuid AND o.resolution_status IN ('pending', 'investigating')
			 WHERE d.dlq_id = $1`, id).Scan(&open)
		return d, Conflict("DLQ entry %d cannot be set to %s: its task already has an open entry (%d), and a task has one open entry at most",
			id, status, open)
	}
	if err != nil {
		return d, fmt.Errorf("update DLQ entry %d: %w", id, err)
	}
	return d, nil
}

// DLQResolveOpenTx marks a task's open entries (pending, investigating)
// resolved by `by`, appending note on a line of its own to the notes they
// have. It returns how many it closed.
func (s *Store) DLQResolveOpenTx(ctx context.Context, tx Tx, task uuid.UUID, note, by string) (int64, error) {
	tag, err := tx.tx.Exec(ctx, `
		UPDATE tasker.dlq_entries
		   SET resolution_status = 'resolved',
		       resolution_notes = CASE WHEN resolution_notes = '' THEN $2 ELSE resolution_notes || E'\n' || $2 END,
		       resolved_by = $3,
		       updated_at = now()
		 WHERE task_uuid = $1 AND resolution_status IN ('pending', 'investigating')`, task, note, by)
	if err != nil {
		return 0, fmt.Errorf("resolve DLQ entries of task %s: %w", task, err)
	}
	return tag.RowsAffected(), nil
}

// StaleTasksTx locks up to limit tasks whose progress stopped: no transition
// and no step change or heartbeat for longer than their threshold (the
// template's stale_after_seconds, else defaultAfter). Tasks held in
// blocked_by_failures wait for an operator on purpose and are not stale.
func (s *Store) StaleTasksTx(ctx context.Context, tx Tx, defaultAfter time.Duration, limit int) ([]Task, error) {
	return tasksQuery(ctx, tx.tx, "stale tasks", `
		SELECT `+taskColumns+` FROM tasker.tasks t
		 WHERE t.state IN ('steps_in_process', 'waiting_for_dependencies', 'waiting_for_retry')
		   AND t.updated_at < clock_timestamp() - make_interval(secs => coalesce(nullif(t.stale_after_seconds, 0), $1))
		   -- The row's updated_at is as of its last write (migration 00038):
		   -- its most recent transition must be as old.
		   AND NOT EXISTS (
		       SELECT 1 FROM tasker.task_transitions tr
		        WHERE tr.task_uuid = t.task_uuid AND tr.most_recent
		          AND tr.created_at >= clock_timestamp() - make_interval(secs => coalesce(nullif(t.stale_after_seconds, 0), $1)))
		   AND NOT EXISTS (
		       SELECT 1 FROM tasker.workflow_steps s
		        WHERE s.task_uuid = t.task_uuid
		          AND s.updated_at >= clock_timestamp() - make_interval(secs => coalesce(nullif(t.stale_after_seconds, 0), $1)))
		 ORDER BY t.updated_at
		 LIMIT $2
		   FOR UPDATE OF t SKIP LOCKED`, defaultAfter.Seconds(), limit)
}
