package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// BrowsedMessage is a message seen by Browse: in the queue, or moved to its
// archive.
type BrowsedMessage struct {
	Message
	// Archived is true for a message in the archive; ArchivedAt says since
	// when.
	Archived   bool
	ArchivedAt *time.Time
}

// browseTables returns the sanitized names of a queue's table and archive
// table (pgmq.q_<name>, pgmq.a_<name>) after validating the name, so that no
// SQL is ever built from an unchecked name.
func browseTables(name string) (q, a string, err error) {
	if err := ValidateQueueName(name); err != nil {
		return "", "", err
	}
	return pgx.Identifier{"pgmq", "q_" + name}.Sanitize(), pgx.Identifier{"pgmq", "a_" + name}.Sanitize(), nil
}

// browseColumns are the columns a browse returns from either table: the
// queue table has no archived_at.
const (
	browseQueueColumns   = `msg_id, read_ct, enqueued_at, vt, message, headers, false, NULL::timestamptz`
	browseArchiveColumns = `msg_id, read_ct, enqueued_at, vt, message, headers, true, archived_at`
)

// Browse returns up to limit messages of a queue and of its archive whose
// msg_id is above after, in msg_id order, without reading them in the PGMQ
// sense: nothing is hidden, counted or removed, so it can watch a queue that
// consumers are reading. A message sent by a transaction that has not
// committed yet can show up later with a lower msg_id than one already seen
// (ids are taken at insert, not at commit): BrowseIDs looks for such gaps
// again.
func Browse(ctx context.Context, db DB, name string, after int64, limit int) ([]BrowsedMessage, error) {
	q, a, err := browseTables(name)
	if err != nil {
		return nil, fmt.Errorf("browse %s: %w", name, err)
	}
	if limit < 1 {
		return nil, fmt.Errorf("browse %s: limit %d out of range", name, limit)
	}
	// Each side is limited first so that the union reads at most 2*limit
	// rows through the primary keys.
	rows, err := db.Query(ctx, `
		(SELECT `+browseQueueColumns+` FROM `+q+` WHERE msg_id > $1 ORDER BY msg_id LIMIT $2)
		UNION ALL
		(SELECT `+browseArchiveColumns+` FROM `+a+` WHERE msg_id > $1 ORDER BY msg_id LIMIT $2)
		ORDER BY 1 LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("browse %s: %w", name, err)
	}
	msgs, err := pgx.CollectRows(rows, scanBrowsed)
	if err != nil {
		return nil, fmt.Errorf("browse %s: %w", name, err)
	}
	return msgs, nil
}

// BrowseIDs returns the messages with the given ids that are in the queue or
// its archive, in msg_id order, without reading them in the PGMQ sense.
func BrowseIDs(ctx context.Context, db DB, name string, ids []int64) ([]BrowsedMessage, error) {
	q, a, err := browseTables(name)
	if err != nil {
		return nil, fmt.Errorf("browse %s: %w", name, err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := db.Query(ctx, `
		SELECT `+browseQueueColumns+` FROM `+q+` WHERE msg_id = ANY ($1)
		UNION ALL
		SELECT `+browseArchiveColumns+` FROM `+a+` WHERE msg_id = ANY ($1)
		ORDER BY 1`, ids)
	if err != nil {
		return nil, fmt.Errorf("browse %s: %w", name, err)
	}
	msgs, err := pgx.CollectRows(rows, scanBrowsed)
	if err != nil {
		return nil, fmt.Errorf("browse %s: %w", name, err)
	}
	return msgs, nil
}

// BrowseHead returns the highest msg_id in a queue and its archive, or 0
// when both are empty: where to start browsing for messages sent from now
// on.
func BrowseHead(ctx context.Context, db DB, name string) (int64, error) {
	q, a, err := browseTables(name)
	if err != nil {
		return 0, fmt.Errorf("browse head of %s: %w", name, err)
	}
	var head int64
	err = db.QueryRow(ctx, `SELECT greatest(
		coalesce((SELECT max(msg_id) FROM `+q+`), 0),
		coalesce((SELECT max(msg_id) FROM `+a+`), 0))`).Scan(&head)
	if err != nil {
		return 0, fmt.Errorf("browse head of %s: %w", name, err)
	}
	return head, nil
}

func scanBrowsed(row pgx.CollectableRow) (BrowsedMessage, error) {
	var m BrowsedMessage
	var body, headers []byte
	if err := row.Scan(&m.ID, &m.ReadCount, &m.EnqueuedAt, &m.VisibleAt, &body, &headers, &m.Archived, &m.ArchivedAt); err != nil {
		return BrowsedMessage{}, err
	}
	m.Body = body
	m.Headers = decodeHeaders(headers)
	return m, nil
}
